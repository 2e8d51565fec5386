//! Supervisors' wallboards and a Prometheus scraper, as a real centre runs them beside the
//! telephony platform: `--wallboards N` `StreamEvents` subscribers (half unfiltered, half filtered
//! to one queue), each reading every event it is sent, and `--scrape-interval-ms` reads of the
//! server's metrics endpoint, while the contacts flow.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use smista_proto::v1 as pb;

use super::connect::Pool;
use super::error::rpc;
use super::probe::server_usage;
use super::{LoadConfig, LoadError};

/// What the wallboards and the scraper did, and what they cost the server.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WallboardFigures {
    /// Subscribers opened.
    pub subscribers: u32,
    /// Of those, filtered to `queue` (the rest unfiltered).
    pub filtered: u32,
    /// The queue of the filtered half.
    pub queue: String,
    /// How late each accepts events (`max_delay_ms`).
    pub max_delay_ms: u32,
    /// Events the subscribers received, all together.
    pub events_received: u64,
    /// Streams that ended before the run did (an error or a lagging reader cut off).
    pub streams_ended_early: u64,
    /// Scrapes of the metrics endpoint made, and how many failed.
    pub scrapes: u64,
    /// Failed scrapes.
    pub scrape_failures: u64,
    /// The server's resident memory added by opening the subscribers, per subscriber, bytes
    /// (with `--server-metrics`; the streams idle, before traffic reaches them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_per_subscriber_bytes: Option<f64>,
}

/// Running wallboards and scraper; [`Wallboards::finish`] stops them and returns their figures.
#[derive(Debug)]
pub struct Wallboards {
    tasks: tokio::task::JoinSet<()>,
    figures: WallboardFigures,
    received: Arc<AtomicU64>,
    ended: Arc<AtomicU64>,
    scrapes: Arc<AtomicU64>,
    scrape_failures: Arc<AtomicU64>,
    running: Arc<AtomicBool>,
}

impl Wallboards {
    /// Opens `cfg.wallboards` subscribers through `pool` (spread over its connections) and, with
    /// `--scrape-interval-ms` and `--server-metrics`, starts the scraper. With `--server-metrics`
    /// the server's memory is read before and a second after the streams open.
    pub(crate) async fn start(cfg: &LoadConfig, pool: &Pool) -> Result<Wallboards, LoadError> {
        let queue = if cfg.wallboard_queue.is_empty() { cfg.queue.clone() } else { cfg.wallboard_queue.clone() };
        let n = cfg.wallboards;
        let filtered = n / 2;
        let rss_before = match &cfg.server_metrics {
            Some(url) => Some(server_usage(url).await?.1),
            None => None,
        };
        let mut w = Wallboards {
            tasks: tokio::task::JoinSet::new(),
            figures: WallboardFigures {
                subscribers: n,
                filtered,
                queue: queue.clone(),
                max_delay_ms: cfg.wallboard_delay_ms,
                ..WallboardFigures::default()
            },
            received: Arc::default(),
            ended: Arc::default(),
            scrapes: Arc::default(),
            scrape_failures: Arc::default(),
            running: Arc::new(AtomicBool::new(true)),
        };
        for i in 0..n {
            let queues = if i < filtered { vec![queue.clone()] } else { vec![] };
            let mut stream = pool
                .contacts()
                .stream_events(pb::StreamEventsRequest {
                    after_sequence: 0,
                    queues,
                    after_epoch: 0,
                    max_delay_ms: cfg.wallboard_delay_ms,
                })
                .await
                .map_err(rpc(format!("wallboard {i}")))?
                .into_inner();
            let (received, ended, running) = (w.received.clone(), w.ended.clone(), w.running.clone());
            w.tasks.spawn(async move {
                loop {
                    match stream.message().await {
                        Ok(Some(_)) => {
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            if running.load(Ordering::Relaxed) {
                                ended.fetch_add(1, Ordering::Relaxed);
                            }
                            return;
                        }
                    }
                }
            });
        }
        if let (Some(url), true) = (&cfg.server_metrics, cfg.scrape_interval_ms > 0) {
            let (url, every) = (url.clone(), Duration::from_millis(cfg.scrape_interval_ms));
            let (scrapes, failures) = (w.scrapes.clone(), w.scrape_failures.clone());
            w.tasks.spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    match server_usage(&url).await {
                        Ok(_) => scrapes.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failures.fetch_add(1, Ordering::Relaxed),
                    };
                }
            });
        }
        if let (Some(url), Some(before)) = (&cfg.server_metrics, rss_before) {
            // The gauges refresh about once a second.
            tokio::time::sleep(Duration::from_millis(1_100)).await;
            let after = server_usage(url).await?.1;
            w.figures.rss_per_subscriber_bytes = (n > 0).then(|| (after - before) / f64::from(n));
        }
        Ok(w)
    }

    /// Closes the streams, stops the scraper, and returns what they did.
    pub async fn finish(mut self) -> WallboardFigures {
        self.running.store(false, Ordering::Relaxed);
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        let mut f = self.figures;
        f.events_received = self.received.load(Ordering::Relaxed);
        f.streams_ended_early = self.ended.load(Ordering::Relaxed);
        f.scrapes = self.scrapes.load(Ordering::Relaxed);
        f.scrape_failures = self.scrape_failures.load(Ordering::Relaxed);
        f
    }
}

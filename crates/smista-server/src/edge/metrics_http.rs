//! The `/metrics` endpoint: a minimal HTTP/1 listener for Prometheus, with its own connection
//! caps and request deadline, that also folds histogram samples when nobody scrapes.

use crate::metrics::{connection_refused, connection_timed_out};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How often histogram samples are folded into their buckets when nobody scrapes.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The bounds on the metrics listener (`[limits] metrics_*`).
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// Open connections at most.
    pub max_connections: u32,
    /// Of those, from one remote address.
    pub max_per_address: u32,
    /// From accept to the end of the answer.
    pub request_timeout: std::time::Duration,
}

impl HttpLimits {
    /// From `[limits]`.
    #[must_use]
    pub fn of(l: &crate::config::limits::LimitsSection) -> HttpLimits {
        HttpLimits {
            max_connections: l.metrics_max_connections,
            max_per_address: l.metrics_max_connections_per_address,
            request_timeout: std::time::Duration::from_millis(l.metrics_request_timeout_ms),
        }
    }
}

/// Serves `GET /metrics` (Prometheus text format) until `shutdown` flips, and folds histogram
/// samples into their buckets every second: the recorder keeps every raw sample until
/// then, so without it a server nobody scrapes would grow by a few samples per RPC, forever.
/// Connections are capped in all and per address (over a cap: closed at once), each request is
/// read and answered within `limits.request_timeout` of its accept, and accept errors back off.
pub async fn serve_http(
    listener: TcpListener,
    handle: PrometheusHandle,
    limits: HttpLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut upkeep = tokio::time::interval(UPKEEP_EVERY);
    upkeep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let caps = crate::edge::transport::Caps::new(limits.max_connections, limits.max_per_address);
    let mut backoff = crate::edge::transport::AcceptBackoff::new("metrics");
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = upkeep.tick() => {
                handle.run_upkeep();
                continue;
            }
            _ = shutdown.changed() => return,
        };
        let (sock, remote) = match accepted {
            Ok(x) => {
                backoff.succeeded();
                x
            }
            Err(e) => {
                let wait = backoff.failed(&e);
                tokio::select! {
                    () = tokio::time::sleep(wait) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        let admitted = match caps.admit(remote.ip()) {
            Ok(a) => a,
            Err(why) => {
                connection_refused(match why {
                    crate::edge::transport::Refused::Total => "metrics_cap",
                    crate::edge::transport::Refused::PerAddress => "metrics_per_address",
                });
                drop(sock);
                continue;
            }
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            if tokio::time::timeout(limits.request_timeout, answer(sock, &handle)).await.is_err() {
                connection_timed_out("metrics");
            }
            drop(admitted);
        });
    }
}

/// Reads one request's head (at most 8 KiB) and answers it.
async fn answer(mut sock: tokio::net::TcpStream, handle: &PrometheusHandle) {
    let mut buf = vec![0u8; 8192];
    let mut n = 0;
    while n < buf.len() {
        match sock.read(&mut buf[n..]).await {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body) = if method == "GET" && (path == "/metrics" || path.starts_with("/metrics?")) {
        handle.run_upkeep();
        ("200 OK", "text/plain; version=0.0.4; charset=utf-8", handle.render())
    } else {
        ("404 Not Found", "text/plain; charset=utf-8", "not found: try /metrics\n".to_owned())
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = sock.write_all(resp.as_bytes()).await;
    let _ = sock.shutdown().await;
}

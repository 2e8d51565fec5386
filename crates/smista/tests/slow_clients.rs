//! Nothing one client sends stalls the server (issue 26): connections that never open (no TLS
//! handshake, or TLS and then no HTTP/2 preface) are reaped at the deadline from accept while a
//! legitimate client is served; one address cannot hold more than its cap; the metrics port is
//! capped, has a whole-request deadline and backs off when out of descriptors; open mode accepts
//! IPv4-mapped loopback and refuses metrics beyond loopback before saying it listens.
//!
//! Against the real binary, so its descriptors and CPU time are its own. The attacks come from
//! other loopback addresses (Linux routes all of 127/8 to `lo`), the legitimate client from
//! 127.0.0.1.

mod support;

use std::ffi::OsStr;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smista_client::connect::Credentials;
use smista_proto::v1 as pb;
use smista_proto::v1::admin_service_client::AdminServiceClient;
use support::Smista;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_rustls::rustls;
use tonic::transport::Channel;

/// How long after a socket's deadline it may still take the server, busy with the attack on a
/// loaded machine, to close it. Generous: what is checked is that it is closed at all.
const SLACK: Duration = Duration::from_secs(15);

/// Every call of the legitimate client must be answered within this.
const CALL_DEADLINE: Duration = Duration::from_secs(2);

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("smista-slow-{tag}-{}-{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// Writes `base` plus a `[limits]` section to a configuration file in `dir`.
fn config_file(dir: &Path, base: &str, limits: &str) -> PathBuf {
    let f = dir.join("smista.toml");
    std::fs::write(&f, format!("{base}\n[limits]\n{limits}\n")).expect("write config");
    f
}

/// Raises this test process's open-files limit (soft to hard) and returns how many attack
/// sockets it can afford, at most `want` (the rest of the process needs a few hundred).
fn affordable(want: usize) -> usize {
    let (_, limit) = smista_server::edge::transport::raise_fd_limit().unwrap_or((u64::MAX, u64::MAX));
    let n = usize::try_from(limit.saturating_sub(300)).unwrap_or(usize::MAX).min(want);
    if n < want {
        eprintln!("open-files hard limit {limit}: {n} attack sockets instead of {want}");
    }
    n
}

/// The `i`-th attacking address: 127.0.1.x, `per` sockets each.
fn attacker(i: usize, per: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 1, u8::try_from(1 + i / per).expect("few addresses"))
}

async fn connect_from(local: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(local.into(), 0))?;
    s.connect(to).await
}

/// Reads until the server closes the connection (end of stream or reset): how long after
/// `since` that was, or `None` if it still was not closed at `give_up`.
async fn closed_after<S: AsyncRead + Unpin>(mut s: S, since: Instant, give_up: Instant) -> Option<Duration> {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(give_up.into(), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(since.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// Whether the server answers an HTTP/2 preface with its SETTINGS: the connection is served.
async fn greets(mut s: TcpStream) -> bool {
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    if s.write_all(&hello).await.is_err() {
        return false;
    }
    let mut header = [0u8; 9];
    matches!(tokio::time::timeout(CALL_DEADLINE, s.read_exact(&mut header)).await, Ok(Ok(_))) && header[3] == 4
}

/// The address after `key=` in the start-up line.
fn logged_addr(smista: &Smista, key: &str) -> SocketAddr {
    let line = smista.startup.last().expect("start-up line");
    let rest = line.split(&format!("{key}=")).nth(1).expect("address logged");
    rest.split_whitespace().next().expect("address").parse().expect("socket address")
}

/// The process's CPU time (user + system) from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    let f: Vec<&str> = stat.rsplit_once(')').expect("stat").1.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    Duration::from_millis(ticks * 10)
}

/// What the legitimate client saw.
#[derive(Debug, Default)]
struct Served {
    calls: u32,
    fresh_connections: u32,
    slowest: Duration,
}

/// Calls GetSnapshot every 50 ms on `ch`, and once a second on a fresh connection, until `stop`;
/// panics on the first call not answered OK within [`CALL_DEADLINE`].
async fn keep_calling(
    ch: Channel,
    fresh: impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Channel> + Send>>,
    mut stop: watch::Receiver<bool>,
) -> Served {
    let mut seen = Served::default();
    let mut iv = tokio::time::interval(Duration::from_millis(50));
    let mut last_fresh = Instant::now();
    while !*stop.borrow() {
        tokio::select! {
            _ = iv.tick() => {}
            _ = stop.changed() => break,
        }
        let start = Instant::now();
        let ch = if last_fresh.elapsed() >= Duration::from_secs(1) {
            last_fresh = Instant::now();
            seen.fresh_connections += 1;
            tokio::time::timeout(CALL_DEADLINE, fresh()).await.expect("a fresh connection within the deadline")
        } else {
            ch.clone()
        };
        let r = tokio::time::timeout(
            CALL_DEADLINE.saturating_sub(start.elapsed()),
            AdminServiceClient::new(ch).get_snapshot(pb::GetSnapshotRequest {}),
        )
        .await;
        match r {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("call {} failed during the attack: {e:?}", seen.calls),
            Err(_) => panic!("call {} not answered within {CALL_DEADLINE:?} during the attack", seen.calls),
        }
        seen.calls += 1;
        seen.slowest = seen.slowest.max(start.elapsed());
    }
    seen
}

fn tls_connector(ca: &Path) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(ca).expect("ca") {
        roots.add(c.expect("cert")).expect("root");
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// 2,000 silent sockets on the TLS port, half never starting TLS and half completing it and then
/// never sending the HTTP/2 preface, are all closed by the server within the deadline (plus
/// slack), while a client calls GetSnapshot every 50 ms on its connection and once a second on a
/// fresh one, every call answered within 2 s. Without the preface deadline the second half is
/// never closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_tls_sockets_are_reaped_at_the_deadline_while_a_client_is_served() {
    let sockets = affordable(2_000);
    let deadline = Duration::from_millis(1_000);
    let d = dir("tls");
    let mut opts = smista_client::mint::Options::new(&d.join("creds"));
    opts.operators = vec!["op-101".into()];
    let m = smista_client::mint::mint(&opts, smista_server::config::DEMO).expect("mint");
    let base = std::fs::read_to_string(&m.config).expect("minted config");
    let cfg = config_file(
        &d,
        &base,
        &format!("handshake_timeout_ms = {}\nmax_connections_per_address = 64", deadline.as_millis()),
    );
    let data = d.join("data");
    let smista = Smista::start(&["--config".as_ref(), cfg.as_os_str(), "--data-dir".as_ref(), data.as_os_str()]);
    let grpc: SocketAddr = smista.grpc.parse().expect("grpc address");
    let creds = Credentials {
        ca: Some(m.ca.clone()),
        cert: Some(m.platform_cert.clone()),
        key: Some(m.platform_key.clone()),
        token_file: None,
        tls_domain: Some("localhost".into()),
    };
    let url = format!("https://{grpc}");
    let ch = creds.channel(&url).await.expect("legitimate TLS client");
    let (stop_tx, stop) = watch::channel(false);
    let fresh = {
        let (creds, url) = (creds.clone(), url.clone());
        move || {
            let (creds, url) = (creds.clone(), url.clone());
            Box::pin(async move { creds.channel(&url).await.expect("fresh TLS connection") })
                as std::pin::Pin<Box<dyn std::future::Future<Output = Channel> + Send>>
        }
    };
    let client = tokio::spawn(keep_calling(ch, fresh, stop));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let connector = tls_connector(&m.ca);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(64));
    let attack = Instant::now();
    let mut silent = tokio::task::JoinSet::new();
    for i in 0..sockets {
        let local = attacker(i, 50);
        let (connector, handshakes) = (connector.clone(), handshakes.clone());
        silent.spawn(async move {
            // Half never send a byte; half complete TLS and then send nothing.
            let tls = i % 2 == 1;
            let turn = if tls { Some(handshakes.acquire_owned().await.expect("semaphore")) } else { None };
            let since = Instant::now();
            let give_up = since + deadline + SLACK;
            let s = connect_from(local, grpc).await.expect("connect");
            if !tls {
                return (false, false, closed_after(s, since, give_up).await);
            }
            let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
            match connector.connect(name, s).await {
                Ok(s) => {
                    drop(turn);
                    (true, true, closed_after(s, since, give_up).await)
                }
                // Reaped during the handshake: closed all the same.
                Err(_) => (true, false, Some(since.elapsed())),
            }
        });
    }
    let (mut tls_done, mut plain, mut slowest, mut open) = (0, 0, Duration::ZERO, 0);
    while let Some(r) = silent.join_next().await {
        let (tls, handshaken, closed) = r.expect("attack task");
        tls_done += usize::from(handshaken);
        plain += usize::from(!tls);
        match closed {
            Some(t) => slowest = slowest.max(t),
            None => open += 1,
        }
    }
    let took = attack.elapsed();
    let _ = stop_tx.send(true);
    let served = client.await.expect("the legitimate client was served throughout");
    eprintln!(
        "{sockets} silent sockets ({plain} without TLS, {tls_done} after a TLS handshake): all closed {took:?} after the attack began, slowest {slowest:?} after its connect (deadline {deadline:?}); legitimate client: {served:?}"
    );
    assert_eq!(open, 0, "{open} silent sockets still open {:?} after their deadline", SLACK);
    assert!(
        tls_done >= sockets / 4,
        "only {tls_done} TLS handshakes completed: the preface deadline was not exercised"
    );
    assert!(served.calls >= 10 && served.fresh_connections >= 1, "{served:?}");
}

/// The same on a plaintext port: sockets that send nothing, or half a preface, are closed at the
/// deadline while a client is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_plaintext_sockets_are_reaped_at_the_deadline() {
    let sockets = affordable(600);
    let deadline = Duration::from_millis(800);
    let d = dir("plain");
    let cfg = config_file(&d, smista_server::config::DEMO, &format!("handshake_timeout_ms = {}", deadline.as_millis()));
    let data = d.join("data");
    let smista = Smista::start(&["--config".as_ref(), cfg.as_os_str(), "--data-dir".as_ref(), data.as_os_str()]);
    let grpc: SocketAddr = smista.grpc.parse().expect("grpc address");
    let (stop_tx, stop) = watch::channel(false);
    let url = format!("http://{grpc}");
    let fresh = move || {
        let url = url.clone();
        Box::pin(async move { Channel::from_shared(url).expect("uri").connect().await.expect("fresh connection") })
            as std::pin::Pin<Box<dyn std::future::Future<Output = Channel> + Send>>
    };
    let client = tokio::spawn(keep_calling(smista.channel().await, fresh, stop));
    let attack = Instant::now();
    let mut silent = tokio::task::JoinSet::new();
    for i in 0..sockets {
        silent.spawn(async move {
            let since = Instant::now();
            let mut s = connect_from(attacker(i, 50), grpc).await.expect("connect");
            if i % 2 == 1 {
                s.write_all(b"PRI * HTTP/2.0\r\n").await.expect("half a preface");
            }
            (i % 2 == 1, closed_after(s, since, since + deadline + SLACK).await)
        });
    }
    let (mut slowest, mut open) = (Duration::ZERO, [0, 0]);
    while let Some(r) = silent.join_next().await {
        match r.expect("task") {
            (_, Some(closed)) => slowest = slowest.max(closed),
            (half, None) => open[usize::from(half)] += 1,
        }
    }
    assert_eq!(open, [0, 0], "silent plaintext sockets (sending nothing, half a preface) that outlived their deadline");
    tokio::time::sleep_until((attack + Duration::from_secs(3)).into()).await;
    let _ = stop_tx.send(true);
    let served = client.await.expect("served throughout");
    eprintln!("{sockets} silent plaintext sockets closed, slowest {slowest:?} (deadline {deadline:?}); {served:?}");
}

/// From one address, connections beyond `max_connections_per_address` are closed at once (the
/// held ones stay open, their deadline far off), while connections from other addresses are
/// served; once the address's connections close it may connect again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_is_capped_and_the_others_are_served() {
    let d = dir("per-address");
    let cfg =
        config_file(&d, smista_server::config::DEMO, "handshake_timeout_ms = 60000\nmax_connections_per_address = 8");
    let data = d.join("data");
    let smista = Smista::start(&["--config".as_ref(), cfg.as_os_str(), "--data-dir".as_ref(), data.as_os_str()]);
    let grpc: SocketAddr = smista.grpc.parse().expect("grpc address");
    let one = Ipv4Addr::new(127, 0, 0, 5);
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(connect_from(one, grpc).await.expect("connect"));
    }
    // Beyond the cap: closed at once, long before the 60 s deadline.
    let since = Instant::now();
    let mut refused = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let s = connect_from(one, grpc).await.expect("connect");
        refused.spawn(closed_after(s, since, since + Duration::from_secs(20)));
    }
    while let Some(r) = refused.join_next().await {
        assert!(r.expect("task").is_some(), "a connection over the address's cap was kept");
    }
    eprintln!("40 connections over the cap closed within {:?}", since.elapsed());
    // The held ones are still open.
    for s in &mut held {
        let mut b = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_millis(100), s.read(&mut b)).await;
        assert!(r.is_err(), "a connection within the cap was closed: {r:?}");
    }
    // Another address is served: 127.0.0.6 over raw HTTP/2, and the client's 127.0.0.1 by RPC.
    assert!(greets(connect_from(Ipv4Addr::new(127, 0, 0, 6), grpc).await.expect("connect")).await);
    let mut admin = AdminServiceClient::new(smista.channel().await);
    tokio::time::timeout(CALL_DEADLINE, admin.get_snapshot(pb::GetSnapshotRequest {}))
        .await
        .expect("in time")
        .expect("another address is served");
    // Closing them frees the address's places.
    drop(held);
    let mut again = false;
    for _ in 0..50 {
        if greets(connect_from(one, grpc).await.expect("connect")).await {
            again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(again, "the address was not let in again after its connections closed");
}

/// GET /metrics.
async fn scrape(from: Ipv4Addr, metrics: SocketAddr) -> Result<String, String> {
    let mut s = connect_from(from, metrics).await.map_err(|e| e.to_string())?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.map_err(|e| e.to_string())?;
    let mut out = String::new();
    tokio::time::timeout(CALL_DEADLINE, s.read_to_string(&mut out))
        .await
        .map_err(|_| "no answer in time".to_owned())?
        .map_err(|e| e.to_string())?;
    if out.starts_with("HTTP/1.1 200") {
        Ok(out)
    } else {
        Err(format!("answered {:?}", out.lines().next()))
    }
}

/// 1,100 connections to the metrics port from three addresses, each sending half a request line
/// and stopping, and one trickling a byte every 200 ms: those over the caps are closed at once,
/// the rest (the trickler too: the deadline is per request, not per read) at the request
/// deadline; meanwhile scrapes from another address and gRPC calls are answered within 2 s.
/// Without the caps every connection waits for the deadline; without the deadline they stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_metrics_clients_are_capped_and_reaped_while_scrapes_and_grpc_are_served() {
    let sockets = affordable(1_100);
    let deadline = Duration::from_millis(4_000);
    let (total_cap, per_address) = (64, 16);
    let d = dir("metrics");
    let cfg = config_file(
        &d,
        smista_server::config::DEMO,
        &format!(
            "metrics_request_timeout_ms = {}\nmetrics_max_connections = {total_cap}\nmetrics_max_connections_per_address = {per_address}",
            deadline.as_millis()
        ),
    );
    let data = d.join("data");
    let smista = Smista::start(&["--config".as_ref(), cfg.as_os_str(), "--data-dir".as_ref(), data.as_os_str()]);
    let metrics = logged_addr(&smista, "metrics");
    let pid = smista.child.id();
    let (stop_tx, stop) = watch::channel(false);
    let grpc = smista.grpc.clone();
    let fresh = move || {
        let url = format!("http://{grpc}");
        Box::pin(async move { Channel::from_shared(url).expect("uri").connect().await.expect("fresh connection") })
            as std::pin::Pin<Box<dyn std::future::Future<Output = Channel> + Send>>
    };
    let client = tokio::spawn(keep_calling(smista.channel().await, fresh, stop));
    let cpu_before = cpu_time(pid);
    let attack = Instant::now();
    let mut slow = tokio::task::JoinSet::new();
    for i in 0..sockets {
        let local = Ipv4Addr::new(127, 0, 2, 1 + u8::try_from(i % 3).expect("three"));
        slow.spawn(async move {
            let since = Instant::now();
            let mut s = connect_from(local, metrics).await.expect("connect");
            let _ = s.write_all(b"GET /metr").await;
            closed_after(s, since, since + deadline + SLACK).await
        });
    }
    let trickler = tokio::spawn(async move {
        let since = Instant::now();
        let mut s = connect_from(Ipv4Addr::new(127, 0, 2, 9), metrics).await.expect("connect");
        for b in b"GET /metrics HTTP/1.1\r\nHost: a-very-slow-client.example\r\nX-Pad: ".iter().cycle() {
            if s.write_all(&[*b]).await.is_err() || since.elapsed() > deadline + SLACK {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        since.elapsed()
    });
    // Scrapes from another address during the attack are answered at once.
    let mut scrapes = 0;
    while attack.elapsed() < deadline {
        scrape(Ipv4Addr::new(127, 0, 0, 1), metrics).await.expect("a scrape during the attack");
        scrapes += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (mut early, mut slowest) = (0usize, Duration::ZERO);
    while let Some(r) = slow.join_next().await {
        let closed = r.expect("task").unwrap_or_else(|| panic!("a slow metrics connection outlived its deadline"));
        early += usize::from(closed < deadline / 2);
        slowest = slowest.max(closed);
    }
    let trickled = trickler.await.expect("trickler");
    let cpu = cpu_time(pid).saturating_sub(cpu_before);
    let wall = attack.elapsed();
    let _ = stop_tx.send(true);
    let served = client.await.expect("gRPC served throughout");
    let text = scrape(Ipv4Addr::new(127, 0, 0, 1), metrics).await.expect("scrape after");
    let counter = |needle: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(needle))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    eprintln!(
        "{sockets} slow metrics connections: {early} closed at once, slowest {slowest:?} (deadline {deadline:?}); trickler cut after {trickled:?}; {scrapes} scrapes served; server CPU {cpu:?} over {wall:?}; {served:?}; refused per address {}, timed out {}",
        counter("smista_connections_refused_total{reason=\"metrics_per_address\"}"),
        counter("smista_connections_timed_out_total{listener=\"metrics\"}"),
    );
    assert!(early >= sockets - 3 * per_address, "only {early} of {sockets} closed at once: not capped");
    assert!(trickled < deadline + SLACK, "the trickling client was not cut at the request deadline");
    assert!(counter("smista_connections_timed_out_total{listener=\"metrics\"}") >= 1.0, "{text}");
}

/// Spawns `smista serve` with `args` as given (addresses included), under `prlimit` with at most
/// `nofile` descriptors if asked, returning it once it says it listens.
fn start_raw(nofile: Option<u32>, args: &[&OsStr]) -> Smista {
    let mut cmd = match nofile {
        Some(n) => {
            let mut c = Command::new("prlimit");
            c.arg(format!("--nofile={n}:{n}")).arg("--").arg(env!("CARGO_BIN_EXE_smista"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_smista")),
    };
    cmd.arg("serve").args(args).env("RUST_LOG", "info");
    Smista::spawn(cmd)
}

/// With 200 descriptors, 400 silent gRPC sockets and 200 metrics connections exhaust them: both
/// accept loops back off instead of spinning (the server's CPU time over 3 s of it stays low),
/// warn a few times rather than once per failure, keep serving an open connection, and recover
/// once the sockets go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_accept_loops_back_off_and_recover() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("no prlimit: skipped");
        return;
    }
    let _ = affordable(1_000);
    let d = dir("emfile");
    let cfg = config_file(
        &d,
        smista_server::config::DEMO,
        "handshake_timeout_ms = 60000\nmetrics_request_timeout_ms = 60000",
    );
    let data = d.join("data");
    let smista = start_raw(
        Some(200),
        &[
            "--grpc-addr".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--metrics-addr".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--config".as_ref(),
            cfg.as_os_str(),
            "--data-dir".as_ref(),
            data.as_os_str(),
        ],
    );
    let grpc: SocketAddr = smista.grpc.parse().expect("grpc address");
    let metrics = logged_addr(&smista, "metrics");
    let pid = smista.child.id();
    let ch = smista.channel().await;
    let mut sockets = Vec::new();
    for i in 0..400 {
        sockets.push(connect_from(attacker(i, 20), grpc).await.expect("connect grpc"));
    }
    for i in 0..200 {
        let mut s = connect_from(Ipv4Addr::new(127, 0, 3, 1 + u8::try_from(i / 10).expect("few")), metrics)
            .await
            .expect("connect metrics");
        let _ = s.write_all(b"GET /").await;
        sockets.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = cpu_time(pid);
    let window = Instant::now();
    let mut calls = 0;
    while window.elapsed() < Duration::from_secs(3) {
        tokio::time::timeout(
            CALL_DEADLINE,
            AdminServiceClient::new(ch.clone()).get_snapshot(pb::GetSnapshotRequest {}),
        )
        .await
        .expect("answered in time out of descriptors")
        .expect("an open connection is served out of descriptors");
        calls += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cpu = cpu_time(pid).saturating_sub(before);
    let wall = window.elapsed();
    let warnings: Vec<String> =
        smista.log.try_iter().filter(|l| l.contains("accept failed (out of file descriptors?)")).collect();
    eprintln!(
        "out of descriptors: server CPU {cpu:?} over {wall:?}, {calls} calls served, {} accept warnings",
        warnings.len()
    );
    assert!(!warnings.is_empty(), "the descriptors never ran out: nothing was tested");
    assert!(cpu < wall / 4, "the server spun: {cpu:?} of CPU in {wall:?}");
    assert!(warnings.len() <= 4, "accept errors logged {} times in {wall:?}: {warnings:#?}", warnings.len());
    drop(sockets);
    let mut recovered = false;
    for _ in 0..50 {
        if scrape(Ipv4Addr::new(127, 0, 0, 1), metrics).await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the metrics port did not recover");
    let fresh = smista.channel().await;
    AdminServiceClient::new(fresh).get_snapshot(pb::GetSnapshotRequest {}).await.expect("a fresh gRPC connection");
}

/// Open mode (no [tls] and [auth]): an IPv4-mapped loopback gRPC address is loopback and served;
/// metrics on 0.0.0.0 are refused without --insecure, with an error naming the way out and
/// without the "listening" line; with --insecure they are served.
#[test]
fn open_mode_takes_mapped_loopback_and_refuses_metrics_beyond_loopback() {
    let d = dir("open");
    let data = d.join("data");
    let mapped = Smista::start(&[
        "--grpc-addr".as_ref(),
        "[::ffff:127.0.0.1]:0".as_ref(),
        "--data-dir".as_ref(),
        data.as_os_str(),
    ]);
    assert!(mapped.grpc.starts_with("[::ffff:127.0.0.1]:"), "{}", mapped.grpc);
    drop(mapped);

    let out = Command::new(env!("CARGO_BIN_EXE_smista"))
        .args(["serve", "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "0.0.0.0:0", "--data-dir"])
        .arg(&data)
        .env("RUST_LOG", "info")
        .env_remove("SMISTA_INSECURE")
        .output()
        .expect("run smista serve");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("refusing to serve metrics on 0.0.0.0:") && log.contains("--insecure"), "{log}");
    assert!(!log.contains("listening"), "said it listens before refusing: {log}");

    let insecure = start_raw(
        None,
        &[
            "--grpc-addr".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--metrics-addr".as_ref(),
            "0.0.0.0:0".as_ref(),
            "--insecure".as_ref(),
            "--data-dir".as_ref(),
            data.as_os_str(),
        ],
    );
    assert!(logged_addr(&insecure, "metrics").ip().is_unspecified());
    let warned = loop {
        let line = insecure.log.recv_timeout(Duration::from_secs(10)).expect("the INSECURE warning");
        if line.contains("INSECURE") {
            break line;
        }
    };
    assert!(warned.contains("metrics=0.0.0.0:"), "{warned}");
}

/// The in-process `serve` gives the same answers: mapped loopback passes the check, metrics on
/// an unspecified address do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_checks_both_addresses_before_anything_else() {
    use smista_server::node::{check_exposure, Listeners, ServeError};
    let cfg = smista_server::config::Config::load(None).expect("demo");
    let mapped: SocketAddr = "[::ffff:127.0.0.1]:0".parse().expect("addr");
    let lo: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let any: SocketAddr = "0.0.0.0:0".parse().expect("addr");
    let l = Listeners::bind(mapped, lo).await.expect("bind");
    check_exposure(&cfg, &l).expect("IPv4-mapped loopback is loopback");
    let l = Listeners::bind(lo, any).await.expect("bind");
    let e = check_exposure(&cfg, &l).expect_err("metrics beyond loopback in open mode");
    assert!(matches!(e, ServeError::InsecureMetrics(_)), "{e:?}");
    let r = smista_server::node::serve(&cfg, l, async {}, Duration::from_millis(10)).await;
    assert!(matches!(r, Err(ServeError::InsecureMetrics(_))), "{r:?}");
}

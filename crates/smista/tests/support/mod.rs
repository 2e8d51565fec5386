//! Runs the real `smista` binary for process-level tests (signals, crashes).
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

/// A `smista serve` child process on ephemeral ports, killed when dropped.
pub struct Smista {
    /// The process.
    pub child: Child,
    /// Its gRPC address.
    pub grpc: String,
    /// Its log lines, read so far and to come.
    pub log: Receiver<String>,
    /// The lines read before the start-up line, and it.
    pub startup: Vec<String>,
}

impl Smista {
    /// Starts `smista serve` with `args` (after the listen addresses) and waits for its start-up
    /// line.
    pub fn start(args: &[&std::ffi::OsStr]) -> Smista {
        Self::start_with_env(args, &[])
    }

    /// [`start`](Self::start) with extra environment variables. The gRPC address is an
    /// ephemeral port unless `args` name one (`--grpc-addr`).
    pub fn start_with_env(args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Smista {
        let grpc_named = args.iter().any(|a| *a == "--grpc-addr");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_smista"));
        cmd.arg("serve")
            .args(if grpc_named { &[][..] } else { &["--grpc-addr", "127.0.0.1:0"][..] })
            .args(["--metrics-addr", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied());
        Self::spawn(cmd)
    }

    /// Spawns `cmd` (a `smista serve` command line, possibly behind a wrapper such as
    /// `prlimit`), reads its log, and waits for its start-up line.
    pub fn spawn(mut cmd: Command) -> Smista {
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn smista serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, log) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut startup = Vec::new();
        let grpc = loop {
            let line = log.recv_timeout(Duration::from_secs(30)).expect("start-up line");
            startup.push(line.clone());
            if let Some(rest) = line.split("grpc=").nth(1) {
                break rest.split_whitespace().next().expect("address").to_owned();
            }
        };
        Smista { child, grpc, log, startup }
    }

    /// A connected channel.
    pub async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Channel::from_shared(format!("http://{}", self.grpc))
            .expect("uri")
            .connect()
            .await
            .expect("connect")
    }
}

impl Drop for Smista {
    /// A failing assertion must not leave a server running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy to PostgreSQL that the test can cut: every connection through it is closed at
/// once, and new ones are closed as soon as they are accepted, until it is restored. Or hang:
/// every connection, old and new, stays open but no byte goes through either way (a network that
/// drops packets, a server that stopped answering) until it is resumed.
pub struct Proxy {
    /// Where to connect instead of PostgreSQL.
    pub addr: std::net::SocketAddr,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
    /// True while bytes flow.
    flowing: tokio::sync::watch::Sender<bool>,
}

impl Proxy {
    /// Starts forwarding to `upstream` (host:port).
    pub async fn start(upstream: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let (flowing, _) = tokio::sync::watch::channel(true);
        let (flag, cuts, gate) = (up.clone(), cut.clone(), flowing.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !flag.load(std::sync::atomic::Ordering::Acquire) {
                    continue; // dropped: closed at once
                }
                let mut gone = cuts.subscribe();
                let (to_server, to_client) = (gate.subscribe(), gate.subscribe());
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else { return };
                    let (client_r, client_w) = client.into_split();
                    let (server_r, server_w) = server.into_split();
                    tokio::select! {
                        () = pump(client_r, server_w, to_server) => {}
                        () = pump(server_r, client_w, to_client) => {}
                        _ = gone.changed() => {} // both sockets dropped: PostgreSQL aborts the session
                    }
                });
            }
        });
        Proxy { addr, up, cut, flowing }
    }

    /// Closes every connection, and every new one, until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::Release);
        self.cut.send_modify(|n| *n += 1);
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Stops forwarding bytes on every connection, old and new, keeping them all open, until
    /// [`resume`](Self::resume): whoever waits for PostgreSQL waits (no error, no close).
    pub fn hang(&self) {
        self.flowing.send_replace(false);
    }

    /// Forwards bytes again after [`hang`](Self::hang), those held back first.
    pub fn resume(&self) {
        self.flowing.send_replace(true);
    }
}

/// Copies `from` to `to` while `gate` is true; while it is false, what was read waits (and the
/// socket buffers fill, so the sender waits too). Ends when either side closes.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut gate: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if gate.wait_for(|flowing| *flowing).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if gate.wait_for(|flowing| *flowing).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// `url` with its host and port replaced by `addr`, and the host:port it named.
pub fn through(url: &str, addr: std::net::SocketAddr) -> (String, String) {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..].find('/').map_or(url.len(), |i| start + i);
    let host_at = url[start..end].rfind('@').map_or(start, |i| start + i + 1);
    let mut upstream = url[host_at..end].to_owned();
    if !upstream.contains(':') {
        upstream.push_str(":5432");
    }
    (format!("{}{addr}{}", &url[..host_at], &url[end..]), upstream)
}

/// The budget, supplier group and one queue the process-level tests share: a contract whose every
/// contact shorter than an hour costs (and reserves) exactly 460 cents (100 + 3,600 s x 0.10),
/// paid by group `supplier`, over `queue` (skill of the same name) with `queue_extra` lines.
pub fn contract_toml(ceiling_cents: i64, queue: &str, queue_extra: &str) -> String {
    format!(
        r#"
[[budgets]]
id = "contract"
ceiling_cents = {ceiling_cents}
period = {{ kind = "fixed", start_unix_ms = 0, length_ms = 315360000000 }}
default_handle_ms = 300000
tariffs = [{{ channel = "voice", fee_per_contact_cents = 100, rate_per_second_centicents = 10, billing_increment_seconds = 3600 }}]

[[groups]]
name = "supplier"
supplier = "acme"
budget = "contract"

[[queues]]
name = "{queue}"
skills = [{{ skill = "{queue}", min_level = 1 }}]
budget = "contract"
fallback = "callback_booking"
{queue_extra}

# The tests read operators' statuses from the snapshot (fictitious operators).
[privacy]
live_operator_view = true
agreement = "tests: fictitious operators"
"#
    )
}

/// Starts `smista serve` as `node` on the PostgreSQL ledger at `url`, with the configuration
/// `toml` (written to `dir/<node>.toml`), its data under `dir/<node>`, and `extra` arguments.
pub fn start_node(dir: &std::path::Path, node: &str, toml: &str, url: &str, extra: &[&str]) -> Smista {
    let cfg = dir.join(format!("{node}.toml"));
    std::fs::write(&cfg, toml).expect("write config");
    let data = dir.join(node);
    let mut args: Vec<&std::ffi::OsStr> =
        vec!["--config".as_ref(), cfg.as_os_str(), "--data-dir".as_ref(), data.as_os_str()];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    Smista::start_with_env(&args, &[("SMISTA_LEDGER_URL", url)])
}

/// Ends a multi-node test: SIGTERM to every node still running (then killed on drop), its
/// PostgreSQL schema dropped and its directory removed.
pub async fn teardown(nodes: Vec<Smista>, url: &str, schema: &str, dir: &std::path::Path) {
    for n in &nodes {
        let _ = Command::new("kill").args(["-TERM", &n.child.id().to_string()]).status();
    }
    drop(nodes);
    smista_ledger::testing::drop_schema(url, schema).await;
    let _ = std::fs::remove_dir_all(dir);
}

//! An in-process TCP proxy between one node and PostgreSQL that the harness can hang (stop
//! forwarding bytes, sockets kept open) or reset (close every connection, refuse new ones).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The proxy of one node.
#[derive(Debug)]
pub struct Proxy {
    /// Where the node connects instead of PostgreSQL.
    pub addr: SocketAddr,
    refuse: Arc<AtomicBool>,
    /// `true` while hung.
    hung: watch::Sender<bool>,
    /// Bumped at every reset: every connection open then is closed.
    resets: watch::Sender<u64>,
}

impl Proxy {
    /// Starts forwarding to `upstream` (host:port).
    ///
    /// # Errors
    /// No local port could be bound.
    pub async fn start(upstream: String) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let refuse = Arc::new(AtomicBool::new(false));
        let (hung, _) = watch::channel(false);
        let (resets, _) = watch::channel(0u64);
        let (flag, hang, cuts) = (refuse.clone(), hung.clone(), resets.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if flag.load(Ordering::Acquire) {
                    drop(client); // closed at once
                    continue;
                }
                let upstream = upstream.clone();
                let (hang, mut gone) = (hang.subscribe(), cuts.subscribe());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else { return };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::select! {
                        _ = pump(cr, sw, hang.clone()) => {}
                        _ = pump(sr, cw, hang) => {}
                        _ = gone.changed() => {} // every socket dropped: PostgreSQL aborts the session
                    }
                });
            }
        });
        Ok(Proxy { addr, refuse, hung, resets })
    }

    /// Stops forwarding bytes in both directions; connections stay open (and new ones are
    /// accepted but carry nothing) until [`restore`](Self::restore).
    pub fn hang(&self) {
        self.hung.send_replace(true);
    }

    /// Closes every connection, and every new one, until [`restore`](Self::restore).
    pub fn reset(&self) {
        self.refuse.store(true, Ordering::Release);
        self.resets.send_modify(|n| *n += 1);
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.refuse.store(false, Ordering::Release);
        self.hung.send_replace(false);
    }
}

/// Copies `from` to `to`, holding every chunk read while the proxy is hung.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut hung: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while *hung.borrow_and_update() {
            if hung.changed().await.is_err() {
                return;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// `url` with its host and port replaced by `addr`, and the host:port it named.
#[must_use]
pub fn through(url: &str, addr: SocketAddr) -> (String, String) {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..].find(['/', '?']).map_or(url.len(), |i| start + i);
    let host_at = url[start..end].rfind('@').map_or(start, |i| start + i + 1);
    let mut upstream = url[host_at..end].to_owned();
    if !upstream.contains(':') {
        upstream.push_str(":5432");
    }
    (format!("{}{addr}{}", &url[..host_at], &url[end..]), upstream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn through_replaces_host_and_port() {
        let a: SocketAddr = "127.0.0.1:9999".parse().expect("addr");
        assert_eq!(
            through("postgres://postgres@127.0.0.1:5432/test", a),
            ("postgres://postgres@127.0.0.1:9999/test".to_owned(), "127.0.0.1:5432".to_owned())
        );
        assert_eq!(through("postgres://db/x", a), ("postgres://127.0.0.1:9999/x".to_owned(), "db:5432".to_owned()));
    }

    #[tokio::test]
    async fn hang_holds_bytes_and_reset_closes() {
        let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let up = echo.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let mut b = [0u8; 64];
                    while let Ok(n) = s.read(&mut b).await {
                        if n == 0 || s.write_all(&b[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let p = Proxy::start(up).await.expect("proxy");
        let mut c = TcpStream::connect(p.addr).await.expect("connect");
        let mut b = [0u8; 4];
        c.write_all(b"ping").await.expect("write");
        c.read_exact(&mut b).await.expect("echo");
        p.hang();
        c.write_all(b"pong").await.expect("write");
        let held = tokio::time::timeout(std::time::Duration::from_millis(300), c.read_exact(&mut b)).await;
        assert!(held.is_err(), "nothing passes a hung proxy");
        p.restore();
        c.read_exact(&mut b).await.expect("released");
        assert_eq!(&b, b"pong");
        p.reset();
        let mut rest = Vec::new();
        let n = tokio::time::timeout(std::time::Duration::from_secs(2), c.read_to_end(&mut rest)).await;
        assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "reset closes the connection");
    }
}

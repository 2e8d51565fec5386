//! Accepted connections: the connection caps, TLS (rustls) with certificates reloaded without
//! dropping connections, and what the handlers may know of the peer ([`PeerInfo`]).
//!
//! The accept loop never waits on a client. A connection over `[limits] max_connections`, or
//! over `max_connections_per_address` from its remote address, is closed at once. Every other
//! one gets a task with one deadline from accept (`handshake_timeout_ms`): the TLS handshake, the
//! client's HTTP/2 connection preface and its first SETTINGS frame must all arrive within it, or
//! the connection is closed (what was read is replayed to HTTP/2 afterwards). Past that, HTTP/2
//! keepalive watches the connection. Every connection holds its places under the caps until it
//! closes. An accept error (out of file descriptors) backs off 10 ms doubling to 1 s, and is
//! logged at most every 10 s. A reload builds a new `rustls::ServerConfig` and swaps it in;
//! connections already open keep the one they were accepted with.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use crate::config::tls::{ClientAuth, TlsSection};
use bytes::{Buf, Bytes, BytesMut};
use parking_lot::{Mutex, RwLock};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::future::Future as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;

/// What the server knows of a connection's peer; in every request's extensions.
#[derive(Clone, Debug, Default)]
pub struct PeerInfo {
    /// Remote address.
    pub remote: Option<SocketAddr>,
    /// The verified client certificate's subject CN, DNS and URI names (None: no certificate).
    pub subjects: Option<Arc<[String]>>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", path.display()));
    }
    Ok(certs)
}

/// Builds the rustls configuration from the files.
pub fn server_config(cfg: &TlsSection) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs = read_certs(&cfg.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key_file).map_err(|e| format!("{}: {e}", cfg.key_file.display()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &cfg.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(ca)? {
                roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let v = match cfg.client_auth {
                ClientAuth::Optional => v.allow_unauthenticated(),
                ClientAuth::Required => v,
            };
            builder.with_client_cert_verifier(v.build().map_err(|e| format!("{}: {e}", ca.display()))?)
        }
    };
    let mut sc = builder.with_single_cert(certs, key).map_err(|e| format!("{}: {e}", cfg.cert_file.display()))?;
    sc.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(sc))
}

type Stamp = Vec<Option<SystemTime>>;

/// The live TLS configuration, reloadable.
#[derive(Debug)]
pub struct Tls {
    cfg: TlsSection,
    current: RwLock<Arc<rustls::ServerConfig>>,
    stamp: Mutex<Stamp>,
}

impl Tls {
    /// Loads the files.
    pub fn new(cfg: &TlsSection) -> Result<Tls, String> {
        let current = server_config(cfg)?;
        let tls = Tls { cfg: cfg.clone(), current: RwLock::new(current), stamp: Mutex::new(Vec::new()) };
        *tls.stamp.lock() = tls.stamps();
        Ok(tls)
    }

    fn stamps(&self) -> Stamp {
        let files = [Some(&self.cfg.cert_file), Some(&self.cfg.key_file), self.cfg.client_ca_file.as_ref()];
        files.iter().flatten().map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok()).collect()
    }

    /// Whether a file changed since the last (re)load.
    #[must_use]
    pub fn changed(&self) -> bool {
        *self.stamp.lock() != self.stamps()
    }

    /// Re-reads the files; on error the current configuration stays.
    pub fn reload(&self) -> Result<(), String> {
        let stamp = self.stamps();
        let next = server_config(&self.cfg)?;
        *self.current.write() = next;
        *self.stamp.lock() = stamp;
        Ok(())
    }

    /// How often to look for changes.
    #[must_use]
    pub fn poll(&self) -> Duration {
        Duration::from_millis(self.cfg.reload_poll_ms.max(100))
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.read().clone())
    }
}

/// The names a certificate can be matched by: subject CN, DNS SANs, URI SANs.
#[must_use]
pub fn cert_subjects(der: &[u8]) -> Vec<String> {
    use x509_parser::prelude::*;
    let Ok((_, cert)) = X509Certificate::from_der(der) else { return Vec::new() };
    let mut names: Vec<String> =
        cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok().map(str::to_owned)).collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) | GeneralName::URI(d) => names.push((*d).to_owned()),
                _ => {}
            }
        }
    }
    names
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Connection caps of one listener: in all and per remote address.
#[derive(Debug)]
pub struct Caps {
    total: Arc<Semaphore>,
    per_address: u32,
    addresses: Mutex<HashMap<IpAddr, u32, foldhash::fast::RandomState>>,
}

/// Why a connection was refused at accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The listener holds its maximum of connections.
    Total,
    /// The remote address holds its maximum.
    PerAddress,
}

impl Refused {
    /// Metric label.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Refused::Total => "cap",
            Refused::PerAddress => "per_address",
        }
    }
}

impl Caps {
    /// At most `total` connections, and `per_address` from one remote address.
    #[must_use]
    pub fn new(total: u32, per_address: u32) -> Arc<Caps> {
        Arc::new(Caps {
            total: Arc::new(Semaphore::new(total as usize)),
            per_address,
            addresses: Mutex::new(HashMap::default()),
        })
    }

    /// A place for a connection from `remote`, held until the returned guard drops.
    pub fn admit(self: &Arc<Self>, remote: IpAddr) -> Result<Admitted, Refused> {
        // An IPv4 client on a dual-stack socket is the same address as over IPv4.
        let ip = remote.to_canonical();
        let permit = self.total.clone().try_acquire_owned().map_err(|_| Refused::Total)?;
        {
            let mut m = self.addresses.lock();
            let n = m.entry(ip).or_insert(0);
            if *n >= self.per_address {
                return Err(Refused::PerAddress);
            }
            *n += 1;
        }
        Ok(Admitted { caps: self.clone(), ip, _permit: permit })
    }

    /// Connections held now from `remote`.
    #[must_use]
    pub fn held_by(&self, remote: IpAddr) -> u32 {
        self.addresses.lock().get(&remote.to_canonical()).copied().unwrap_or(0)
    }
}

/// A connection's places under its listener's caps; freed on drop.
#[derive(Debug)]
pub struct Admitted {
    caps: Arc<Caps>,
    ip: IpAddr,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut m = self.caps.addresses.lock();
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// Backs an accept loop off after errors (out of file descriptors, and the like): 10 ms doubling
/// to 1 s while they last, logged at most every 10 s with how many there were.
#[derive(Debug)]
pub struct AcceptBackoff {
    listener: &'static str,
    delay: Duration,
    unlogged: u64,
    logged: Option<Instant>,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);
    const LOG_EVERY: Duration = Duration::from_secs(10);

    /// For the listener named `listener` (in logs and metrics).
    #[must_use]
    pub fn new(listener: &'static str) -> AcceptBackoff {
        AcceptBackoff { listener, delay: Duration::ZERO, unlogged: 0, logged: None }
    }

    /// An accept succeeded: the next error starts again from 10 ms.
    pub fn succeeded(&mut self) {
        self.delay = Duration::ZERO;
    }

    /// An accept failed with `e`: how long to wait before the next.
    pub fn failed(&mut self, e: &io::Error) -> Duration {
        self.delay = if self.delay.is_zero() { Self::FIRST } else { (self.delay * 2).min(Self::MAX) };
        self.unlogged += 1;
        crate::metrics::accept_failed(self.listener);
        if self.logged.is_none_or(|t| t.elapsed() >= Self::LOG_EVERY) {
            tracing::warn!(
                listener = self.listener,
                error = %e,
                failures = self.unlogged,
                retry_in_ms = self.delay.as_millis() as u64,
                "accept failed (out of file descriptors?): backing off"
            );
            self.logged = Some(Instant::now());
            self.unlogged = 0;
        }
        self.delay
    }
}

/// Raises this process's soft limit on open files to its hard limit (every connection is one):
/// the limits before and after, `None` where there is no such limit.
pub fn raise_fd_limit() -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        let before = getrlimit(Resource::Nofile);
        let soft = before.current.unwrap_or(u64::MAX);
        let want = Rlimit { current: before.maximum, maximum: before.maximum };
        if want.current != before.current && setrlimit(Resource::Nofile, want).is_err() {
            return Some((soft, soft));
        }
        let after = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
        Some((soft, after))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The client's HTTP/2 connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// A frame header's length.
const FRAME_HEADER: usize = 9;
/// The SETTINGS frame type.
const SETTINGS: u8 = 0x4;
/// The largest frame a peer may send before settings say otherwise.
const MAX_FIRST_FRAME: usize = 16_384;

/// Reads the client's HTTP/2 connection preface and the SETTINGS frame that must follow it; what
/// was read is returned, to be replayed to HTTP/2. Anything else is handed over as soon as it is
/// seen (HTTP/2 refuses it); a connection that ends first is an error.
async fn read_preface<S: AsyncRead + Unpin>(s: &mut S) -> io::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(256);
    loop {
        let got = buf.len().min(PREFACE.len());
        if buf[..got] != PREFACE[..got] {
            return Ok(buf.freeze());
        }
        let header = PREFACE.len() + FRAME_HEADER;
        if buf.len() >= header {
            let h = &buf[PREFACE.len()..header];
            let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
            if h[3] != SETTINGS || len > MAX_FIRST_FRAME || buf.len() >= header + len {
                return Ok(buf.freeze());
            }
        }
        if s.read_buf(&mut buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// An accepted connection, plain or TLS, holding its place under the connection caps.
pub struct Conn {
    io: Io,
    /// Read before HTTP/2 took over (the preface and first SETTINGS), served first.
    pre: Bytes,
    peer: PeerInfo,
    _admitted: Admitted,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("peer", &self.peer).finish_non_exhaustive()
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.pre.is_empty() {
            let n = this.pre.len().min(buf.remaining());
            buf.put_slice(&this.pre[..n]);
            this.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The bounds on one gRPC listener's connections (`[limits]`).
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// Open connections at most.
    pub max_connections: u32,
    /// Open connections from one remote address at most.
    pub max_per_address: u32,
    /// From accept to the end of the TLS handshake, the HTTP/2 preface and the first SETTINGS.
    pub handshake_timeout: Duration,
}

impl ConnLimits {
    /// From `[limits]`.
    #[must_use]
    pub fn of(l: &crate::config::limits::LimitsSection) -> ConnLimits {
        ConnLimits {
            max_connections: l.max_connections,
            max_per_address: l.max_connections_per_address,
            handshake_timeout: Duration::from_millis(l.handshake_timeout_ms),
        }
    }
}

/// Opens an accepted connection within `deadline` (from accept): TLS if configured, then the
/// HTTP/2 preface and first SETTINGS. `None`: it failed or ran out of time (counted, logged at
/// debug), and is closed.
async fn open(
    stream: TcpStream,
    remote: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    deadline: tokio::time::Instant,
) -> Option<(Io, Bytes)> {
    let mut io = match tls {
        None => Io::Plain(stream),
        Some(acceptor) => match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
            Ok(Ok(s)) => Io::Tls(Box::new(s)),
            Ok(Err(e)) => {
                crate::metrics::tls_handshake_failed();
                tracing::debug!(remote = %remote, error = %e, "TLS handshake failed");
                return None;
            }
            Err(_) => {
                crate::metrics::tls_handshake_failed();
                crate::metrics::connection_timed_out("grpc");
                tracing::debug!(remote = %remote, "TLS handshake timed out");
                return None;
            }
        },
    };
    let read = match &mut io {
        Io::Plain(s) => tokio::time::timeout_at(deadline, read_preface(s)).await,
        Io::Tls(s) => tokio::time::timeout_at(deadline, read_preface(s.as_mut())).await,
    };
    match read {
        Ok(Ok(pre)) => Some((io, pre)),
        Ok(Err(e)) => {
            tracing::debug!(remote = %remote, error = %e, "connection closed before its HTTP/2 preface");
            None
        }
        Err(_) => {
            crate::metrics::connection_timed_out("grpc");
            tracing::debug!(remote = %remote, "no HTTP/2 preface and SETTINGS in time: closed");
            None
        }
    }
}

/// Accepts connections on `listener` until the returned stream is dropped (the server stopped;
/// ending the stream earlier would cut the drain short), under the caps of `limits`, opening each
/// (TLS, HTTP/2 preface, first SETTINGS) off the accept loop within `limits.handshake_timeout`
/// of its accept.
pub fn incoming(listener: TcpListener, tls: Option<Arc<Tls>>, limits: ConnLimits) -> Incoming {
    let (tx, rx) = mpsc::channel(1024);
    Incoming {
        listener,
        tls,
        caps: Caps::new(limits.max_connections, limits.max_per_address),
        within: limits.handshake_timeout,
        backoff: AcceptBackoff::new("grpc"),
        pause: None,
        tx,
        rx,
    }
}

/// The stream of opened connections of a listener. It owns the listener, so the socket closes
/// the moment the stream is dropped (the server stopped): no connection is accepted after that,
/// e.g. by a standby's listener once the active serves the same port. Accepting happens as the
/// server polls; each accepted connection is opened in a task of its own.
pub struct Incoming {
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    caps: Arc<Caps>,
    within: Duration,
    backoff: AcceptBackoff,
    /// The back-off after an accept error.
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
    tx: mpsc::Sender<io::Result<Conn>>,
    rx: mpsc::Receiver<io::Result<Conn>>,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming").field("listener", &self.listener.local_addr().ok()).finish_non_exhaustive()
    }
}

impl Incoming {
    /// Accepts what is waiting (never waits on a client): each admitted connection is opened
    /// in its own task, which hands it over through `rx`.
    fn accept_ready(&mut self, cx: &mut Context<'_>) {
        loop {
            if let Some(p) = self.pause.as_mut() {
                if p.as_mut().poll(cx).is_pending() {
                    return;
                }
                self.pause = None;
            }
            let (stream, remote) = match self.listener.poll_accept(cx) {
                Poll::Pending => return,
                Poll::Ready(Ok(x)) => {
                    self.backoff.succeeded();
                    x
                }
                Poll::Ready(Err(e)) => {
                    let wait = self.backoff.failed(&e);
                    self.pause = Some(Box::pin(tokio::time::sleep(wait)));
                    continue;
                }
            };
            let admitted = match self.caps.admit(remote.ip()) {
                Ok(a) => a,
                Err(why) => {
                    crate::metrics::connection_refused(why.as_str());
                    drop(stream);
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let deadline = tokio::time::Instant::now() + self.within;
            let acceptor = self.tls.as_ref().map(|t| t.acceptor());
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let Some((io, pre)) = open(stream, remote, acceptor, deadline).await else { return };
                let subjects = match &io {
                    Io::Tls(s) => s
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|leaf| Arc::from(cert_subjects(leaf.as_ref()))),
                    Io::Plain(_) => None,
                };
                let peer = PeerInfo { remote: Some(remote), subjects };
                let _ = tx.send(Ok(Conn { io, pre, peer, _admitted: admitted })).await;
            });
        }
    }
}

impl tokio_stream::Stream for Incoming {
    type Item = io::Result<Conn>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        this.accept_ready(cx);
        // Never ends: `tx` lives in the stream, so the channel stays open.
        this.rx.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_preface_and_first_settings_are_read_and_nothing_else_waited_for() {
        let mut settings = PREFACE.to_vec();
        settings.extend_from_slice(&[0, 0, 6, SETTINGS, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100]);
        // Whole, with more behind it: handed over as read.
        let mut more = settings.clone();
        more.extend_from_slice(b"more");
        assert_eq!(read_preface(&mut &more[..]).await.expect("read")[..], more[..]);
        // Cut short: the connection ended first.
        let cut = &settings[..settings.len() - 1];
        assert!(read_preface(&mut &cut[..]).await.is_err());
        // Not HTTP/2 at all: handed over at once, without waiting for more.
        assert_eq!(&read_preface(&mut &b"GET / HTTP/1.1\r\n"[..]).await.expect("read")[..], b"GET / HTTP/1.1\r\n");
        // A first frame that is not SETTINGS: handed over with its header.
        let mut ping = PREFACE.to_vec();
        ping.extend_from_slice(&[0, 0, 8, 6, 0, 0, 0, 0, 0]);
        assert_eq!(read_preface(&mut &ping[..]).await.expect("read")[..], ping[..]);
    }

    #[test]
    fn the_per_address_cap_counts_ipv4_mapped_addresses_as_ipv4() {
        let caps = Caps::new(10, 2);
        let v4: IpAddr = "127.0.0.1".parse().expect("ip");
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().expect("ip");
        let a = caps.admit(v4).expect("first");
        let b = caps.admit(mapped).expect("second");
        assert_eq!(caps.admit(v4).unwrap_err(), Refused::PerAddress);
        assert!(caps.admit("127.0.0.2".parse().expect("ip")).is_ok());
        drop(a);
        assert_eq!(caps.held_by(v4), 1);
        drop(b);
        assert_eq!(caps.held_by(v4), 0);
        let total = Caps::new(1, 5);
        let _one = total.admit(v4).expect("one");
        assert_eq!(total.admit("127.0.0.3".parse().expect("ip")).unwrap_err(), Refused::Total);
    }
}

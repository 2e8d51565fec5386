//! Accepted connections: the connection cap, TLS (rustls) with certificates reloaded without
//! dropping connections, and what the handlers may know of the peer ([`PeerInfo`]).
//!
//! The accept loop never waits on a client: each TLS handshake runs in its own task with a
//! time-out, and a connection over `[limits] max_connections` is closed at once. Every
//! connection holds a permit until it closes. A reload builds a new `rustls::ServerConfig` and
//! swaps it in; connections already open keep the one they were accepted with.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

/// Whether clients must present a certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// A certificate is verified if presented; clients may use a bearer token instead.
    #[default]
    Optional,
    /// Every client must present a certificate the CA signed.
    Required,
}

/// `[tls]`: serve gRPC over TLS.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The server's certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Its private key (PEM, PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// CA certificates (PEM) that sign client certificates; enables mutual TLS.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// With `client_ca_file`: whether a client certificate is required.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// How often the files are checked for changes, ms (SIGHUP reloads at once).
    #[serde(default = "default_poll")]
    pub reload_poll_ms: u64,
}

fn default_poll() -> u64 {
    2_000
}

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

/// An accepted connection, plain or TLS, holding its place under the connection cap.
pub struct Conn {
    io: Io,
    peer: PeerInfo,
    _permit: OwnedSemaphorePermit,
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
        match &mut self.get_mut().io {
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

/// Accepts connections on `listener` until the returned stream is dropped (the server stopped;
/// ending the stream earlier would cut the drain short), under a cap of `max_connections`,
/// doing TLS handshakes (with `handshake_timeout`) off the accept loop.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<Tls>>,
    max_connections: u32,
    handshake_timeout: Duration,
) -> ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(1024);
    let permits = Arc::new(Semaphore::new(max_connections as usize));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tx.closed() => return,
            };
            let (stream, remote) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                crate::metrics::connection_refused();
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let peer = PeerInfo { remote: Some(remote), subjects: None };
            match &tls {
                None => {
                    if tx.send(Ok(Conn { io: Io::Plain(stream), peer, _permit: permit })).await.is_err() {
                        return;
                    }
                }
                Some(tls) => {
                    let acceptor = tls.acceptor();
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                            Ok(Ok(s)) => {
                                let subjects = s
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(|c| c.first())
                                    .map(|leaf| Arc::from(cert_subjects(leaf.as_ref())));
                                let peer = PeerInfo { subjects, ..peer };
                                let _ = tx.send(Ok(Conn { io: Io::Tls(Box::new(s)), peer, _permit: permit })).await;
                            }
                            Ok(Err(e)) => {
                                crate::metrics::tls_handshake_failed();
                                tracing::debug!(remote = %remote, error = %e, "TLS handshake failed");
                            }
                            Err(_) => {
                                crate::metrics::tls_handshake_failed();
                                tracing::debug!(remote = %remote, "TLS handshake timed out");
                            }
                        }
                    });
                }
            }
        }
    });
    ReceiverStream::new(rx)
}

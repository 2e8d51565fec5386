//! `[tls]`: the server's certificate and key, the client CA and whether client certificates are
//! required, and how often the files are checked for a renewal.

use std::path::PathBuf;

use serde::Deserialize;

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

//! Client side of the trust boundary, shared by `smista client`, `smista-load` and the tests:
//! a channel with TLS roots and an optional client certificate, and an interceptor that adds
//! `authorization: Bearer <token>` to every call.
//!
//! Secrets come from files or the environment, never from the command line: `--token-file`
//! (or `SMISTA_TOKEN_FILE`) names a file holding a JWT or an API key; `SMISTA_TOKEN` may hold the
//! token itself.

use std::path::PathBuf;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// How a client proves who it is and whom it trusts.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Credentials {
    /// CA certificate (PEM) the server's certificate must chain to; connects over TLS.
    #[arg(long, env = "SMISTA_CA", global = true)]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, env = "SMISTA_CLIENT_CERT", global = true, requires = "key")]
    pub cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, env = "SMISTA_CLIENT_KEY", global = true, requires = "cert")]
    pub key: Option<PathBuf>,
    /// File holding a bearer token (a JWT or an API key); `SMISTA_TOKEN` may hold the token itself.
    #[arg(long, env = "SMISTA_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// Server name to verify in its certificate (default: the target's host).
    #[arg(long, global = true)]
    pub tls_domain: Option<String>,
}

/// An error and its causes, `outer: inner: innermost`: tonic's connection errors say only
/// "transport error" and keep the reason (refused, no route, a TLS failure) in their sources. A
/// message that adds nothing to its cause (tonic's "transport error") is left out, and so is a
/// cause its outer message already quotes.
#[must_use]
pub fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(e) = next {
        let text = e.to_string();
        next = e.source();
        if (next.is_some() && text == "transport error") || parts.last().is_some_and(|p| p.contains(&text)) {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ")
}

fn read(path: &PathBuf) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

impl Credentials {
    /// The endpoint for `target` (`http://` or `https://`; a CA given turns `http` into TLS).
    pub fn endpoint(&self, target: &str) -> Result<Endpoint, String> {
        let uses_tls = self.ca.is_some() || target.starts_with("https://");
        let target = if uses_tls && target.starts_with("http://") {
            target.replacen("http://", "https://", 1)
        } else {
            target.to_owned()
        };
        let mut ep = Endpoint::from_shared(target.clone()).map_err(|e| format!("bad target `{target}`: {e}"))?;
        if uses_tls {
            let mut tls = ClientTlsConfig::new();
            if let Some(ca) = &self.ca {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            if let (Some(c), Some(k)) = (&self.cert, &self.key) {
                tls = tls.identity(Identity::from_pem(read(c)?, read(k)?));
            }
            if let Some(d) = &self.tls_domain {
                tls = tls.domain_name(d.clone());
            }
            ep = ep.tls_config(tls).map_err(|e| format!("TLS configuration: {e}"))?;
        }
        Ok(ep.tcp_nodelay(true))
    }

    /// Connects to `target`. The error names the target and why, e.g. `cannot connect to
    /// http://127.0.0.1:50051: tcp connect error: Connection refused (os error 111)`.
    pub async fn channel(&self, target: &str) -> Result<Channel, String> {
        self.endpoint(target)?.connect().await.map_err(|e| format!("cannot connect to {target}: {}", causes(&e)))
    }

    /// The bearer interceptor for these credentials.
    pub fn bearer(&self) -> Result<Bearer, String> {
        let token = match &self.token_file {
            Some(f) => Some(read(f)?),
            None => std::env::var("SMISTA_TOKEN").ok(),
        };
        Bearer::new(token.as_deref())
    }
}

/// Adds `authorization: Bearer <token>` to every request (nothing without a token).
#[derive(Clone, Debug, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    /// For `token` (trimmed; `None` or empty: no header).
    pub fn new(token: Option<&str>) -> Result<Bearer, String> {
        match token.map(str::trim).filter(|t| !t.is_empty()) {
            None => Ok(Bearer(None)),
            Some(t) => format!("Bearer {t}")
                .parse()
                .map(|v| Bearer(Some(v)))
                .map_err(|_| "the token has characters a header cannot carry".to_owned()),
        }
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

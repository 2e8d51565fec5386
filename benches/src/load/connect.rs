//! Connections to one server and who calls through them: the platform, a supervisor and admin,
//! and one desk per virtual operator, each with its bearer token (none against an open server).
//!
//! Every `smista_client` item `smista-load` uses is imported here (the TLS and token
//! credentials, and the desk tokens' minting); the other files take them from this one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
pub(super) use smista_client::connect::{Bearer, Credentials};
use smista_proto::v1::admin_service_client::AdminServiceClient;
use smista_proto::v1::contact_service_client::ContactServiceClient;
use smista_proto::v1::operator_service_client::OperatorServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::config::LoadConfig;
use super::error::LoadError;

/// A channel whose calls carry a bearer token (none against an open server).
pub(super) type Authed = InterceptedService<Channel, Bearer>;

/// Who the load generator is towards one server: the platform (offers, events), a supervisor
/// and admin (snapshot, forced logouts), and one desk per virtual operator.
#[derive(Clone, Debug, Default)]
pub(super) struct Identity {
    pub(super) platform: Bearer,
    pub(super) admin: Bearer,
    /// Signing key and claims for desk tokens (None: an open server, no tokens).
    desk_key: Option<Arc<(Vec<u8>, smista_client::mint::Options)>>,
    desks: Arc<DashMap<String, Bearer>>,
}

impl Identity {
    pub(super) fn from_config(cfg: &LoadConfig) -> Result<Identity, LoadError> {
        let platform = cfg.creds.bearer().map_err(LoadError::Usage)?;
        let admin = match &cfg.admin_token_file {
            Some(f) => {
                let t = std::fs::read_to_string(f).map_err(|e| LoadError::Usage(format!("{}: {e}", f.display())))?;
                Bearer::new(Some(&t)).map_err(LoadError::Usage)?
            }
            None => platform.clone(),
        };
        let desk_key = match &cfg.desk_signing_key {
            Some(f) => {
                let key = std::fs::read(f).map_err(|e| LoadError::Usage(format!("{}: {e}", f.display())))?;
                let mut o = smista_client::mint::Options::new(std::path::Path::new("."));
                o.issuer = cfg.jwt_issuer.clone();
                o.audience = cfg.jwt_audience.clone();
                Some(Arc::new((key, o)))
            }
            None => None,
        };
        Ok(Identity { platform, admin, desk_key, desks: Arc::new(DashMap::new()) })
    }

    pub(super) fn desk(&self, operator: &str) -> Bearer {
        let Some(k) = &self.desk_key else { return Bearer::default() };
        if let Some(b) = self.desks.get(operator) {
            return b.clone();
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let token = smista_client::mint::token(&k.0, &k.1, &format!("desk-{operator}"), &["desk"], Some(operator), now)
            .ok()
            .and_then(|t| Bearer::new(Some(&t)).ok())
            .unwrap_or_default();
        self.desks.insert(operator.to_owned(), token.clone());
        token
    }
}

/// A small pool of channels, used round-robin, with the identities to call through them.
#[derive(Clone, Debug)]
pub(crate) struct Pool {
    channels: Arc<Vec<Channel>>,
    next: Arc<AtomicU64>,
    pub(super) id: Identity,
}

impl Pool {
    pub(super) async fn connect(target: &str, n: usize, creds: &Credentials, id: Identity) -> Result<Pool, LoadError> {
        let mut channels = Vec::with_capacity(n);
        for _ in 0..n {
            let ch = creds
                .endpoint(target)
                .map_err(|e| LoadError::Usage(format!("bad --target {target}: {e}")))?
                .connect_timeout(Duration::from_secs(3))
                .connect()
                .await
                .map_err(|source| LoadError::Unreachable { target: target.to_owned(), source })?;
            channels.push(ch);
        }
        Ok(Pool { channels: Arc::new(channels), next: Arc::new(AtomicU64::new(0)), id })
    }

    pub(super) fn get(&self) -> Channel {
        let i = self.next.fetch_add(1, Ordering::Relaxed) as usize % self.channels.len();
        self.channels[i].clone()
    }

    pub(super) fn contacts(&self) -> ContactServiceClient<Authed> {
        ContactServiceClient::with_interceptor(self.get(), self.id.platform.clone())
    }

    pub(super) fn admin(&self) -> AdminServiceClient<Authed> {
        AdminServiceClient::with_interceptor(self.get(), self.id.admin.clone())
    }

    pub(super) fn supervisor_ops(&self) -> OperatorServiceClient<Authed> {
        OperatorServiceClient::with_interceptor(self.get(), self.id.admin.clone())
    }

    pub(super) fn desk(&self, operator: &str) -> OperatorServiceClient<Authed> {
        OperatorServiceClient::with_interceptor(self.get(), self.id.desk(operator))
    }
}

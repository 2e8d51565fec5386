//! The trust boundary: who a caller is (a [`Principal`]), which roles it holds, and which RPCs
//! each role may call.
//!
//! Every request to a `smista.v1` service passes [`AuthLayer`] before any handler runs:
//! 1. its method must be in [`POLICY`] (a method missing there is refused, so a new RPC cannot be
//!    forgotten open);
//! 2. the caller is authenticated from `authorization: Bearer <token>` (a JWT verified against the
//!    identity provider's JWKS, or a static API key stored as a SHA-256 hash in the configuration)
//!    or, without a bearer token, from its TLS client certificate; verified tokens are cached
//!    until they expire, so a desk pays one signature check per token, not per RPC;
//! 3. one of the method's roles must be held;
//! 4. the principal's quota for the method's class must allow it ([`crate::edge::limits`]).
//!
//! Failures answer UNAUTHENTICATED (no or bad credential), PERMISSION_DENIED (no role) or
//! RESOURCE_EXHAUSTED (quota, with `retry-after-ms`), count in `smista_auth_failures_total` or
//! `smista_rate_limited_total`, and never reach the engine. What a role may do to which operator
//! (a desk acts only as its own operator) is checked in the handlers with
//! [`Principal::may_act_as`], since it depends on the request body.
//!
//! Health and reflection stay open. A server with no credential configured at all ("open",
//! the loopback demo) treats every caller as [`Principal::anonymous`], holding every role.

pub mod jwt;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use futures_util::future::Either;
use parking_lot::RwLock;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::Status;

use crate::config::auth::{AuthSection, JwtSection, Role};
use crate::edge::limits::{Class, Limits};
use crate::edge::transport::PeerInfo;

/// A set of roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Roles(u8);

impl Roles {
    /// No role.
    pub const NONE: Roles = Roles(0);
    /// Every role.
    pub const ALL: Roles = Roles(31);

    /// The set of `roles`.
    #[must_use]
    pub const fn of(roles: &[Role]) -> Roles {
        let mut bits = 0;
        let mut i = 0;
        while i < roles.len() {
            bits |= roles[i].bit();
            i += 1;
        }
        Roles(bits)
    }

    /// Whether `role` is in the set.
    #[must_use]
    pub const fn has(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }

    /// Whether the sets share a role.
    #[must_use]
    pub const fn intersects(self, other: Roles) -> bool {
        self.0 & other.0 != 0
    }

    /// Without `role`.
    #[must_use]
    pub const fn without(self, role: Role) -> Roles {
        Roles(self.0 & !role.bit())
    }
}

/// How a principal proved who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Nobody is asked to: the open demo server.
    Open,
    /// A static API key.
    ApiKey,
    /// A JWT of the identity provider.
    Jwt,
    /// A TLS client certificate.
    Certificate,
}

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Principal {
    /// Stable name: the API key's or certificate rule's `name`, or `jwt:<sub>`. Recorded as the
    /// actor of audit records, and the key of quotas and stream caps.
    pub name: Arc<str>,
    /// Roles held.
    pub roles: Roles,
    /// The operator id a desk principal acts as.
    pub operator: Option<Arc<str>>,
    /// The operator group its JWT names (`[auth.jwt] group_claim`; `None`: not configured or
    /// not in the token). A Login must then match the roster's group (`app::roster`).
    pub group: Option<Arc<str>>,
    /// How it authenticated.
    pub method: Method,
}

impl Principal {
    /// Every caller of an open server: every role, any operator.
    #[must_use]
    pub fn anonymous() -> Principal {
        Principal { name: Arc::from("anonymous"), roles: Roles::ALL, operator: None, group: None, method: Method::Open }
    }

    /// Whether this principal may act as desk `operator_id`: a desk bound to that id, or anyone
    /// on an open server.
    #[must_use]
    pub fn may_act_as(&self, operator_id: &str) -> bool {
        match self.method {
            Method::Open => true,
            _ => self.roles.has(Role::Desk) && self.operator.as_deref() == Some(operator_id),
        }
    }

    /// [`may_act_as`](Self::may_act_as) as a status.
    pub fn check_operator(&self, operator_id: &str) -> Result<(), Status> {
        if self.may_act_as(operator_id) {
            Ok(())
        } else {
            crate::metrics::auth_failure("wrong_operator");
            Err(Status::permission_denied(format!(
                "principal `{}` may not act as operator `{}`",
                self.name,
                smista_core::error::clip(operator_id)
            )))
        }
    }
}

/// Who may call each RPC of `smista.v1`, and the quota class it counts in. A method missing here
/// is refused with PERMISSION_DENIED; a test walks the descriptor set to keep this complete.
pub const POLICY: &[(&str, Roles, Class)] = &[
    ("/smista.v1.ContactService/OfferContact", Roles::of(&[Role::Platform]), Class::Offer),
    ("/smista.v1.ContactService/CancelContact", Roles::of(&[Role::Platform]), Class::Contact),
    ("/smista.v1.ContactService/RequestCallback", Roles::of(&[Role::Platform]), Class::Contact),
    ("/smista.v1.ContactService/CallbackUnanswered", Roles::of(&[Role::Platform]), Class::Contact),
    ("/smista.v1.ContactService/ScheduleCallback", Roles::of(&[Role::Platform]), Class::Contact),
    ("/smista.v1.ContactService/StreamEvents", Roles::of(&[Role::Platform, Role::Supervisor]), Class::Stream),
    ("/smista.v1.OperatorService/Login", Roles::of(&[Role::Desk]), Class::Login),
    ("/smista.v1.OperatorService/Logout", Roles::of(&[Role::Desk, Role::Supervisor]), Class::Login),
    ("/smista.v1.OperatorService/SetState", Roles::of(&[Role::Desk]), Class::Desk),
    ("/smista.v1.OperatorService/WatchOffers", Roles::of(&[Role::Desk]), Class::Stream),
    ("/smista.v1.OperatorService/AcceptOffer", Roles::of(&[Role::Desk]), Class::Desk),
    ("/smista.v1.OperatorService/DeclineOffer", Roles::of(&[Role::Desk]), Class::Desk),
    ("/smista.v1.OperatorService/CompleteContact", Roles::of(&[Role::Desk]), Class::Desk),
    ("/smista.v1.OperatorService/TransferContact", Roles::of(&[Role::Desk]), Class::Desk),
    ("/smista.v1.OperatorService/ConsultContact", Roles::of(&[Role::Desk]), Class::Desk),
    ("/smista.v1.OperatorService/EndConsultation", Roles::of(&[Role::Desk]), Class::Desk),
    ("/smista.v1.AdminService/GetSnapshot", Roles::of(&[Role::Supervisor]), Class::Read),
    ("/smista.v1.AdminService/ListBudgetAudit", Roles::of(&[Role::Supervisor]), Class::Read),
    ("/smista.v1.AdminService/GetIntervalReport", Roles::of(&[Role::Supervisor]), Class::Read),
    ("/smista.v1.AdminService/GetBudgetBurn", Roles::of(&[Role::Supervisor]), Class::Read),
    ("/smista.v1.AdminService/GetSpendReport", Roles::of(&[Role::Supervisor]), Class::Read),
    ("/smista.v1.AdminService/SetQueueOpen", Roles::of(&[Role::Admin]), Class::Admin),
    ("/smista.v1.AppointmentService/PublishAvailability", Roles::of(&[Role::Desk, Role::Supervisor]), Class::Desk),
    ("/smista.v1.AppointmentService/WithdrawAvailability", Roles::of(&[Role::Desk, Role::Supervisor]), Class::Desk),
    ("/smista.v1.AppointmentService/ListSlots", Roles::of(&[Role::Platform, Role::Supervisor]), Class::Read),
    (
        "/smista.v1.AppointmentService/BookAppointment",
        Roles::of(&[Role::Platform, Role::Supervisor, Role::Desk]),
        Class::Contact,
    ),
    (
        "/smista.v1.AppointmentService/MoveAppointment",
        Roles::of(&[Role::Platform, Role::Supervisor, Role::Desk]),
        Class::Contact,
    ),
    (
        "/smista.v1.AppointmentService/CancelAppointment",
        Roles::of(&[Role::Platform, Role::Supervisor, Role::Desk]),
        Class::Contact,
    ),
    ("/smista.v1.AppointmentService/ListAppointments", Roles::of(&[Role::Supervisor]), Class::Read),
    ("/smista.v1.AdminService/UpdateQueue", Roles::of(&[Role::Admin]), Class::Admin),
    ("/smista.v1.AdminService/UpdateOperator", Roles::of(&[Role::Admin]), Class::Admin),
    ("/smista.v1.AdminService/ListQueueAudit", Roles::of(&[Role::Supervisor]), Class::Read),
    ("/smista.v1.AdminService/UpdateBudget", Roles::of(&[Role::Admin]), Class::Admin),
    ("/smista.v1.AdminService/GetOperatorReport", Roles::of(&[Role::Supervisor, Role::Workforce]), Class::Read),
    ("/smista.v1.AdminService/ListOperatorReportReads", Roles::of(&[Role::Admin]), Class::Read),
    ("/smista.v1.AdminService/PutRosterOperator", Roles::of(&[Role::Admin]), Class::Admin),
    ("/smista.v1.AdminService/RetireRosterOperator", Roles::of(&[Role::Admin]), Class::Admin),
    ("/smista.v1.AdminService/ListRoster", Roles::of(&[Role::Supervisor]), Class::Read),
    ("/smista.v1.AdminService/ListRosterAudit", Roles::of(&[Role::Supervisor]), Class::Read),
];

/// Paths that need no credential.
const OPEN_PREFIXES: &[&str] = &["/grpc.health.v1.", "/grpc.reflection."];

fn policy(path: &str) -> Option<(Roles, Class)> {
    POLICY.iter().find(|(p, _, _)| *p == path).map(|(_, r, c)| (*r, *c))
}

struct KeyEntry {
    hash: [u8; 32],
    principal: Arc<Principal>,
}

struct JwtState {
    cfg: JwtSection,
    keys: RwLock<Arc<jwt::Jwks>>,
}

/// Most verified tokens cached; past it the cache drops expired entries, then everything.
const TOKEN_CACHE_MAX: usize = 100_000;

/// Turns credentials into principals.
pub struct Authenticator {
    open: bool,
    keys: Vec<KeyEntry>,
    jwt: Option<JwtState>,
    certs: Vec<(String, Arc<Principal>)>,
    /// SHA-256 of a token -> its principal and expiry (Unix s).
    cache: DashMap<[u8; 32], (Arc<Principal>, i64)>,
    anonymous: Arc<Principal>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("open", &self.open)
            .field("api_keys", &self.keys.len())
            .field("jwt", &self.jwt.is_some())
            .field("client_certs", &self.certs.len())
            .finish_non_exhaustive()
    }
}

fn now_s() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn principal(name: &str, roles: &[Role], operator: Option<&str>, method: Method) -> Arc<Principal> {
    Arc::new(Principal {
        name: Arc::from(name),
        roles: Roles::of(roles),
        operator: operator.map(Arc::from),
        group: None,
        method,
    })
}

impl Authenticator {
    /// Builds the authenticator; reads the JWKS file.
    pub fn new(cfg: &AuthSection) -> Result<Authenticator, String> {
        cfg.validate().map_err(|(k, p)| format!("{k}: {p}"))?;
        let keys = cfg
            .api_keys
            .iter()
            .map(|k| {
                let mut hash = [0u8; 32];
                hash.copy_from_slice(&hex::decode(&k.sha256).unwrap_or_default()[..32.min(k.sha256.len() / 2)]);
                KeyEntry { hash, principal: principal(&k.name, &k.roles, k.operator.as_deref(), Method::ApiKey) }
            })
            .collect();
        let jwt = match &cfg.jwt {
            Some(j) => Some(JwtState { keys: RwLock::new(Arc::new(read_jwks(&j.jwks_file)?)), cfg: j.clone() }),
            None => None,
        };
        let certs = cfg
            .client_certs
            .iter()
            .map(|c| (c.subject.clone(), principal(&c.name, &c.roles, c.operator.as_deref(), Method::Certificate)))
            .collect();
        Ok(Authenticator {
            open: !cfg.configured(),
            keys,
            jwt,
            certs,
            cache: DashMap::new(),
            anonymous: Arc::new(Principal::anonymous()),
        })
    }

    /// Whether every caller is anonymous with every role.
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Re-reads the JWKS file; on success drops cached tokens (a withdrawn key stops working).
    pub fn reload(&self) -> Result<(), String> {
        if let Some(j) = &self.jwt {
            let keys = read_jwks(&j.cfg.jwks_file)?;
            *j.keys.write() = Arc::new(keys);
            self.cache.clear();
        }
        Ok(())
    }

    /// The principal presenting these credentials.
    pub fn authenticate(&self, bearer: Option<&str>, peer: Option<&PeerInfo>) -> Result<Arc<Principal>, Status> {
        if self.open {
            return Ok(self.anonymous.clone());
        }
        if let Some(token) = bearer {
            return self.token(token);
        }
        if let Some(p) = peer.and_then(|p| p.subjects.as_deref()).and_then(|subjects| self.certificate(subjects)) {
            return Ok(p);
        }
        crate::metrics::auth_failure("missing");
        Err(Status::unauthenticated(
            "credentials required: `authorization: Bearer <token>` or a client certificate known to the server",
        ))
    }

    fn certificate(&self, subjects: &[String]) -> Option<Arc<Principal>> {
        self.certs.iter().find(|(s, _)| subjects.iter().any(|x| x == s)).map(|(_, p)| p.clone())
    }

    fn token(&self, token: &str) -> Result<Arc<Principal>, Status> {
        let now = now_s();
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(hit) = self.cache.get(&hash) {
            if hit.1 >= now {
                return Ok(hit.0.clone());
            }
        }
        // API keys: compared in constant time, every key, whatever matches.
        let mut found = None;
        for k in &self.keys {
            if bool::from(k.hash.ct_eq(&hash)) {
                found = Some(k.principal.clone());
            }
        }
        if let Some(p) = found {
            return Ok(p);
        }
        let Some(j) = &self.jwt else {
            crate::metrics::auth_failure("bad_token");
            return Err(Status::unauthenticated("unknown API key"));
        };
        let keys = j.keys.read().clone();
        let expect = jwt::Expect {
            issuer: &j.cfg.issuer,
            audience: &j.cfg.audience,
            leeway_s: i64::from(j.cfg.leeway_s),
            now_s: now,
        };
        let v = jwt::verify(token, &keys, &expect).map_err(|why| {
            crate::metrics::auth_failure(if why == "expired" { "expired" } else { "bad_token" });
            Status::unauthenticated(format!("token refused: {why}"))
        })?;
        let p = Arc::new(self.jwt_principal(&j.cfg, &v.claims));
        let exp = v.exp.saturating_add(i64::from(j.cfg.leeway_s));
        if self.cache.len() >= TOKEN_CACHE_MAX {
            self.cache.retain(|_, (_, e)| *e >= now);
            if self.cache.len() >= TOKEN_CACHE_MAX {
                self.cache.clear();
            }
        }
        self.cache.insert(hash, (p.clone(), exp));
        Ok(p)
    }

    fn jwt_principal(&self, cfg: &JwtSection, claims: &serde_json::Map<String, serde_json::Value>) -> Principal {
        let sub = claims.get("sub").and_then(serde_json::Value::as_str).unwrap_or("");
        let roles: Vec<Role> = match claims.get(&cfg.roles_claim) {
            Some(serde_json::Value::Array(v)) => v.iter().filter_map(|r| r.as_str().and_then(Role::parse)).collect(),
            Some(serde_json::Value::String(s)) => s.split_whitespace().filter_map(Role::parse).collect(),
            _ => Vec::new(),
        };
        let operator = claims
            .get(&cfg.operator_claim)
            .and_then(serde_json::Value::as_str)
            .filter(|o| !o.is_empty() && o.len() <= 128)
            .map(Arc::from);
        let group = cfg
            .group_claim
            .as_ref()
            .and_then(|c| claims.get(c))
            .and_then(serde_json::Value::as_str)
            .filter(|g| !g.is_empty() && g.len() <= 128)
            .map(Arc::from);
        let mut roles = Roles::of(&roles);
        if operator.is_none() {
            // A desk token must say which desk.
            roles = roles.without(Role::Desk);
        }
        Principal {
            name: Arc::from(format!("jwt:{}", smista_core::error::clip(sub))),
            roles,
            operator,
            group,
            method: Method::Jwt,
        }
    }
}

fn read_jwks(path: &std::path::Path) -> Result<jwt::Jwks, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read JWKS {}: {e}", path.display()))?;
    jwt::Jwks::parse(&text).map_err(|e| format!("JWKS {}: {e}", path.display()))
}

/// What the layer needs: the authenticator and the quotas.
#[derive(Debug)]
pub struct Gate {
    /// Credentials.
    pub auth: Authenticator,
    /// Quotas.
    pub limits: Arc<Limits>,
}

impl Gate {
    /// Decides a request: `Ok(None)` for open paths, `Ok(Some(principal))` to proceed.
    pub fn check(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        peer: Option<&PeerInfo>,
    ) -> Result<Option<Arc<Principal>>, Status> {
        if OPEN_PREFIXES.iter().any(|p| path.starts_with(p)) {
            return Ok(None);
        }
        let Some((roles, class)) = policy(path) else {
            crate::metrics::auth_failure("unknown_method");
            return Err(Status::permission_denied("no policy for this method"));
        };
        let bearer = match headers.get(http::header::AUTHORIZATION) {
            None => None,
            Some(v) => {
                let v = v.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
                match v {
                    Some(t) if !t.is_empty() => Some(t),
                    _ => {
                        crate::metrics::auth_failure("bad_token");
                        return Err(Status::unauthenticated("authorization must be `Bearer <token>`"));
                    }
                }
            }
        };
        let p = self.auth.authenticate(bearer, peer)?;
        if !p.roles.intersects(roles) {
            crate::metrics::auth_failure("no_role");
            return Err(Status::permission_denied(format!("principal `{}` lacks the role this method needs", p.name)));
        }
        self.limits.check_rate(&p, class)?;
        Ok(Some(p))
    }
}

/// Tower layer running [`Gate::check`] in front of every gRPC service.
#[derive(Clone, Debug)]
pub struct AuthLayer(pub Arc<Gate>);

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService { inner, gate: self.0.clone() }
    }
}

/// See [`AuthLayer`].
#[derive(Clone, Debug)]
pub struct AuthService<S> {
    inner: S,
    gate: Arc<Gate>,
}

/// Most request-body bytes read from a refused request before answering (see [`refuse`]).
const DRAIN_MAX: usize = 64 * 1024;

/// Answers a refused request after reading (up to [`DRAIN_MAX`] of) its body. Answering first
/// would make HTTP/2 reset the stream and then count the client's late DATA frame as a protocol
/// error: after 1,024 of those h2 closes the whole connection with ENHANCE_YOUR_CALM, taking a
/// well-behaved platform's other calls with it whenever it runs over its quota.
pub(crate) async fn refuse<B>(body: B, status: Status) -> http::Response<tonic::body::Body>
where
    B: http_body::Body + Send + Unpin,
{
    use http_body_util::BodyExt;
    let mut body = body;
    let mut read = 0usize;
    while read <= DRAIN_MAX {
        match body.frame().await {
            Some(Ok(f)) => read += f.data_ref().map_or(0, bytes::Buf::remaining),
            _ => break,
        }
    }
    status.into_http()
}

type Refusal = std::pin::Pin<Box<dyn std::future::Future<Output = http::Response<tonic::body::Body>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Either<
        futures_util::future::Map<Refusal, fn(http::Response<tonic::body::Body>) -> Result<Self::Response, S::Error>>,
        S::Future,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let peer = req.extensions().get::<PeerInfo>();
        match self.gate.check(req.uri().path(), req.headers(), peer) {
            Ok(p) => {
                if let Some(p) = p {
                    req.extensions_mut().insert(p);
                }
                Either::Right(self.inner.call(req))
            }
            Err(status) => {
                let refusal: Refusal = Box::pin(refuse(req.into_body(), status));
                Either::Left(futures_util::FutureExt::map(refusal, Ok))
            }
        }
    }
}

/// The principal of a request: set by [`AuthLayer`]; absent when a handler is called directly
/// (benches), which only an open server allows.
pub fn principal_of<T>(req: &tonic::Request<T>, open: bool) -> Result<Arc<Principal>, Status> {
    match req.extensions().get::<Arc<Principal>>() {
        Some(p) => Ok(p.clone()),
        None if open => Ok(Arc::new(Principal::anonymous())),
        None => Err(Status::unauthenticated("no authenticated principal")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::auth::ApiKey;
    use prost::Message;

    #[test]
    fn the_policy_names_every_method_of_the_schema_and_nothing_else() {
        let set = prost_types::FileDescriptorSet::decode(smista_proto::FILE_DESCRIPTOR_SET).expect("descriptor set");
        let mut schema: Vec<String> = set
            .file
            .iter()
            .flat_map(|f| {
                f.service.iter().flat_map(move |s| {
                    s.method.iter().map(move |m| format!("/{}.{}/{}", f.package(), s.name(), m.name()))
                })
            })
            .collect();
        let mut policy: Vec<String> = POLICY.iter().map(|(p, _, _)| (*p).to_owned()).collect();
        schema.sort();
        policy.sort();
        assert_eq!(schema, policy, "every RPC needs a POLICY entry (and a removed one must go)");
        assert!(POLICY.iter().all(|(_, roles, _)| *roles != Roles::NONE));
    }

    #[test]
    fn roles_and_operator_binding() {
        let desk = Principal {
            name: Arc::from("d"),
            roles: Roles::of(&[Role::Desk]),
            operator: Some(Arc::from("op-101")),
            group: None,
            method: Method::Jwt,
        };
        assert!(desk.may_act_as("op-101") && !desk.may_act_as("op-102"));
        let unbound = Principal { operator: None, ..desk.clone() };
        assert!(!unbound.may_act_as("op-101"));
        let admin = Principal { roles: Roles::of(&[Role::Admin]), ..desk };
        assert!(!admin.may_act_as("op-101"), "a desk binding without the desk role is nothing");
        assert!(Principal::anonymous().may_act_as("anyone"));
        let cfg = AuthSection {
            api_keys: vec![ApiKey {
                name: "k".into(),
                sha256: "00".repeat(32),
                roles: vec![Role::Desk],
                operator: None,
            }],
            ..AuthSection::default()
        };
        assert!(cfg.validate().is_err(), "a desk key must name its operator");
        let cfg = AuthSection {
            api_keys: vec![ApiKey { name: "k".into(), sha256: "zz".into(), roles: vec![Role::Admin], operator: None }],
            ..AuthSection::default()
        };
        assert!(cfg.validate().is_err(), "a hash must be 64 hex digits");
    }
}

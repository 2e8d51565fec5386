//! `[auth]`: the credentials the server accepts (JWTs from a JWKS, API keys stored as SHA-256,
//! client certificates by subject) and the roles each grants.

use serde::Deserialize;

/// A role: what kind of client a principal is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The telephony platform: ContactService.
    Platform,
    /// An operator desk: OperatorService, bound to one operator id.
    Desk,
    /// A supervisor: snapshot, events, audit trail, forced logouts.
    Supervisor,
    /// An administrator: every change to queues and budgets.
    Admin,
    /// Workforce management under the union agreement: reads per-operator accounting rows
    /// (`GetOperatorReport` with `per_operator`, where `[privacy]` enables them; every read
    /// audited). Held by no other role: an admin or supervisor sees group totals only.
    Workforce,
}

impl Role {
    pub(crate) const fn bit(self) -> u8 {
        match self {
            Role::Platform => 1,
            Role::Desk => 2,
            Role::Supervisor => 4,
            Role::Admin => 8,
            Role::Workforce => 16,
        }
    }

    /// The role's name in configuration files and tokens.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Platform => "platform",
            Role::Desk => "desk",
            Role::Supervisor => "supervisor",
            Role::Admin => "admin",
            Role::Workforce => "workforce",
        }
    }

    /// Parses a role name.
    #[must_use]
    pub fn parse(s: &str) -> Option<Role> {
        [Role::Platform, Role::Desk, Role::Supervisor, Role::Admin, Role::Workforce]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// `[auth]`: how callers prove who they are. With nothing configured the server is open (every
/// caller holds every role), which `smista serve` allows only on loopback or with `--insecure`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// JWTs of the identity provider.
    pub jwt: Option<JwtSection>,
    /// Static API keys (for the telephony platform and admin tools).
    pub api_keys: Vec<ApiKey>,
    /// TLS client certificates mapped to principals (needs `[tls] client_ca_file`).
    pub client_certs: Vec<CertRule>,
}

/// `[auth.jwt]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSection {
    /// The identity provider's public keys (reloaded with the certificates, on SIGHUP or change).
    pub jwks_file: std::path::PathBuf,
    /// Required `iss`.
    pub issuer: String,
    /// Required member of `aud`.
    pub audience: String,
    /// The claim naming the operator id of a desk token.
    #[serde(default = "default_operator_claim")]
    pub operator_claim: String,
    /// The claim listing roles (an array of names, or one space-separated string).
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Clock skew tolerated on `exp` and `nbf`, seconds.
    #[serde(default = "default_leeway")]
    pub leeway_s: u32,
    /// The claim naming a desk's operator group, where the identity provider carries it: a desk
    /// token must then have it, and a Login is refused (PERMISSION_DENIED) unless it equals the
    /// roster's group for the operator (see `docs/roster.md`). Unset: not checked.
    #[serde(default)]
    pub group_claim: Option<String>,
}

fn default_operator_claim() -> String {
    "operator_id".into()
}

fn default_roles_claim() -> String {
    "roles".into()
}

fn default_leeway() -> u32 {
    30
}

/// `[[auth.api_keys]]`: a static key, stored as the hex SHA-256 of the key (the key itself is
/// only ever in the client's secret store; `smista dev-credentials` makes one).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// The principal's name.
    pub name: String,
    /// Hex SHA-256 of the key.
    pub sha256: String,
    /// Roles.
    pub roles: Vec<Role>,
    /// Operator id, required with the desk role.
    #[serde(default)]
    pub operator: Option<String>,
}

/// `[[auth.client_certs]]`: a certificate whose subject common name or a DNS/URI SAN equals
/// `subject` is the principal `name`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertRule {
    /// Subject CN, DNS SAN or URI SAN to match exactly.
    pub subject: String,
    /// The principal's name.
    pub name: String,
    /// Roles.
    pub roles: Vec<Role>,
    /// Operator id, required with the desk role.
    #[serde(default)]
    pub operator: Option<String>,
}

impl AuthSection {
    /// Whether any credential is configured (if not, the server is open).
    #[must_use]
    pub fn configured(&self) -> bool {
        self.jwt.is_some() || !self.api_keys.is_empty() || !self.client_certs.is_empty()
    }

    /// Checks the section: `Err((key, problem))`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let desk_needs_operator = |key: String, roles: &[Role], op: &Option<String>| {
            if roles.contains(&Role::Desk) && op.as_deref().is_none_or(str::is_empty) {
                return Err((key, "the desk role needs the operator it is bound to".to_owned()));
            }
            if roles.is_empty() {
                return Err((key, "at least one role".to_owned()));
            }
            Ok(())
        };
        for (i, k) in self.api_keys.iter().enumerate() {
            let h = hex::decode(&k.sha256).ok().filter(|h| h.len() == 32);
            if h.is_none() {
                return Err((format!("auth.api_keys[{i}].sha256"), "must be 64 hex digits".into()));
            }
            desk_needs_operator(format!("auth.api_keys[{i}].roles"), &k.roles, &k.operator)?;
        }
        for (i, c) in self.client_certs.iter().enumerate() {
            desk_needs_operator(format!("auth.client_certs[{i}].roles"), &c.roles, &c.operator)?;
        }
        Ok(())
    }
}

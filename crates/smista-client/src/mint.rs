//! Development credentials: `smista dev-credentials --out DIR` mints everything a secure server
//! and its clients need for tests, demos and the README walkthrough — a CA, a server certificate,
//! a client certificate for the telephony platform (mutual TLS), an ES256 signing key with its
//! JWKS and signed desk and supervisor tokens, API keys for the platform and the admin console
//! (stored in the configuration as SHA-256 only), a roster of the minted operators (`roster.csv`,
//! each in a group by the demo's numbering: see [`dev_group`]), and `smista-secure.toml`: a base
//! configuration (the server's embedded demo) with `[tls]`, `[auth]` and `[roster]` sections that
//! use them. Behind the
//! crate's `mint` feature, so a client that only connects does not link a certificate minter.
//!
//! Never for production: the institute's PKI and identity provider issue the real ones.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SecureRandom;
use ring::signature::{self, KeyPair};
use sha2::{Digest, Sha256};

/// What to mint.
#[derive(Clone, Debug)]
pub struct Options {
    /// Output directory (created, owner-only).
    pub dir: PathBuf,
    /// Operators to mint desk tokens for.
    pub operators: Vec<String>,
    /// Names the server certificate is valid for (DNS names or IP addresses).
    pub hosts: Vec<String>,
    /// Token lifetime, seconds.
    pub token_ttl_s: i64,
    /// `iss` of the tokens.
    pub issuer: String,
    /// `aud` of the tokens.
    pub audience: String,
    /// The skills every minted operator is rostered with, in the roster file's form
    /// (`pensions:10;naspi:10`): desks narrow them at login.
    pub roster_skills: String,
    /// The channel capacities every minted operator is rostered with (`voice:1;chat:8`).
    pub roster_channels: String,
}

/// The group a minted operator is rostered in, by the demo's numbering: `op-2..` supplier-a,
/// `op-3..` supplier-b, anyone else internal staff.
#[must_use]
pub fn dev_group(operator: &str) -> &'static str {
    match operator.strip_prefix("op-").and_then(|n| n.chars().next()) {
        Some('2') => "supplier-a",
        Some('3') => "supplier-b",
        _ => "internal",
    }
}

impl Options {
    /// Defaults for a loopback demo in `dir`.
    #[must_use]
    pub fn new(dir: &Path) -> Options {
        Options {
            dir: dir.to_owned(),
            operators: vec!["op-101".into(), "op-201".into()],
            hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            token_ttl_s: 12 * 3600,
            issuer: "https://idp.smista.invalid".into(),
            audience: "smista".into(),
            roster_skills: "consultancy:10;disability:10;family:10;general:10;isee:10;naspi:10;pensions:10".into(),
            roster_channels: "voice:1;video:1;callback:1;chat:8".into(),
        }
    }
}

/// Where each minted file is.
#[derive(Clone, Debug)]
pub struct Minted {
    /// CA certificate (clients trust it; it signs client certificates).
    pub ca: PathBuf,
    /// Server certificate and key.
    pub server_cert: PathBuf,
    /// Server key.
    pub server_key: PathBuf,
    /// The platform's client certificate (CN `platform`).
    pub platform_cert: PathBuf,
    /// Its key.
    pub platform_key: PathBuf,
    /// A client certificate the CA signed that no rule maps (for tests: known CA, unknown subject).
    pub stranger_cert: PathBuf,
    /// Its key.
    pub stranger_key: PathBuf,
    /// The identity provider's public keys.
    pub jwks: PathBuf,
    /// The identity provider's signing key (PKCS#8 DER), to mint more tokens.
    pub signing_key: PathBuf,
    /// Desk tokens, one per operator: (operator, file).
    pub desk_tokens: Vec<(String, PathBuf)>,
    /// A supervisor token.
    pub supervisor_token: PathBuf,
    /// The admin console's API key (roles admin and supervisor).
    pub admin_key: PathBuf,
    /// The platform's API key (role platform).
    pub platform_key_token: PathBuf,
    /// The demo configuration with `[tls]` and `[auth]` pointing at these files, and `[roster]`
    /// at `roster`.
    pub config: PathBuf,
    /// The roster of the minted operators (CSV: `id,name,group,skills,channels,status`), each in
    /// [`dev_group`] with the options' skills and channels.
    pub roster: PathBuf,
}

/// Key id of the minted signing key in the JWKS.
pub const KID: &str = "smista-dev-1";

fn write(path: &Path, data: &[u8], secret: bool) -> Result<(), String> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut f = o.open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(data).map_err(|e| format!("{}: {e}", path.display()))
}

/// Creates `dir` readable by its owner only.
pub fn private_dir(dir: &Path) -> Result<(), String> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir).map_err(|e| format!("{}: {e}", dir.display()))
}

fn random_key(rng: &ring::rand::SystemRandom) -> Result<String, String> {
    let mut b = [0u8; 32];
    rng.fill(&mut b).map_err(|_| "no randomness".to_owned())?;
    Ok(hex::encode(b))
}

/// Hex SHA-256 of an API key, as `[[auth.api_keys]] sha256` wants it.
#[must_use]
pub fn api_key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.trim().as_bytes()))
}

fn cert_err(e: rcgen::Error) -> String {
    format!("certificate: {e}")
}

/// Signs a token for `sub` with `roles` (and `operator`) using the minted key.
pub fn token(
    pkcs8: &[u8],
    opts: &Options,
    sub: &str,
    roles: &[&str],
    operator: Option<&str>,
    now_s: i64,
) -> Result<String, String> {
    let mut claims = serde_json::json!({
        "iss": opts.issuer, "aud": opts.audience, "sub": sub, "roles": roles,
        "iat": now_s, "nbf": now_s - 60, "exp": now_s + opts.token_ttl_s,
    });
    if let Some(op) = operator {
        claims["operator_id"] = serde_json::Value::String(op.to_owned());
    }
    sign_es256(pkcs8, KID, &claims)
}

/// Mints every credential into `opts.dir`, and `smista-secure.toml`: `base_config` (the server's
/// embedded demo, `smista_server::config::DEMO`, for `smista dev-credentials`) with `[tls]` and
/// `[auth]` sections that use them.
pub fn mint(opts: &Options, base_config: &str) -> Result<Minted, String> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair as CertKey, KeyUsagePurpose};
    private_dir(&opts.dir)?;
    let p = |name: &str| opts.dir.join(name);
    let rng = ring::rand::SystemRandom::new();

    let ca_key = CertKey::generate().map_err(cert_err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
    ca_params.distinguished_name.push(DnType::CommonName, "smista development CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(cert_err)?;
    write(&p("ca.pem"), ca_cert.pem().as_bytes(), false)?;
    write(&p("ca.key"), ca_key.serialize_pem().as_bytes(), true)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf = |sans: Vec<String>, cn: &str, client: bool, name: &str| -> Result<(PathBuf, PathBuf), String> {
        let key = CertKey::generate().map_err(cert_err)?;
        let mut params = CertificateParams::new(sans).map_err(cert_err)?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        let cert = params.signed_by(&key, &issuer).map_err(cert_err)?;
        let (c, k) = (p(&format!("{name}.pem")), p(&format!("{name}.key")));
        write(&c, cert.pem().as_bytes(), false)?;
        write(&k, key.serialize_pem().as_bytes(), true)?;
        Ok((c, k))
    };
    let (server_cert, server_key) = leaf(opts.hosts.clone(), "smista", false, "server")?;
    let (platform_cert, platform_key) = leaf(vec!["platform".into()], "platform", true, "platform")?;
    let (stranger_cert, stranger_key) = leaf(vec!["stranger".into()], "stranger", true, "stranger")?;

    let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| "key generation failed".to_owned())?;
    let kp = signature::EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|_| "key generation failed".to_owned())?;
    let jwks = serde_json::json!({ "keys": [es256_jwk(kp.public_key().as_ref(), KID)] });
    write(&p("jwks.json"), jwks.to_string().as_bytes(), false)?;
    write(&p("jwt-signing.pk8"), pkcs8.as_ref(), true)?;

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
    let mut desk_tokens = Vec::new();
    for op in &opts.operators {
        let t = token(pkcs8.as_ref(), opts, &format!("desk-{op}"), &["desk"], Some(op), now)?;
        let f = p(&format!("desk-{op}.jwt"));
        write(&f, t.as_bytes(), true)?;
        desk_tokens.push((op.clone(), f));
    }
    let sup = token(pkcs8.as_ref(), opts, "supervisor-1", &["supervisor"], None, now)?;
    write(&p("supervisor.jwt"), sup.as_bytes(), true)?;

    let admin_key = random_key(&rng)?;
    let platform_api_key = random_key(&rng)?;
    write(&p("admin.apikey"), admin_key.as_bytes(), true)?;
    write(&p("platform.apikey"), platform_api_key.as_bytes(), true)?;

    let mut roster = String::from("id,name,group,skills,channels,status\n");
    for op in &opts.operators {
        roster.push_str(&format!(
            "{op},Operator {op},{},{},{},active\n",
            dev_group(op),
            opts.roster_skills,
            opts.roster_channels
        ));
    }
    write(&p("roster.csv"), roster.as_bytes(), false)?;

    let abs = |f: &Path| std::fs::canonicalize(f).unwrap_or_else(|_| f.to_owned()).display().to_string();
    let mut cfg = String::from(base_config);
    cfg.push_str(&format!(
        r#"
# ---- minted by `smista dev-credentials`: development only ----
[tls]
cert_file = "{server_cert}"
key_file = "{server_key}"
client_ca_file = "{ca}"
client_auth = "optional"

[auth.jwt]
jwks_file = "{jwks}"
issuer = "{issuer}"
audience = "{audience}"

[[auth.api_keys]]
name = "admin-console"
sha256 = "{admin_hash}"
roles = ["admin", "supervisor"]

[[auth.api_keys]]
name = "platform-key"
sha256 = "{platform_hash}"
roles = ["platform"]

[[auth.client_certs]]
subject = "platform"
name = "platform-mtls"
roles = ["platform", "supervisor"]

# Only rostered operators log in, bound to their group; desks narrow skills and channels.
[roster]
mode = "required"
file = "{roster}"
"#,
        server_cert = abs(&server_cert),
        server_key = abs(&server_key),
        ca = abs(&p("ca.pem")),
        jwks = abs(&p("jwks.json")),
        issuer = opts.issuer,
        audience = opts.audience,
        admin_hash = api_key_hash(&admin_key),
        platform_hash = api_key_hash(&platform_api_key),
        roster = abs(&p("roster.csv")),
    ));
    write(&p("smista-secure.toml"), cfg.as_bytes(), false)?;

    Ok(Minted {
        roster: p("roster.csv"),
        ca: p("ca.pem"),
        server_cert,
        server_key,
        platform_cert,
        platform_key,
        stranger_cert,
        stranger_key,
        jwks: p("jwks.json"),
        signing_key: p("jwt-signing.pk8"),
        desk_tokens,
        supervisor_token: p("supervisor.jwt"),
        admin_key: p("admin.apikey"),
        platform_key_token: p("platform.apikey"),
        config: p("smista-secure.toml"),
    })
}

/// Signs `claims` as an ES256 JWT with a PKCS#8 P-256 key (development credentials and tests).
pub fn sign_es256(pkcs8: &[u8], kid: &str, claims: &serde_json::Value) -> Result<String, String> {
    let rng = ring::rand::SystemRandom::new();
    let key = signature::EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
        .map_err(|e| format!("not a P-256 PKCS#8 key: {e}"))?;
    let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": kid});
    let signing_input =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let sig = key.sign(&rng, signing_input.as_bytes()).map_err(|e| format!("signing failed: {e}"))?;
    Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())))
}

/// The JWKS entry of a P-256 public key given as an uncompressed point.
#[must_use]
pub fn es256_jwk(point: &[u8], kid: &str) -> serde_json::Value {
    let (x, y) = if point.len() == 65 { (&point[1..33], &point[33..65]) } else { (&[][..], &[][..]) };
    serde_json::json!({
        "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
    })
}

//! Bearer JWTs of the institute's identity provider: ES256 and RS256 signatures checked with
//! `ring` against the public keys of a JWKS file, and the registered claims (`exp`, `nbf`, `iss`,
//! `aud`) checked against the configuration.
//!
//! The algorithm is taken from the key, never from the token alone: a token's `alg` must match
//! the key its `kid` names (or, without a `kid`, the only key of that algorithm), so a token
//! cannot pick `none`, an HMAC with a public key as secret, or another key type.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::Deserialize;

/// Longest token accepted, in bytes (checked before any decoding).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// A signature algorithm smista verifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    /// ECDSA on P-256 with SHA-256 (`r || s`, 64 bytes).
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, 2048 to 8192-bit keys.
    Rs256,
}

#[derive(Clone, Debug)]
enum KeyMaterial {
    /// Uncompressed SEC1 point (0x04 || x || y).
    Ec(Vec<u8>),
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
}

/// One public key of the identity provider.
#[derive(Clone, Debug)]
pub struct Jwk {
    kid: Option<String>,
    alg: Alg,
    key: KeyMaterial,
}

/// The identity provider's public keys.
#[derive(Clone, Debug, Default)]
pub struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<RawJwk>,
}

#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
}

fn b64(field: &str, v: Option<&String>) -> Result<Vec<u8>, String> {
    let v = v.ok_or_else(|| format!("missing `{field}`"))?;
    URL_SAFE_NO_PAD.decode(v.trim_end_matches('=')).map_err(|e| format!("`{field}` is not base64url: {e}"))
}

impl Jwks {
    /// Parses a JWKS document (`{"keys": [...]}`). Keys of other types or uses (encryption) are
    /// skipped; a malformed signing key is an error.
    pub fn parse(text: &str) -> Result<Jwks, String> {
        let raw: RawJwks = serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut keys = Vec::new();
        for (i, k) in raw.keys.iter().enumerate() {
            if k.use_.as_deref().is_some_and(|u| u != "sig") {
                continue;
            }
            let at = |e: String| format!("keys[{i}]: {e}");
            let jwk = match (k.kty.as_str(), k.alg.as_deref()) {
                ("EC", None | Some("ES256")) => {
                    if k.crv.as_deref() != Some("P-256") {
                        continue;
                    }
                    let (x, y) = (b64("x", k.x.as_ref()).map_err(at)?, b64("y", k.y.as_ref()).map_err(at)?);
                    if x.len() != 32 || y.len() != 32 {
                        return Err(at("P-256 coordinates must be 32 bytes".into()));
                    }
                    let mut point = Vec::with_capacity(65);
                    point.push(4);
                    point.extend_from_slice(&x);
                    point.extend_from_slice(&y);
                    Jwk { kid: k.kid.clone(), alg: Alg::Es256, key: KeyMaterial::Ec(point) }
                }
                ("RSA", None | Some("RS256")) => {
                    let n = b64("n", k.n.as_ref()).map_err(at)?;
                    let e = b64("e", k.e.as_ref()).map_err(at)?;
                    Jwk { kid: k.kid.clone(), alg: Alg::Rs256, key: KeyMaterial::Rsa { n, e } }
                }
                _ => continue,
            };
            keys.push(jwk);
        }
        if keys.is_empty() {
            return Err("no ES256 (P-256) or RS256 signing key".into());
        }
        Ok(Jwks { keys })
    }

    /// Number of usable keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there is no key.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn key_for(&self, alg: Alg, kid: Option<&str>) -> Result<&Jwk, &'static str> {
        match kid {
            Some(kid) => {
                let k = self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)).ok_or("unknown key id")?;
                if k.alg == alg {
                    Ok(k)
                } else {
                    Err("algorithm does not match the key")
                }
            }
            None => {
                let mut of_alg = self.keys.iter().filter(|k| k.alg == alg);
                match (of_alg.next(), of_alg.next()) {
                    (Some(k), None) => Ok(k),
                    (None, _) => Err("no key for the algorithm"),
                    (Some(_), Some(_)) => Err("several keys and no key id"),
                }
            }
        }
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// What the JWT checks need from the configuration.
#[derive(Clone, Debug)]
pub struct Expect<'a> {
    /// Required `iss`.
    pub issuer: &'a str,
    /// Required member of `aud`.
    pub audience: &'a str,
    /// Clock skew tolerated on `exp` and `nbf`, seconds.
    pub leeway_s: i64,
    /// Now, Unix seconds.
    pub now_s: i64,
}

/// A verified token's claims (the whole payload, for the configured claim names) and expiry.
#[derive(Debug)]
pub struct Verified {
    /// The payload.
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// `exp`, Unix seconds.
    pub exp: i64,
}

/// Verifies `token` (compact JWS) against `keys` and `expect`. The error names the first check
/// that failed (never the token).
pub fn verify(token: &str, keys: &Jwks, expect: &Expect<'_>) -> Result<Verified, &'static str> {
    if token.len() > MAX_TOKEN_LEN {
        return Err("token too long");
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err("not a compact JWS");
    };
    let header: Header =
        URL_SAFE_NO_PAD.decode(h).ok().and_then(|b| serde_json::from_slice(&b).ok()).ok_or("malformed header")?;
    let alg = match header.alg.as_str() {
        "ES256" => Alg::Es256,
        "RS256" => Alg::Rs256,
        _ => return Err("unsupported algorithm"),
    };
    let key = keys.key_for(alg, header.kid.as_deref())?;
    let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| "malformed signature")?;
    let signed = &token[..h.len() + 1 + p.len()];
    let ok = match &key.key {
        KeyMaterial::Ec(point) => {
            UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point).verify(signed.as_bytes(), &sig).is_ok()
        }
        KeyMaterial::Rsa { n, e } => RsaPublicKeyComponents { n, e }
            .verify(&signature::RSA_PKCS1_2048_8192_SHA256, signed.as_bytes(), &sig)
            .is_ok(),
    };
    if !ok {
        return Err("bad signature");
    }
    let claims: serde_json::Map<String, serde_json::Value> =
        URL_SAFE_NO_PAD.decode(p).ok().and_then(|b| serde_json::from_slice(&b).ok()).ok_or("malformed claims")?;
    let exp = claims.get("exp").and_then(serde_json::Value::as_i64).ok_or("no exp claim")?;
    if expect.now_s > exp.saturating_add(expect.leeway_s) {
        return Err("expired");
    }
    if let Some(nbf) = claims.get("nbf") {
        let nbf = nbf.as_i64().ok_or("malformed nbf")?;
        if expect.now_s.saturating_add(expect.leeway_s) < nbf {
            return Err("not yet valid");
        }
    }
    if claims.get("iss").and_then(serde_json::Value::as_str) != Some(expect.issuer) {
        return Err("wrong issuer");
    }
    let aud_ok = match claims.get("aud") {
        Some(serde_json::Value::String(a)) => a == expect.audience,
        Some(serde_json::Value::Array(v)) => v.iter().any(|a| a.as_str() == Some(expect.audience)),
        _ => false,
    };
    if !aud_ok {
        return Err("wrong audience");
    }
    Ok(Verified { claims, exp })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::KeyPair;
    use smista_client::mint::{es256_jwk, sign_es256};

    fn keypair() -> (Vec<u8>, Vec<u8>) {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("keygen")
            .as_ref()
            .to_vec();
        let kp = signature::EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng)
            .expect("parse");
        let point = kp.public_key().as_ref().to_vec();
        (pkcs8, point)
    }

    fn expect(now_s: i64) -> Expect<'static> {
        Expect { issuer: "https://idp.example", audience: "smista", leeway_s: 30, now_s }
    }

    fn claims(exp: i64) -> serde_json::Value {
        serde_json::json!({"iss": "https://idp.example", "aud": ["smista", "other"], "sub": "u1", "exp": exp})
    }

    #[test]
    fn a_good_token_verifies_and_every_broken_one_is_refused() {
        let (pkcs8, point) = keypair();
        let (_, other_point) = keypair();
        let jwks = Jwks::parse(&serde_json::json!({"keys": [es256_jwk(&point, "k1")]}).to_string()).expect("jwks");
        let unknown =
            Jwks::parse(&serde_json::json!({"keys": [es256_jwk(&other_point, "k1")]}).to_string()).expect("jwks");
        let t = sign_es256(&pkcs8, "k1", &claims(1_000)).expect("sign");
        assert_eq!(verify(&t, &jwks, &expect(900)).expect("valid").exp, 1_000);
        assert_eq!(verify(&t, &jwks, &expect(1_031)).unwrap_err(), "expired");
        assert_eq!(verify(&t, &unknown, &expect(900)).unwrap_err(), "bad signature");
        let mut wrong_aud = expect(900);
        wrong_aud.audience = "someone-else";
        assert_eq!(verify(&t, &jwks, &wrong_aud).unwrap_err(), "wrong audience");
        let mut wrong_iss = expect(900);
        wrong_iss.issuer = "https://evil.example";
        assert_eq!(verify(&t, &jwks, &wrong_iss).unwrap_err(), "wrong issuer");
        // Tampered payload, alg none, unknown kid, garbage.
        let parts: Vec<&str> = t.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(claims(9_999_999).to_string()), parts[2]);
        assert_eq!(verify(&forged, &jwks, &expect(900)).unwrap_err(), "bad signature");
        let none = format!("{}.{}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#), parts[1]);
        assert_eq!(verify(&none, &jwks, &expect(900)).unwrap_err(), "unsupported algorithm");
        let t2 = sign_es256(&pkcs8, "k2", &claims(1_000)).expect("sign");
        assert_eq!(verify(&t2, &jwks, &expect(900)).unwrap_err(), "unknown key id");
        assert!(verify("a.b", &jwks, &expect(900)).is_err());
        assert!(verify(&"x".repeat(MAX_TOKEN_LEN + 1), &jwks, &expect(900)).is_err());
        let nbf = serde_json::json!({"iss": "https://idp.example", "aud": "smista", "exp": 2_000, "nbf": 1_000});
        let t3 = sign_es256(&pkcs8, "k1", &nbf).expect("sign");
        assert_eq!(verify(&t3, &jwks, &expect(900)).unwrap_err(), "not yet valid");
        assert!(verify(&t3, &jwks, &expect(990)).is_ok(), "within the leeway");
    }

    #[test]
    fn rs256_tokens_verify_against_an_rsa_jwk() {
        // A 2048-bit test key, PKCS#1 DER (tests/fixtures, made with `openssl genpkey -algorithm RSA`).
        let der = include_bytes!("../../../tests/fixtures/rsa-test-key.der");
        let kp = signature::RsaKeyPair::from_der(der).expect("rsa key");
        let public: RsaPublicKeyComponents<Vec<u8>> = kp.public().into();
        let jwk = serde_json::json!({
            "kty": "RSA", "kid": "r1", "alg": "RS256", "use": "sig",
            "n": URL_SAFE_NO_PAD.encode(&public.n), "e": URL_SAFE_NO_PAD.encode(&public.e),
        });
        let jwks = Jwks::parse(&serde_json::json!({"keys": [jwk]}).to_string()).expect("jwks");
        let sign = |claims: &serde_json::Value| {
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"r1"}"#),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            );
            let mut sig = vec![0; kp.public().modulus_len()];
            kp.sign(&signature::RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), input.as_bytes(), &mut sig)
                .expect("sign");
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
        };
        let t = sign(&claims(1_000));
        assert!(verify(&t, &jwks, &expect(900)).is_ok());
        let mut forged = t.clone();
        forged.pop();
        forged.push(if t.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(verify(&forged, &jwks, &expect(900)).unwrap_err(), "bad signature");
        // The same key id presented as ES256 is refused before any signature check.
        let es = format!(
            "{}.{}.AAAA",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","kid":"r1"}"#),
            t.split('.').nth(1).unwrap_or("")
        );
        assert_eq!(verify(&es, &jwks, &expect(900)).unwrap_err(), "algorithm does not match the key");
    }

    #[test]
    fn an_rs256_key_cannot_be_used_for_es256_and_bad_jwks_are_refused() {
        assert!(Jwks::parse("{}").is_err());
        assert!(Jwks::parse(r#"{"keys": []}"#).is_err());
        assert!(Jwks::parse(r#"{"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]}"#).is_err());
        let rsa = r#"{"keys": [{"kty": "RSA", "kid": "r1", "n": "AQAB", "e": "AQAB"}]}"#;
        let jwks = Jwks::parse(rsa).expect("rsa jwks");
        let (pkcs8, _) = keypair();
        let t = sign_es256(&pkcs8, "r1", &claims(1_000)).expect("sign");
        assert_eq!(verify(&t, &jwks, &expect(900)).unwrap_err(), "algorithm does not match the key");
    }
}

//! Credentials: Argon2id password hashing and HS256 bearer tokens, implementing the
//! domain's [`PasswordHasher`] and [`TokenCodec`] ports.
//!
//! Tokens use the JWT compact form (`header.payload.signature`, base64url without padding)
//! so standard tooling can read them, but only HS256 is accepted: the header is checked
//! before anything else, which rules out `alg: none` and algorithm-confusion tricks.

use std::time::Duration;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Params, PasswordVerifier, Version};
use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, TimeZone, Utc};
use folio_domain::accounts::{AccessToken, Password, Principal, Role};
use folio_domain::ids::UserId;
use folio_domain::ports::{PasswordHasher, TokenCodec};
use folio_domain::{Error, Result};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Argon2id password hashing. Hashing costs tens of milliseconds of CPU on purpose, so it
/// runs on tokio's blocking pool and never stalls the async workers serving requests.
#[derive(Debug, Clone)]
pub struct Argon2Hasher {
    params: Params,
}

impl Default for Argon2Hasher {
    fn default() -> Self {
        Self::new()
    }
}

impl Argon2Hasher {
    /// The argon2 crate's default (OWASP-recommended) parameters.
    pub fn new() -> Self {
        Argon2Hasher {
            params: Params::default(),
        }
    }

    /// Minimal parameters, so test suites that register many users stay fast. Never use
    /// these in production: the hashes are cheap to brute-force.
    pub fn fast_for_tests() -> Self {
        // 8 KiB of memory, one pass, one lane: the smallest the algorithm allows.
        let params = Params::new(Params::MIN_M_COST, 1, 1, None).unwrap_or_default();
        Argon2Hasher { params }
    }
}

#[async_trait]
impl PasswordHasher for Argon2Hasher {
    async fn hash(&self, password: &Password) -> Result<String> {
        let password = password.expose().to_owned();
        let params = self.params.clone();
        tokio::task::spawn_blocking(move || {
            let salt = SaltString::generate(&mut OsRng);
            let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
            argon2::PasswordHasher::hash_password(&argon, password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| Error::internal(format!("password hashing failed: {e}")))
        })
        .await
        .map_err(|e| Error::internal(format!("password hashing task failed: {e}")))?
    }

    async fn verify(&self, password: &str, hash: &str) -> bool {
        let password = password.to_owned();
        let hash = hash.to_owned();
        // The cost parameters travel inside the PHC string, so a hash made with other
        // parameters (or by another instance) still verifies.
        tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .map(|parsed| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false)
    }
}

type HmacSha256 = Hmac<Sha256>;

/// The only header folio issues and accepts.
const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

#[derive(Debug, Deserialize)]
struct Header {
    alg: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// The user id, as a decimal string (JWT's `sub` is a string).
    sub: String,
    role: String,
    iat: i64,
    exp: i64,
}

/// HS256 bearer tokens signed with a shared secret. Every bookstore instance given the same
/// secret accepts the others' tokens.
#[derive(Clone)]
pub struct HmacTokens {
    key: Vec<u8>,
    ttl: chrono::Duration,
}

impl std::fmt::Debug for HmacTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a secret: never print it.
        f.debug_struct("HmacTokens")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl HmacTokens {
    /// How long a token lives unless configured otherwise.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(12 * 60 * 60);
    /// The shortest secret accepted: HS256 keys should carry at least 128 bits.
    pub const MIN_SECRET_BYTES: usize = 16;

    /// Tokens signed with `secret`, valid for [`Self::DEFAULT_TTL`].
    pub fn new(secret: impl Into<Vec<u8>>) -> Result<Self> {
        let key = secret.into();
        if key.len() < Self::MIN_SECRET_BYTES {
            return Err(Error::invalid(format!(
                "the token secret must be at least {} bytes",
                Self::MIN_SECRET_BYTES
            )));
        }
        Ok(HmacTokens {
            key,
            ttl: chrono::Duration::hours(12),
        })
    }

    /// Sets how long issued tokens stay valid.
    pub fn with_ttl(mut self, ttl: Duration) -> Result<Self> {
        self.ttl = chrono::Duration::from_std(ttl)
            .ok()
            .filter(|d| *d > chrono::Duration::zero())
            .ok_or_else(|| Error::invalid("the token lifetime must be positive and finite"))?;
        Ok(self)
    }

    fn mac(&self) -> Result<HmacSha256> {
        HmacSha256::new_from_slice(&self.key).map_err(|e| Error::internal(format!("hmac key: {e}")))
    }
}

fn malformed() -> Error {
    Error::Unauthenticated("the bearer token is malformed".into())
}

impl TokenCodec for HmacTokens {
    fn issue(&self, principal: Principal, now: DateTime<Utc>) -> Result<AccessToken> {
        // Whole seconds, as JWT's NumericDate; `expires_at` matches what `exp` says.
        let iat = now.timestamp();
        let expires_at = Utc
            .timestamp_opt(iat, 0)
            .single()
            .and_then(|t| t.checked_add_signed(self.ttl))
            .ok_or_else(|| Error::internal("token expiry out of range"))?;
        let claims = Claims {
            sub: principal.user_id.to_string(),
            role: principal.role.as_str().to_string(),
            iat,
            exp: expires_at.timestamp(),
        };
        let payload = serde_json::to_vec(&claims).map_err(Error::internal)?;
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(HEADER),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let mut mac = self.mac()?;
        mac.update(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        Ok(AccessToken {
            token: format!("{signing_input}.{signature}"),
            expires_at,
            principal,
        })
    }

    fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Principal> {
        let (signing_input, signature) = token.rsplit_once('.').ok_or_else(malformed)?;
        let (header, payload) = signing_input.split_once('.').ok_or_else(malformed)?;
        if payload.contains('.') {
            return Err(malformed());
        }
        let header: Header = URL_SAFE_NO_PAD
            .decode(header)
            .ok()
            .and_then(|h| serde_json::from_slice(&h).ok())
            .ok_or_else(malformed)?;
        if header.alg != "HS256" {
            return Err(Error::Unauthenticated(format!(
                "bearer tokens must be signed with HS256, not {:?}",
                header.alg
            )));
        }
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| malformed())?;
        let mut mac = self.mac()?;
        mac.update(signing_input.as_bytes());
        // verify_slice compares in constant time, so timing reveals nothing about the key.
        mac.verify_slice(&signature).map_err(|_| {
            Error::Unauthenticated("the bearer token's signature is invalid".into())
        })?;
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|p| serde_json::from_slice(&p).ok())
            .ok_or_else(malformed)?;
        if now.timestamp() >= claims.exp {
            let at = Utc
                .timestamp_opt(claims.exp, 0)
                .single()
                .map_or_else(|| claims.exp.to_string(), |t| t.to_rfc3339());
            return Err(Error::Unauthenticated(format!(
                "the bearer token expired at {at}; sign in again"
            )));
        }
        let user_id = claims.sub.parse::<UserId>().map_err(|_| malformed())?;
        let role = Role::parse(&claims.role).ok_or_else(malformed)?;
        Ok(Principal { user_id, role })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> HmacTokens {
        HmacTokens::new(b"0123456789abcdef0123456789abcdef".to_vec()).expect("secret")
    }

    fn alice() -> Principal {
        Principal {
            user_id: UserId(7),
            role: Role::User,
        }
    }

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0)
            .single()
            .expect("valid time")
    }

    #[test]
    fn issued_token_round_trips_until_it_expires() {
        let codec = tokens();
        let tok = codec.issue(alice(), t0()).expect("issue");
        assert_eq!(tok.expires_at, t0() + chrono::Duration::hours(12));
        assert_eq!(tok.token.split('.').count(), 3);
        assert!(!tok.token.contains('='), "base64url without padding");
        assert_eq!(codec.verify(&tok.token, t0()).expect("valid"), alice());
        let late = t0() + chrono::Duration::hours(12);
        let err = codec.verify(&tok.token, late).expect_err("expired");
        assert!(
            matches!(&err, Error::Unauthenticated(m) if m.contains("expired")),
            "{err}"
        );
    }

    #[test]
    fn payload_is_standard_jwt_claims() {
        let tok = tokens().issue(alice(), t0()).expect("issue");
        let payload = tok.token.split('.').nth(1).expect("payload");
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json");
        assert_eq!(
            claims,
            serde_json::json!({"sub": "7", "role": "USER", "iat": 1735732800, "exp": 1735776000})
        );
    }

    #[test]
    fn tampering_and_garbage_are_unauthenticated() {
        let codec = tokens();
        let tok = codec.issue(alice(), t0()).expect("issue").token;
        let mut parts: Vec<&str> = tok.split('.').collect();
        let admin_claims = URL_SAFE_NO_PAD
            .encode(r#"{"sub":"7","role":"ADMIN","iat":1735732800,"exp":1735776000}"#);
        parts[1] = &admin_claims;
        let forged = parts.join(".");
        let other = HmacTokens::new(b"another secret of enough length".to_vec()).expect("secret");
        let foreign = other.issue(alice(), t0()).expect("issue").token;
        let none_alg = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            tok.split('.').nth(1).expect("payload")
        );
        for bad in [
            forged.as_str(),
            foreign.as_str(),
            "",
            "a.b",
            "a.b.c",
            "...",
            none_alg.as_str(),
        ] {
            let err = codec.verify(bad, t0()).expect_err(bad);
            assert!(matches!(err, Error::Unauthenticated(_)), "{bad:?}: {err}");
        }
    }

    #[test]
    fn short_secrets_and_bad_ttls_are_refused() {
        assert!(HmacTokens::new(b"short".to_vec()).is_err());
        assert!(tokens().with_ttl(Duration::ZERO).is_err());
        let codec = tokens().with_ttl(Duration::from_secs(60)).expect("ttl");
        let tok = codec.issue(alice(), t0()).expect("issue");
        assert_eq!(tok.expires_at, t0() + chrono::Duration::seconds(60));
    }

    #[tokio::test]
    async fn argon2_hashes_verify_and_reject() {
        let hasher = Argon2Hasher::fast_for_tests();
        let pw = Password::parse("correct horse").expect("policy");
        let hash = hasher.hash(&pw).await.expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert!(hasher.verify("correct horse", &hash).await);
        assert!(!hasher.verify("wrong horse!", &hash).await);
        assert!(!hasher.verify("correct horse", "not a hash").await);
        // A hash made with other parameters still verifies.
        assert!(Argon2Hasher::new().verify("correct horse", &hash).await);
    }
}

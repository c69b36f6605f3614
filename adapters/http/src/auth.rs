//! Credentials: Argon2id password hashing and HS256 bearer tokens, implementing the
//! domain's [`PasswordHasher`] and [`TokenCodec`] ports.
//!
//! Tokens use the JWT compact form (`header.payload.signature`, base64url without padding)
//! so standard tooling can read them, but only HS256 is accepted: the header is checked
//! before anything else, which rules out `alg: none` and algorithm-confusion tricks.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{self, Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
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
use tokio::sync::Semaphore;

/// Argon2id password hashing. Hashing costs tens of milliseconds of CPU and, with the
/// default parameters, 19 MiB of memory on purpose, so it runs on tokio's blocking pool,
/// never on the async workers, and under a bound:
/// - at most `workers` hashes run at once (default: one per core), so a burst of sign-ins
///   costs `workers` × 19 MiB, not one hash's memory per request;
/// - at most `queue` more wait their turn (default: 16 per worker); beyond that a request
///   is refused at once with [`Error::Unavailable`] (503 with `Retry-After`) instead of
///   piling up.
#[derive(Debug, Clone)]
pub struct Argon2Hasher {
    params: Params,
    gate: Arc<HashGate>,
    /// A hash of a random password made with `params`, verified against when a sign-in
    /// names no account, so it costs what a wrong password costs.
    dummy: Arc<OnceLock<String>>,
}

#[derive(Debug)]
struct HashGate {
    /// Running plus waiting: refused beyond.
    admitted: Arc<Semaphore>,
    /// Running.
    running: Arc<Semaphore>,
    /// Argon2's working memory, one buffer per running hash, reused: hashing allocates
    /// nothing after the first few sign-ins, so the process's memory stays at `workers`
    /// buffers whatever the allocator would do with freed 19 MiB blocks (glibc keeps them
    /// per thread arena, which grew RSS by hundreds of MiB).
    memory: Mutex<Vec<Vec<Block>>>,
}

impl HashGate {
    fn take_memory(&self) -> Vec<Block> {
        self.memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default()
    }

    fn give_back(&self, mut blocks: Vec<Block>) {
        if blocks.len() > DEFAULT_BLOCKS {
            // A hash with larger parameters than ours: do not keep its memory.
            blocks = Vec::new();
        }
        self.memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(blocks);
    }
}

/// Blocks (KiB) of the default parameters.
const DEFAULT_BLOCKS: usize = Params::DEFAULT_M_COST as usize;
/// The most memory a stored hash may ask for: 256 MiB. A hash asking more is treated as
/// unreadable rather than allowed to exhaust memory.
const MAX_BLOCKS: usize = 256 * 1024;

impl Default for Argon2Hasher {
    fn default() -> Self {
        Self::new()
    }
}

/// Waiting hashes allowed per running one.
const QUEUE_PER_WORKER: usize = 16;

fn busy() -> Error {
    Error::Unavailable(
        "password hashing",
        "too many sign-ins and registrations are waiting".into(),
    )
}

impl Argon2Hasher {
    /// The argon2 crate's default (OWASP-recommended) parameters: Argon2id, 19 MiB, two
    /// passes, one lane. One running hash per core, 16 waiting per core.
    pub fn new() -> Self {
        let workers = std::thread::available_parallelism().map_or(1, usize::from);
        Self::with_params(Params::default(), workers, workers * QUEUE_PER_WORKER)
    }

    /// Minimal parameters, so test suites that register many users stay fast. Never use
    /// these in production: the hashes are cheap to brute-force.
    pub fn fast_for_tests() -> Self {
        // 8 KiB of memory, one pass, one lane: the smallest the algorithm allows.
        let params = Params::new(Params::MIN_M_COST, 1, 1, None).unwrap_or_default();
        Self::with_params(params, 4, 64)
    }

    /// Sets how many hashes may run at once (at least one) and how many more may wait.
    pub fn with_limits(self, workers: usize, queue: usize) -> Self {
        Self::with_params(self.params, workers, queue)
    }

    fn with_params(params: Params, workers: usize, queue: usize) -> Self {
        let workers = workers.clamp(1, Semaphore::MAX_PERMITS / 2);
        let queue = queue.min(Semaphore::MAX_PERMITS / 2);
        Argon2Hasher {
            params,
            gate: Arc::new(HashGate {
                admitted: Arc::new(Semaphore::new(workers + queue)),
                running: Arc::new(Semaphore::new(workers)),
                memory: Mutex::new(Vec::new()),
            }),
            dummy: Arc::new(OnceLock::new()),
        }
    }

    /// Runs `work` on the blocking pool once a worker is free, or refuses at once when
    /// the queue is full. `work` gets a working-memory buffer to hash in.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Vec<Block>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let admitted = self
            .gate
            .admitted
            .clone()
            .try_acquire_owned()
            .map_err(|_| busy())?;
        let running = self
            .gate
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| busy())?;
        // The permits move into the blocking work and are released when it ends, even if
        // this future is dropped (the client went away): blocking work cannot be
        // cancelled, so it keeps counting against the bound.
        let gate = self.gate.clone();
        tokio::task::spawn_blocking(move || {
            let mut memory = gate.take_memory();
            let out = work(&mut memory);
            gate.give_back(memory);
            drop((running, admitted));
            out
        })
        .await
        .map_err(|e| Error::internal(format!("password hashing task failed: {e}")))?
    }
}

/// Argon2 of `password` with `salt`, computed in `memory`: what the argon2 crate's
/// `hash_password` does, without allocating its working memory each time.
fn compute<'a>(
    algorithm: Algorithm,
    version: Version,
    params: Params,
    password: &[u8],
    salt: Salt<'a>,
    memory: &mut Vec<Block>,
) -> password_hash::Result<PasswordHash<'a>> {
    let blocks = params.block_count();
    if blocks > MAX_BLOCKS {
        return Err(password_hash::Error::ParamValueInvalid(
            password_hash::errors::InvalidValue::TooLong,
        ));
    }
    memory.resize(blocks, Block::default());
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_buf)?;
    let output_len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let argon = Argon2::new(algorithm, version, params.clone());
    let output = Output::init_with(output_len, |out| {
        argon
            .hash_password_into_with_memory(password, salt_bytes, out, &mut memory[..])
            .map_err(Into::into)
    })?;
    Ok(PasswordHash {
        algorithm: algorithm.ident(),
        version: Some(version.into()),
        params: ParamsString::try_from(&params)?,
        salt: Some(salt),
        hash: Some(output),
    })
}

fn hash_with(params: Params, password: &[u8], memory: &mut Vec<Block>) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    compute(
        Algorithm::Argon2id,
        Version::V0x13,
        params,
        password,
        salt.as_salt(),
        memory,
    )
    .map(|h| h.to_string())
    .map_err(|e| Error::internal(format!("password hashing failed: {e}")))
}

/// True when `password` matches the PHC string `hash`. The algorithm and cost parameters
/// travel inside the string, so a hash made with other parameters (or by another
/// instance) verifies.
fn verify_phc(password: &[u8], hash: &str, memory: &mut Vec<Block>) -> bool {
    let mut check = || -> password_hash::Result<bool> {
        let parsed = PasswordHash::new(hash)?;
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return Ok(false);
        };
        let algorithm = Algorithm::try_from(parsed.algorithm)?;
        let version = parsed
            .version
            .map(Version::try_from)
            .transpose()?
            .unwrap_or_default();
        let params = Params::try_from(&parsed)?;
        let computed = compute(algorithm, version, params, password, salt, memory)?;
        // `Output`'s equality is constant-time.
        Ok(computed.hash == Some(expected))
    };
    check().unwrap_or(false)
}

#[async_trait]
impl PasswordHasher for Argon2Hasher {
    async fn hash(&self, password: &Password) -> Result<String> {
        let password = password.expose().to_owned();
        let params = self.params.clone();
        self.run(move |memory| hash_with(params, password.as_bytes(), memory))
            .await
    }

    async fn verify(&self, password: &str, hash: &str) -> Result<bool> {
        let password = password.to_owned();
        let hash = hash.to_owned();
        self.run(move |memory| Ok(verify_phc(password.as_bytes(), &hash, memory)))
            .await
    }

    async fn verify_unknown(&self, password: &str) -> Result<()> {
        let password = password.to_owned();
        let params = self.params.clone();
        let dummy = self.dummy.clone();
        self.run(move |memory| {
            let hash = match dummy.get() {
                Some(h) => h.clone(),
                None => {
                    // The first unknown sign-in pays for one hash more; every later one
                    // costs exactly a verification.
                    let mut random = [0u8; 32];
                    OsRng.fill_bytes(&mut random);
                    let made = hash_with(params, &random, memory)?;
                    dummy.get_or_init(|| made).clone()
                }
            };
            std::hint::black_box(verify_phc(password.as_bytes(), &hash, memory));
            Ok(())
        })
        .await
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
        assert!(hasher.verify("correct horse", &hash).await.expect("runs"));
        assert!(!hasher.verify("wrong horse!", &hash).await.expect("runs"));
        assert!(!hasher
            .verify("correct horse", "not a hash")
            .await
            .expect("runs"));
        // A hash made with other parameters still verifies.
        assert!(Argon2Hasher::new()
            .verify("correct horse", &hash)
            .await
            .expect("runs"));
        hasher.verify_unknown("anything").await.expect("runs");
        assert!(hasher
            .dummy
            .get()
            .is_some_and(|h| h.starts_with("$argon2id$")));
    }

    #[test]
    fn hashes_interoperate_with_the_argon2_crate() {
        use argon2::{PasswordHasher as _, PasswordVerifier as _};
        let params = Params::new(Params::MIN_M_COST, 1, 1, None).expect("params");
        let mut memory = Vec::new();
        let ours = hash_with(params.clone(), b"pw", &mut memory).expect("hash");
        let parsed = PasswordHash::new(&ours).expect("PHC");
        assert!(Argon2::default().verify_password(b"pw", &parsed).is_ok());
        let salt = SaltString::generate(&mut OsRng);
        let theirs = Argon2::new(Algorithm::Argon2i, Version::V0x10, params)
            .hash_password(b"pw", &salt)
            .expect("hash")
            .to_string();
        assert!(verify_phc(b"pw", &theirs, &mut memory));
        assert!(!verify_phc(b"pW", &theirs, &mut memory));
        // A stored hash asking for more than 256 MiB is refused, not computed.
        let greedy = "$argon2id$v=19$m=4194304,t=1,p=1$c29tZXNhbHQ$iekCn0Y3spW+sCcFanM2xBT63UP2sghkUoHLIUpWRS8";
        assert!(!verify_phc(b"pw", greedy, &mut memory));
        assert!(memory.len() <= Params::MIN_M_COST as usize * 8);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hashing_is_bounded_and_refuses_beyond_the_queue() {
        // One running, one waiting: of three at once, one is refused with Unavailable.
        let hasher = Argon2Hasher::new().with_limits(1, 1);
        let pw = Password::parse("correct horse").expect("policy");
        let (a, b, c) = tokio::join!(hasher.hash(&pw), hasher.hash(&pw), hasher.hash(&pw));
        let refused: Vec<Error> = [a, b, c].into_iter().filter_map(Result::err).collect();
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(
            matches!(&refused[0], Error::Unavailable("password hashing", _)),
            "{refused:?}"
        );
        // Once they finish, the permits are back.
        assert_eq!(hasher.gate.admitted.available_permits(), 2);
        assert_eq!(hasher.gate.running.available_permits(), 1);
    }
}

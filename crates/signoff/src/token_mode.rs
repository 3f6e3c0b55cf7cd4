//! Token mode: short-lived signed access tokens and rotating refresh
//! tokens, both tied to a server-side session, so that ending the session
//! ends everything derived from it.
//!
//! - **Access tokens** are JWTs (RFC 9068 style: header `typ: at+jwt`;
//!   claims `iss`, `aud`, `sub`, `sid`, `client_id`, `iat`, `exp`, `jti`),
//!   signed with Ed25519 (`EdDSA`, the default) or P-256 (`ES256`). Their
//!   signature and claims are checked without the store
//!   ([`Tokens::verify_access`]); [`Tokens::authenticate`] then checks the
//!   `sid` against the session, read through the same cache and revocation
//!   bus as a cookie. A token whose session has ended is refused at once,
//!   not at `exp`.
//! - **Refresh tokens** are opaque: `HANDLE.N.NONCE.TAG`, where `N` counts
//!   the refreshes of the session, `NONCE` is 256 random bits and `TAG` is
//!   an HMAC over the rest with a key kept in the store. The session keeps
//!   the SHA-256 of the one live refresh token (never the token itself) and
//!   `N`. [`Tokens::refresh`] replaces it in one conditional write, so of
//!   two refreshes with the same token exactly one wins. A token with a
//!   valid tag but an older `N` was issued here and already used: that is
//!   reuse (RFC 9700 §4.14.2), and it ends the session, with every token
//!   of its family. The tag is what makes "older" provable without keeping
//!   every used token: a guess cannot end someone's session.
//! - **Keys** live in the store ([`crate::store::StateStore`]), created on
//!   first use and shared by every node; [`rotate_keys`] adds a new signing
//!   key and keeps the previous one for verification.
//!
//! Verification follows RFC 8725: the algorithm comes from our key, never
//! from the token (so `none` and HS256-with-the-public-key fail), `kid`
//! must name one of our keys, and `jku`, `x5u` and `jwk` headers are never
//! looked at.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use quick_cache::sync::Cache;
use rand::rngs::OsRng;
use rand::RngCore;
use ring::signature::KeyPair as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::audit::Actor;
use crate::clock::Timestamp;
use crate::session::{Session, SessionError, Sessions};
use crate::session_token::{SessionHandle, SessionToken};
use crate::store::{StateStore, StoreError, WriteOutcome};

/// The session data key holding the refresh state (hashed).
pub const REFRESH_KEY: &str = "signoff.refresh";
/// The session data key holding the client the tokens were issued to.
pub const CLIENT_KEY: &str = "signoff.client";
/// The client a token is issued to when the client names none.
pub const DEFAULT_CLIENT: &str = "default";
/// Longest access or refresh token looked at; longer ones are refused
/// unread.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Longest client id.
pub const MAX_CLIENT_ID_BYTES: usize = 64;
/// The state record holding the keys.
const KEYS_STATE: &str = "token_keys";
/// Signing keys kept: the current one and the one before it.
const KEEP_SIGNING_KEYS: usize = 2;
/// Keys are re-read this often, so a rotation on another node is picked up.
const KEYS_MAX_AGE: Duration = Duration::from_secs(30);
/// An unknown `kid` re-reads the keys at most this often.
const UNKNOWN_KID_RELOAD: Duration = Duration::from_secs(1);
/// How far in the future `iat` may be (clock differences between nodes).
const IAT_SKEW: Duration = Duration::from_secs(60);
/// Verified access tokens remembered (signature checks are the cost).
const VERIFIED_CAPACITY: usize = 50_000;
/// Bytes of the refresh token's HMAC tag.
const TAG_BYTES: usize = 16;

type HmacSha256 = Hmac<Sha256>;

/// The signature algorithm of access tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SigningAlgorithm {
    /// Ed25519 (RFC 8037). The default.
    #[default]
    EdDSA,
    /// ECDSA on P-256 with SHA-256.
    ES256,
}

impl SigningAlgorithm {
    /// The JOSE name: `EdDSA` or `ES256`.
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlgorithm::EdDSA => "EdDSA",
            SigningAlgorithm::ES256 => "ES256",
        }
    }

    fn jwt(self) -> Algorithm {
        match self {
            SigningAlgorithm::EdDSA => Algorithm::EdDSA,
            SigningAlgorithm::ES256 => Algorithm::ES256,
        }
    }
}

impl std::str::FromStr for SigningAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "EdDSA" | "eddsa" | "Ed25519" | "ed25519" => Ok(SigningAlgorithm::EdDSA),
            "ES256" | "es256" => Ok(SigningAlgorithm::ES256),
            other => Err(format!(
                "unknown signing algorithm {other:?}: use EdDSA or ES256"
            )),
        }
    }
}

/// Settings of [`Tokens`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TokenOptions {
    /// `iss` of issued tokens, and the only one accepted.
    pub issuer: String,
    /// `aud` of issued tokens, and the only one accepted.
    pub audience: String,
    /// Lifetime of access tokens. Default 5 minutes.
    pub access_ttl: Duration,
    /// How long after a refresh the refresh token just used may be used
    /// once more without counting as reuse (for a client that lost the
    /// response). Default zero: any second use is reuse.
    pub refresh_grace: Duration,
    /// Algorithm of keys created here (first start, rotation).
    pub algorithm: SigningAlgorithm,
    /// Clients that authenticate (confidential clients): their refresh
    /// tokens refresh only when [`Tokens::refresh`] is told that client
    /// authenticated. Empty by default.
    pub confidential_clients: Vec<String>,
}

impl TokenOptions {
    /// Options with the given issuer and audience and the defaults.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            access_ttl: Duration::from_secs(300),
            refresh_grace: Duration::ZERO,
            algorithm: SigningAlgorithm::EdDSA,
            confidential_clients: Vec::new(),
        }
    }
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// The user id.
    pub sub: String,
    /// The session's public handle.
    pub sid: String,
    /// The client the token was issued to.
    pub client_id: String,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Expires at, seconds since the epoch.
    pub exp: i64,
    /// Not before, if present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// A unique id.
    pub jti: String,
}

/// A freshly issued access and refresh token. `Debug` hides both.
#[derive(Clone)]
pub struct TokenPair {
    /// The signed access token.
    pub access_token: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The refresh token.
    pub refresh_token: String,
    /// The session both belong to.
    pub session: Session,
}

impl fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenPair")
            .field("expires_in", &self.expires_in)
            .field("session", &self.session.handle)
            .finish_non_exhaustive()
    }
}

/// Why an access token was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// Longer than [`MAX_TOKEN_BYTES`].
    #[error("the token is too long")]
    Oversized,
    /// Not three base64url segments of JSON.
    #[error("the token is malformed")]
    Malformed,
    /// `typ` is not `at+jwt`.
    #[error("the token is not an access token (typ)")]
    WrongType,
    /// No `kid`, or one that names none of our keys.
    #[error("the token names an unknown key")]
    UnknownKey,
    /// `alg` is not the algorithm of the key it names.
    #[error("the token's algorithm does not match its key")]
    WrongAlgorithm,
    /// The signature does not verify.
    #[error("the token's signature is invalid")]
    BadSignature,
    /// Wrong `iss`.
    #[error("the token is from another issuer")]
    WrongIssuer,
    /// Wrong `aud`.
    #[error("the token is for another audience")]
    WrongAudience,
    /// Missing or unreadable claims.
    #[error("the token's claims are invalid")]
    BadClaims,
    /// Past `exp`.
    #[error("the token has expired")]
    Expired,
    /// Before `nbf`, or `iat` in the future.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// The session it belongs to has ended (or its user changed).
    #[error("the token's session has ended")]
    SessionEnded,
    /// The store could not answer; fail closed.
    #[error("the session store is unavailable")]
    Store(#[source] StoreError),
}

/// Why a refresh failed (RFC 6749 `invalid_grant` unless the store failed).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GrantError {
    /// Malformed, not issued here, for another client, or its session ended.
    #[error("invalid refresh token: {0}")]
    Invalid(&'static str),
    /// An already used refresh token: the session has been ended.
    #[error("refresh token reused; the session has been ended")]
    Reused,
    /// The store could not answer; nothing is known to have happened.
    #[error("the session store is unavailable")]
    Store(#[source] StoreError),
}

pub use crate::session_keys::KeysError;

impl From<SessionError> for GrantError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Store(e) => GrantError::Store(e),
            SessionError::Expired(_) => GrantError::Invalid("the session has expired"),
            SessionError::Conflict => {
                GrantError::Invalid("the session changed at the same time; try again")
            }
            _ => GrantError::Invalid("the session has ended"),
        }
    }
}

// ---------------------------------------------------------------- keys --

#[derive(Serialize, Deserialize)]
struct StoredKeys {
    /// Newest first; the first signs.
    signing: Vec<StoredKey>,
    /// Base64 of the 32-byte refresh-token MAC key.
    refresh_mac: String,
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    alg: String,
    /// Base64 PKCS#8.
    private_pkcs8: String,
    /// Base64 of the raw public key (32 bytes Ed25519, 65 bytes P-256).
    public: String,
    created_at: i64,
}

/// A public signing key, as listed by [`list_keys`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    /// Its `kid` (the RFC 7638 thumbprint).
    pub kid: String,
    /// `EdDSA` or `ES256`.
    pub alg: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// Whether it signs new tokens (the newest); the other only verifies.
    pub current: bool,
}

struct SigningKey {
    kid: String,
    alg: SigningAlgorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: serde_json::Value,
}

struct KeySet {
    version: u64,
    signing: Vec<SigningKey>,
    mac: [u8; 32],
}

impl KeySet {
    fn key(&self, kid: &str) -> Option<&SigningKey> {
        self.signing.iter().find(|k| k.kid == kid)
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn new_key(alg: SigningAlgorithm, now: Timestamp) -> Result<StoredKey, KeysError> {
    let rng = ring::rand::SystemRandom::new();
    let (pkcs8, public) = match alg {
        SigningAlgorithm::EdDSA => {
            let doc = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| KeysError::Crypto)?;
            let pair = ring::signature::Ed25519KeyPair::from_pkcs8(doc.as_ref())
                .map_err(|_| KeysError::Crypto)?;
            (doc.as_ref().to_vec(), pair.public_key().as_ref().to_vec())
        }
        SigningAlgorithm::ES256 => {
            let a = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
            let doc = ring::signature::EcdsaKeyPair::generate_pkcs8(a, &rng)
                .map_err(|_| KeysError::Crypto)?;
            let pair = ring::signature::EcdsaKeyPair::from_pkcs8(a, doc.as_ref(), &rng)
                .map_err(|_| KeysError::Crypto)?;
            (doc.as_ref().to_vec(), pair.public_key().as_ref().to_vec())
        }
    };
    let kid = thumbprint(alg, &public)?;
    Ok(StoredKey {
        kid,
        alg: alg.as_str().to_owned(),
        private_pkcs8: STANDARD.encode(pkcs8),
        public: STANDARD.encode(public),
        created_at: now.as_millis(),
    })
}

/// The public JWK members (without `kid`), in RFC 7638 order.
fn jwk_members(alg: SigningAlgorithm, public: &[u8]) -> Result<serde_json::Value, KeysError> {
    match alg {
        SigningAlgorithm::EdDSA if public.len() == 32 => Ok(serde_json::json!({
            "crv": "Ed25519", "kty": "OKP", "x": b64(public),
        })),
        SigningAlgorithm::ES256 if public.len() == 65 && public[0] == 4 => Ok(serde_json::json!({
            "crv": "P-256", "kty": "EC", "x": b64(&public[1..33]), "y": b64(&public[33..]),
        })),
        _ => Err(KeysError::Corrupt("public key of the wrong size".into())),
    }
}

/// RFC 7638 thumbprint: SHA-256 of the required members, sorted, no spaces
/// (`serde_json` writes object keys in order).
fn thumbprint(alg: SigningAlgorithm, public: &[u8]) -> Result<String, KeysError> {
    let members = jwk_members(alg, public)?;
    Ok(b64(&Sha256::digest(members.to_string().as_bytes())))
}

fn load_key(stored: &StoredKey) -> Result<SigningKey, KeysError> {
    let corrupt = |what: &str| KeysError::Corrupt(format!("key {}: {what}", stored.kid));
    let alg: SigningAlgorithm = stored.alg.parse().map_err(|_| corrupt("unknown alg"))?;
    let pkcs8 = STANDARD
        .decode(&stored.private_pkcs8)
        .map_err(|_| corrupt("private key is not base64"))?;
    let public = STANDARD
        .decode(&stored.public)
        .map_err(|_| corrupt("public key is not base64"))?;
    let members = jwk_members(alg, &public)?;
    let (encoding, decoding) = match alg {
        SigningAlgorithm::EdDSA => (
            EncodingKey::from_ed_der(&pkcs8),
            DecodingKey::from_ed_components(members["x"].as_str().unwrap_or_default())
                .map_err(|_| corrupt("public key"))?,
        ),
        SigningAlgorithm::ES256 => (
            EncodingKey::from_ec_der(&pkcs8),
            DecodingKey::from_ec_components(
                members["x"].as_str().unwrap_or_default(),
                members["y"].as_str().unwrap_or_default(),
            )
            .map_err(|_| corrupt("public key"))?,
        ),
    };
    let mut jwk = members;
    jwk["kid"] = serde_json::Value::from(stored.kid.clone());
    jwk["alg"] = serde_json::Value::from(alg.as_str());
    jwk["use"] = serde_json::Value::from("sig");
    Ok(SigningKey {
        kid: stored.kid.clone(),
        alg,
        encoding,
        decoding,
        jwk,
    })
}

fn parse_keys(bytes: &[u8]) -> Result<StoredKeys, KeysError> {
    // Not the error's text, which could quote a private key.
    serde_json::from_slice(bytes).map_err(|e| {
        KeysError::Corrupt(format!(
            "not the expected JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

fn build_keyset(stored: &StoredKeys, version: u64) -> Result<KeySet, KeysError> {
    let signing = stored
        .signing
        .iter()
        .map(load_key)
        .collect::<Result<Vec<_>, _>>()?;
    if signing.is_empty() {
        return Err(KeysError::Corrupt("no signing key".into()));
    }
    let mac: [u8; 32] = STANDARD
        .decode(&stored.refresh_mac)
        .ok()
        .and_then(|m| m.try_into().ok())
        .ok_or_else(|| KeysError::Corrupt("refresh MAC key is not 32 bytes".into()))?;
    Ok(KeySet {
        version,
        signing,
        mac,
    })
}

/// Reads the keys, creating them (one signing key of `alg` and a refresh
/// MAC key) if the store has none.
async fn load_or_create(
    state: &dyn StateStore,
    alg: SigningAlgorithm,
    now: Timestamp,
) -> Result<KeySet, KeysError> {
    for _ in 0..5 {
        if let Some(v) = state.get_state(KEYS_STATE).await? {
            return build_keyset(&parse_keys(&v.value)?, v.version);
        }
        let mut mac = [0u8; 32];
        OsRng.fill_bytes(&mut mac);
        let fresh = StoredKeys {
            signing: vec![new_key(alg, now)?],
            refresh_mac: STANDARD.encode(mac),
        };
        let bytes = serde_json::to_vec(&fresh).map_err(|e| KeysError::Corrupt(e.to_string()))?;
        if state.put_state(KEYS_STATE, &bytes, None).await? {
            tracing::info!(target: "signoff::token_mode", kid = %fresh.signing[0].kid, alg = alg.as_str(), "created the token signing key");
            return build_keyset(&fresh, 1);
        }
        // Another node created them first: read theirs.
    }
    Err(KeysError::Contended)
}

/// Adds a new signing key of `alg`, which signs from now on; the previous
/// one still verifies, and older ones are dropped. Nodes pick the new key
/// up within 30 seconds (or at once, when they meet a token it signed).
/// The refresh MAC key is kept, so refresh tokens stay valid.
///
/// # Errors
/// A store error, unreadable stored keys, or [`KeysError::Contended`].
pub async fn rotate_keys(
    state: &dyn StateStore,
    alg: SigningAlgorithm,
    now: Timestamp,
) -> Result<KeyInfo, KeysError> {
    load_or_create(state, alg, now).await?;
    for _ in 0..5 {
        let Some(current) = state.get_state(KEYS_STATE).await? else {
            continue;
        };
        let mut stored = parse_keys(&current.value)?;
        let key = new_key(alg, now)?;
        let info = KeyInfo {
            kid: key.kid.clone(),
            alg: key.alg.clone(),
            created_at: now,
            current: true,
        };
        stored.signing.insert(0, key);
        stored.signing.truncate(KEEP_SIGNING_KEYS);
        let bytes = serde_json::to_vec(&stored).map_err(|e| KeysError::Corrupt(e.to_string()))?;
        if state
            .put_state(KEYS_STATE, &bytes, Some(current.version))
            .await?
        {
            tracing::info!(target: "signoff::token_mode", kid = %info.kid, alg = %info.alg, "rotated the token signing key");
            return Ok(info);
        }
    }
    Err(KeysError::Contended)
}

/// The signing keys in the store, newest (current) first.
///
/// # Errors
/// A store error or unreadable stored keys.
pub async fn list_keys(state: &dyn StateStore) -> Result<Vec<KeyInfo>, KeysError> {
    let Some(v) = state.get_state(KEYS_STATE).await? else {
        return Ok(Vec::new());
    };
    let stored = parse_keys(&v.value)?;
    Ok(stored
        .signing
        .iter()
        .enumerate()
        .map(|(i, k)| KeyInfo {
            kid: k.kid.clone(),
            alg: k.alg.clone(),
            created_at: Timestamp::from_millis(k.created_at),
            current: i == 0,
        })
        .collect())
}

// -------------------------------------------------------- refresh state --

/// What a session keeps about its refresh tokens: how many refreshes, the
/// digest of the live token and of the one before it, and when it last
/// changed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RefreshState {
    n: u64,
    current: [u8; 32],
    previous: Option<[u8; 32]>,
    rotated_at: Timestamp,
}

fn hex32(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

impl RefreshState {
    fn encode(&self) -> String {
        format!(
            "1:{}:{}:{}:{}",
            self.n,
            hex32(&self.current),
            self.previous.as_ref().map_or("-".to_owned(), hex32),
            self.rotated_at.as_millis()
        )
    }

    fn decode(text: &str) -> Option<Self> {
        let mut parts = text.split(':');
        if parts.next()? != "1" {
            return None;
        }
        let n = parts.next()?.parse().ok()?;
        let current = unhex32(parts.next()?)?;
        let previous = match parts.next()? {
            "-" => None,
            hex => Some(unhex32(hex)?),
        };
        let rotated_at = Timestamp::from_millis(parts.next()?.parse().ok()?);
        parts.next().is_none().then_some(Self {
            n,
            current,
            previous,
            rotated_at,
        })
    }

    fn of(session: &Session) -> Option<Self> {
        session.data.get(REFRESH_KEY).and_then(|s| Self::decode(s))
    }
}

/// A refresh token taken apart. Its parts are only trusted after
/// [`RefreshToken::tag_ok`].
struct RefreshToken<'a> {
    text: &'a str,
    handle: SessionHandle,
    n: u64,
    tag: [u8; TAG_BYTES],
}

fn refresh_mac(key: &[u8; 32], handle: &str, n: u64, nonce: &str) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!("any key size"));
    mac.update(b"signoff refresh token v1\0");
    mac.update(handle.as_bytes());
    mac.update(b".");
    mac.update(n.to_string().as_bytes());
    mac.update(b".");
    mac.update(nonce.as_bytes());
    mac
}

impl<'a> RefreshToken<'a> {
    fn parse(text: &'a str) -> Option<Self> {
        if text.len() > MAX_TOKEN_BYTES {
            return None;
        }
        let mut parts = text.split('.');
        let handle: SessionHandle = parts.next()?.parse().ok()?;
        let n_text = parts.next()?;
        // Canonical decimal only, so one token has one text.
        if n_text.is_empty()
            || n_text.len() > 19
            || !n_text.bytes().all(|b| b.is_ascii_digit())
            || (n_text.len() > 1 && n_text.starts_with('0'))
        {
            return None;
        }
        let n = n_text.parse().ok()?;
        let nonce = parts.next()?;
        if nonce.len() != 43 || URL_SAFE_NO_PAD.decode(nonce).ok()?.len() != 32 {
            return None;
        }
        let tag: [u8; TAG_BYTES] = URL_SAFE_NO_PAD
            .decode(parts.next()?)
            .ok()?
            .try_into()
            .ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(Self {
            text,
            handle,
            n,
            tag,
        })
    }

    /// Whether the tag was made with `key`, in constant time.
    fn tag_ok(&self, key: &[u8; 32]) -> bool {
        let mut parts = self.text.split('.');
        let (Some(handle), _, Some(nonce)) = (parts.next(), parts.next(), parts.next()) else {
            return false;
        };
        refresh_mac(key, handle, self.n, nonce)
            .verify_truncated_left(&self.tag)
            .is_ok()
    }

    fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.text.as_bytes()).into()
    }

    fn issue(key: &[u8; 32], handle: &SessionHandle, n: u64) -> (String, [u8; 32]) {
        let mut nonce = [0u8; 32];
        OsRng.fill_bytes(&mut nonce);
        let handle = handle.to_string();
        let nonce = b64(&nonce);
        let tag = refresh_mac(key, &handle, n, &nonce).finalize().into_bytes();
        let text = format!("{handle}.{n}.{nonce}.{}", b64(&tag[..TAG_BYTES]));
        let digest = Sha256::digest(text.as_bytes()).into();
        (text, digest)
    }
}

fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Which kind of token a text is, by its shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A JWT access token (three segments).
    Access,
    /// A refresh token.
    Refresh,
    /// A session token (a cookie value, used as a bearer token).
    Session,
    /// None of these.
    Unknown,
}

/// The kind of `text`, by its shape alone (nothing is verified).
pub fn kind_of(text: &str) -> TokenKind {
    if text.len() > MAX_TOKEN_BYTES {
        return TokenKind::Unknown;
    }
    match text.bytes().filter(|b| *b == b'.').count() {
        2 => TokenKind::Access,
        3 => TokenKind::Refresh,
        0 if SessionToken::parse(text).is_ok() => TokenKind::Session,
        _ => TokenKind::Unknown,
    }
}

// --------------------------------------------------------------- tokens --

/// The outcome of [`Tokens::introspect`] (RFC 7662). Serialises to exactly
/// `{"active":false}` when inactive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Introspection {
    /// Whether the token is live now.
    pub active: bool,
    /// `access_token` or `refresh_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
    /// The client it was issued to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The user id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The session's public handle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Expiry, seconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Issued at, seconds since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Issuer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// The access token's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

/// Who asks to revoke a token: only tokens issued to this client are
/// revoked (others are left alone, and the answer is the same).
#[derive(Debug, Clone, Copy)]
pub enum Requester<'a> {
    /// A client, by id.
    Client(&'a str),
    /// An administrator: any client's tokens.
    Admin,
}

/// Access and refresh tokens over a [`Sessions`] engine. Cheap to share
/// behind an `Arc`.
pub struct Tokens {
    sessions: Sessions,
    state: Arc<dyn StateStore>,
    options: TokenOptions,
    keys: RwLock<(Arc<KeySet>, Instant)>,
    reloading: tokio::sync::Mutex<()>,
    /// Access tokens whose signature and claims (other than time) checked
    /// out: the exact text → its claims.
    verified: Cache<String, (Arc<AccessClaims>, u64)>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// Token mode over `sessions`, with keys kept in `state` (created there
    /// on first use).
    ///
    /// # Errors
    /// A store error or unreadable stored keys.
    pub async fn open(
        sessions: Sessions,
        state: Arc<dyn StateStore>,
        options: TokenOptions,
    ) -> Result<Self, KeysError> {
        let keys = load_or_create(state.as_ref(), options.algorithm, sessions.now()).await?;
        Ok(Self {
            sessions,
            state,
            options,
            keys: RwLock::new((Arc::new(keys), Instant::now())),
            reloading: tokio::sync::Mutex::new(()),
            verified: Cache::new(VERIFIED_CAPACITY),
        })
    }

    /// The settings.
    pub fn options(&self) -> &TokenOptions {
        &self.options
    }

    /// The session engine underneath.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    fn cached_keys(&self) -> (Arc<KeySet>, Instant) {
        let guard = self
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (guard.0.clone(), guard.1)
    }

    /// The keys, re-read from the store if they are older than `max_age`.
    /// One task re-reads at a time; the others use what is there. A failed
    /// re-read keeps the keys we have.
    async fn keys(&self, max_age: Duration) -> Arc<KeySet> {
        let (keys, at) = self.cached_keys();
        if at.elapsed() < max_age {
            return keys;
        }
        let Ok(_reloading) = self.reloading.try_lock() else {
            return keys;
        };
        let fresh = match self.state.get_state(KEYS_STATE).await {
            Ok(Some(v)) if v.version == keys.version => None,
            Ok(Some(v)) => match parse_keys(&v.value).and_then(|s| build_keyset(&s, v.version)) {
                Ok(set) => Some(Arc::new(set)),
                Err(e) => {
                    tracing::error!(target: "signoff::token_mode", error = %e, "could not read the token keys; keeping the ones loaded");
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(target: "signoff::token_mode", error = %e, "could not re-read the token keys");
                None
            }
        };
        let mut guard = self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(set) = fresh {
            // Tokens verified with a key that is gone must be checked again.
            self.verified.clear();
            guard.0 = set;
        }
        guard.1 = Instant::now();
        guard.0.clone()
    }

    /// The JSON Web Key Set of the keys that verify access tokens.
    pub async fn jwks(&self) -> serde_json::Value {
        let keys = self.keys(KEYS_MAX_AGE).await;
        serde_json::json!({
            "keys": keys.signing.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()
        })
    }

    fn sign(&self, keys: &KeySet, session: &Session, client: &str) -> Result<String, KeysError> {
        let key = &keys.signing[0];
        let now = self.sessions.now().as_millis() / 1000;
        let ttl = i64::try_from(self.options.access_ttl.as_secs()).unwrap_or(i64::MAX);
        let mut jti = [0u8; 16];
        OsRng.fill_bytes(&mut jti);
        let claims = AccessClaims {
            iss: self.options.issuer.clone(),
            aud: self.options.audience.clone(),
            sub: session
                .user_id
                .as_ref()
                .map(|u| u.as_str().to_owned())
                .unwrap_or_default(),
            sid: session.handle.to_string(),
            client_id: client.to_owned(),
            iat: now,
            exp: now.saturating_add(ttl),
            nbf: None,
            jti: b64(&jti),
        };
        let mut header = Header::new(key.alg.jwt());
        header.typ = Some("at+jwt".to_owned());
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, &claims, &key.encoding).map_err(|_| KeysError::Crypto)
    }

    fn pair(
        &self,
        keys: &KeySet,
        session: Session,
        client: &str,
        refresh_token: String,
    ) -> Result<TokenPair, GrantError> {
        let access_token = self.sign(keys, &session, client).map_err(|e| {
            tracing::error!(target: "signoff::token_mode", error = %e, "could not sign an access token");
            GrantError::Invalid("the token could not be signed")
        })?;
        Ok(TokenPair {
            access_token,
            expires_in: self.options.access_ttl.as_secs(),
            refresh_token,
            session,
        })
    }

    /// Starts token mode for a session just signed in: the first refresh
    /// token of its family and an access token. `client` is the client's id
    /// ([`DEFAULT_CLIENT`] when it named none).
    ///
    /// # Errors
    /// [`GrantError::Invalid`] if the session ended meanwhile or the client
    /// id is unusable, or a store error.
    pub async fn issue(&self, session: &Session, client: &str) -> Result<TokenPair, GrantError> {
        if !valid_client_id(client) {
            return Err(GrantError::Invalid(
                "client_id must be 1 to 64 characters of A-Z a-z 0-9 . _ : -",
            ));
        }
        let keys = self.keys(KEYS_MAX_AGE).await;
        let (refresh_token, digest) = RefreshToken::issue(&keys.mac, &session.handle, 0);
        let state = RefreshState {
            n: 0,
            current: digest,
            previous: None,
            rotated_at: self.sessions.now(),
        };
        let mut data = session.data.clone();
        data.insert(REFRESH_KEY.to_owned(), state.encode());
        data.insert(CLIENT_KEY.to_owned(), client.to_owned());
        let written = self
            .sessions
            .write_data(session, data)
            .await
            .map_err(GrantError::from)?;
        self.pair(&keys, written, client, refresh_token)
    }

    /// RFC 6749 §6: exchanges a refresh token for a new pair. The token used
    /// stops working; a second use of it ends the session (outside the
    /// grace window). With `client`, the token must have been issued to it.
    /// A token issued to one of [`TokenOptions::confidential_clients`]
    /// refreshes only with `client` naming it: callers pass such an id only
    /// after checking that client's credentials.
    ///
    /// # Errors
    /// [`GrantError::Invalid`], [`GrantError::Reused`] (the session has been
    /// ended), or a store error.
    pub async fn refresh(
        &self,
        token: &str,
        client: Option<&str>,
    ) -> Result<TokenPair, GrantError> {
        let rt =
            RefreshToken::parse(token).ok_or(GrantError::Invalid("malformed refresh token"))?;
        let mut keys = self.keys(KEYS_MAX_AGE).await;
        if !rt.tag_ok(&keys.mac) {
            // Keys rotated elsewhere are picked up; the MAC key itself does not rotate.
            keys = self.keys(UNKNOWN_KID_RELOAD).await;
            if !rt.tag_ok(&keys.mac) {
                return Err(GrantError::Invalid("not a refresh token issued here"));
            }
        }
        let presented = rt.digest();
        // A lost race re-reads the session; a few rounds settle it.
        for _ in 0..4 {
            let session = self.sessions.validate_handle(&rt.handle).await?;
            let state = RefreshState::of(&session)
                .ok_or(GrantError::Invalid("the session has no refresh token"))?;
            let issued_to = session
                .data
                .get(CLIENT_KEY)
                .map_or(DEFAULT_CLIENT, String::as_str);
            if client.is_some_and(|c| c != issued_to) {
                return Err(GrantError::Invalid("issued to another client"));
            }
            let confidential = self
                .options
                .confidential_clients
                .iter()
                .any(|c| c == issued_to);
            if confidential && client != Some(issued_to) {
                return Err(GrantError::Invalid(
                    "issued to a client that must authenticate",
                ));
            }
            let now = self.sessions.now();
            let live = rt.n == state.n && ct_eq(&presented, &state.current);
            let in_grace = rt.n.checked_add(1) == Some(state.n)
                && state.previous.is_some_and(|p| ct_eq(&presented, &p))
                && now.since(state.rotated_at) < self.options.refresh_grace;
            if !live && !in_grace {
                if rt.n < state.n {
                    return Err(self.reused(&session).await);
                }
                // A valid tag on a token we do not know: only someone with
                // the MAC key could make one. Refuse; end nothing.
                return Err(GrantError::Invalid("unknown refresh token"));
            }
            let next_n = state.n + 1;
            let (refresh_token, digest) = RefreshToken::issue(&keys.mac, &session.handle, next_n);
            let next = RefreshState {
                n: next_n,
                current: digest,
                // After a grace use, the token it displaces was never used
                // and must not get a grace of its own: only one token lives.
                previous: live.then_some(state.current),
                rotated_at: now,
            };
            let mut data = session.data.clone();
            data.insert(REFRESH_KEY.to_owned(), next.encode());
            match self
                .sessions
                .store()
                .update_data(&session.id, session.generation, &data)
                .await
                .map_err(GrantError::Store)?
            {
                WriteOutcome::Applied => {
                    let written = Session {
                        data,
                        generation: session.generation + 1,
                        ..session
                    };
                    let client = issued_to.to_owned();
                    return self.pair(&keys, written, &client, refresh_token);
                }
                WriteOutcome::Stale => continue,
                WriteOutcome::Missing => return Err(GrantError::Invalid("the session has ended")),
            }
        }
        Err(GrantError::Invalid(
            "the session kept changing; sign in again",
        ))
    }

    /// A used refresh token came back: end the session (the whole family).
    async fn reused(&self, session: &Session) -> GrantError {
        tracing::warn!(target: "signoff::auth", session = %session.handle, "refresh token reused: ending the session");
        match self
            .sessions
            .end_handle_because(&session.handle, None, Actor::Policy, "refresh_token_reuse")
            .await
        {
            Ok(_) => GrantError::Reused,
            Err(SessionError::Store(e)) => GrantError::Store(e),
            Err(_) => GrantError::Reused,
        }
    }

    /// Checks an access token's signature and claims, without the store.
    /// Whether its session is still alive is [`Tokens::authenticate`]'s job.
    ///
    /// # Errors
    /// The first [`AccessError`] found.
    pub async fn verify_access(&self, token: &str) -> Result<Arc<AccessClaims>, AccessError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AccessError::Oversized);
        }
        // A token is remembered with the key set that verified it, and
        // counts as verified only under that same set: after a rotation
        // (which may drop its key) it is checked again.
        let version = self.keys(KEYS_MAX_AGE).await.version;
        let claims = match self.verified.get(token) {
            Some((claims, v)) if v == version => claims,
            _ => {
                let (claims, v) = self.verify_signature(token).await?;
                let claims = Arc::new(claims);
                self.verified.insert(token.to_owned(), (claims.clone(), v));
                claims
            }
        };
        self.check_times(&claims)?;
        Ok(claims)
    }

    fn check_times(&self, claims: &AccessClaims) -> Result<(), AccessError> {
        let now_ms = self.sessions.now().as_millis();
        let secs_ms = |s: i64| s.saturating_mul(1000);
        if now_ms >= secs_ms(claims.exp) {
            return Err(AccessError::Expired);
        }
        if claims.nbf.is_some_and(|nbf| now_ms < secs_ms(nbf)) {
            return Err(AccessError::NotYetValid);
        }
        let skew = i64::try_from(IAT_SKEW.as_millis()).unwrap_or(i64::MAX);
        if secs_ms(claims.iat) > now_ms.saturating_add(skew) {
            return Err(AccessError::NotYetValid);
        }
        Ok(())
    }

    /// The claims, and the version of the key set that verified them.
    async fn verify_signature(&self, token: &str) -> Result<(AccessClaims, u64), AccessError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AccessError::Malformed)?;
        let typ_ok = header.typ.as_deref().is_some_and(|t| {
            t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt")
        });
        if !typ_ok {
            return Err(AccessError::WrongType);
        }
        let kid = header.kid.as_deref().ok_or(AccessError::UnknownKey)?;
        let mut keys = self.keys(KEYS_MAX_AGE).await;
        if keys.key(kid).is_none() {
            // Perhaps a key rotated in on another node.
            keys = self.keys(UNKNOWN_KID_RELOAD).await;
        }
        let key = keys.key(kid).ok_or(AccessError::UnknownKey)?;
        // The algorithm is the key's; the token's `alg` must agree.
        if header.alg != key.alg.jwt() {
            return Err(AccessError::WrongAlgorithm);
        }
        let mut validation = Validation::new(key.alg.jwt());
        validation.validate_exp = false; // checked on our clock, every time
        validation.validate_nbf = false;
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[self.options.issuer.as_str()]);
        validation.set_audience(&[self.options.audience.as_str()]);
        let data = jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                match e.kind() {
                    K::InvalidSignature => AccessError::BadSignature,
                    K::InvalidAlgorithm => AccessError::WrongAlgorithm,
                    K::InvalidIssuer => AccessError::WrongIssuer,
                    K::InvalidAudience => AccessError::WrongAudience,
                    K::ExpiredSignature => AccessError::Expired,
                    K::ImmatureSignature => AccessError::NotYetValid,
                    K::MissingRequiredClaim(_) | K::Json(_) | K::InvalidSubject => {
                        AccessError::BadClaims
                    }
                    _ => AccessError::Malformed,
                }
            })?;
        Ok((data.claims, keys.version))
    }

    /// Checks an access token and that its session is alive (through the
    /// store's cache and revocation bus, like a cookie), recording activity
    /// as a cookie would. Returns the claims and the session.
    ///
    /// # Errors
    /// An [`AccessError`]; [`AccessError::Store`] must fail closed.
    pub async fn authenticate(
        &self,
        token: &str,
    ) -> Result<(Arc<AccessClaims>, Session), AccessError> {
        let claims = self.verify_access(token).await?;
        let handle: SessionHandle = claims.sid.parse().map_err(|_| AccessError::BadClaims)?;
        let session = match self.sessions.validate_handle(&handle).await {
            Ok(s) => s,
            Err(SessionError::Store(e)) => return Err(AccessError::Store(e)),
            Err(_) => return Err(AccessError::SessionEnded),
        };
        if session.user_id.as_ref().map(|u| u.as_str()) != Some(claims.sub.as_str()) {
            return Err(AccessError::SessionEnded);
        }
        Ok((claims, session))
    }

    /// The session a token of any kind belongs to, if it is live now: for
    /// introspection and revocation. Records no activity.
    async fn live_session(
        &self,
        token: &str,
    ) -> Result<Option<(Session, Introspection)>, StoreError> {
        let now = self.sessions.now();
        let live = |s: &Session| s.expiry(now, self.sessions.policy()).is_none();
        match kind_of(token) {
            TokenKind::Access => {
                let Ok(claims) = self.verify_access(token).await else {
                    return Ok(None);
                };
                let Ok(handle) = claims.sid.parse::<SessionHandle>() else {
                    return Ok(None);
                };
                let Some(session) = self.sessions.store().load_by_handle(&handle).await? else {
                    return Ok(None);
                };
                if !live(&session)
                    || session.user_id.as_ref().map(|u| u.as_str()) != Some(claims.sub.as_str())
                {
                    return Ok(None);
                }
                let info = Introspection {
                    active: true,
                    token_type: Some("access_token"),
                    client_id: Some(claims.client_id.clone()),
                    sub: Some(claims.sub.clone()),
                    sid: Some(claims.sid.clone()),
                    exp: Some(claims.exp),
                    iat: Some(claims.iat),
                    iss: Some(claims.iss.clone()),
                    aud: Some(claims.aud.clone()),
                    jti: Some(claims.jti.clone()),
                };
                Ok(Some((session, info)))
            }
            TokenKind::Refresh => {
                let Some(rt) = RefreshToken::parse(token) else {
                    return Ok(None);
                };
                let keys = self.keys(KEYS_MAX_AGE).await;
                if !rt.tag_ok(&keys.mac) {
                    return Ok(None);
                }
                let Some(session) = self.sessions.store().load_by_handle(&rt.handle).await? else {
                    return Ok(None);
                };
                let current = RefreshState::of(&session)
                    .is_some_and(|s| s.n == rt.n && ct_eq(&s.current, &rt.digest()));
                if !current || !live(&session) {
                    return Ok(None);
                }
                let info = self.session_info(&session, "refresh_token");
                Ok(Some((session, info)))
            }
            TokenKind::Session => {
                let Ok(parsed) = self.sessions.check_token(token).await else {
                    return Ok(None);
                };
                let Some(session) = self.sessions.store().load(&parsed.id()).await? else {
                    return Ok(None);
                };
                if !live(&session) || session.user_id.is_none() {
                    return Ok(None);
                }
                let info = self.session_info(&session, "session_token");
                Ok(Some((session, info)))
            }
            TokenKind::Unknown => Ok(None),
        }
    }

    fn session_info(&self, session: &Session, kind: &'static str) -> Introspection {
        let policy = self.sessions.policy();
        let end = session.absolute_end(policy);
        Introspection {
            active: true,
            token_type: Some(kind),
            client_id: Some(
                session
                    .data
                    .get(CLIENT_KEY)
                    .map_or(DEFAULT_CLIENT, String::as_str)
                    .to_owned(),
            ),
            sub: session.user_id.as_ref().map(|u| u.as_str().to_owned()),
            sid: Some(session.handle.to_string()),
            exp: Some(end.as_millis() / 1000),
            iat: Some(session.created_at.as_millis() / 1000),
            iss: Some(self.options.issuer.clone()),
            aud: None,
            jti: None,
        }
    }

    /// RFC 7662: what a token is, if it is live now. Unknown, expired,
    /// used and revoked tokens all give just `active: false`.
    ///
    /// # Errors
    /// A store error (then the answer is unknown, not inactive).
    pub async fn introspect(&self, token: &str) -> Result<Introspection, StoreError> {
        Ok(self
            .live_session(token)
            .await?
            .map(|(_, info)| info)
            .unwrap_or_default())
    }

    /// RFC 7009: revokes a live token issued to `by`, by ending its session
    /// (so its access tokens, its refresh token and the session itself all
    /// stop working). Unknown tokens, tokens of other clients and dead
    /// tokens change nothing. Returns whether a session ended.
    ///
    /// # Errors
    /// A store error: then nothing is known to have been revoked.
    pub async fn revoke(&self, token: &str, by: Requester<'_>) -> Result<bool, StoreError> {
        let Some((session, info)) = self.live_session(token).await? else {
            return Ok(false);
        };
        let (actor, allowed) = match by {
            Requester::Admin => (Actor::Admin, true),
            Requester::Client(c) => (Actor::User, info.client_id.as_deref() == Some(c)),
        };
        if !allowed {
            return Ok(false);
        }
        match self
            .sessions
            .end_handle_because(&session.handle, None, actor, "revoked")
            .await
        {
            Ok(ended) => Ok(ended.is_some()),
            Err(SessionError::Store(e)) => Err(e),
            Err(_) => Ok(false),
        }
    }
}

/// Whether `id` is usable as a client id.
pub fn valid_client_id(id: &str) -> bool {
    (1..=MAX_CLIENT_ID_BYTES).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_state_round_trips_and_refuses_garbage() {
        let s = RefreshState {
            n: 7,
            current: [3; 32],
            previous: Some([4; 32]),
            rotated_at: Timestamp::from_millis(1234),
        };
        assert_eq!(RefreshState::decode(&s.encode()), Some(s.clone()));
        let first = RefreshState {
            previous: None,
            ..s
        };
        assert_eq!(RefreshState::decode(&first.encode()), Some(first));
        for bad in ["", "1", "2:1:aa:-:0", "1:x:00:-:0", "1:1:zz:-:0:extra"] {
            assert_eq!(RefreshState::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn refresh_tokens_carry_a_tag_that_binds_every_part() {
        let key = [9u8; 32];
        let handle = SessionHandle::generate();
        let (text, digest) = RefreshToken::issue(&key, &handle, 5);
        let rt = RefreshToken::parse(&text).unwrap();
        assert!(rt.tag_ok(&key));
        assert_eq!(rt.n, 5);
        assert_eq!(rt.handle, handle);
        assert_eq!(rt.digest(), digest);
        assert!(!rt.tag_ok(&[8u8; 32]), "another key");
        // Changing the counter, handle or nonce breaks the tag.
        let parts: Vec<&str> = text.split('.').collect();
        let other = SessionHandle::generate().to_string();
        for forged in [
            format!("{}.4.{}.{}", parts[0], parts[2], parts[3]),
            format!("{other}.5.{}.{}", parts[2], parts[3]),
            format!("{}.5.{}.{}", parts[0], "A".repeat(43), parts[3]),
        ] {
            let rt = RefreshToken::parse(&forged).unwrap();
            assert!(!rt.tag_ok(&key), "{forged}");
        }
        // Non-canonical counters and wrong shapes are not tokens at all.
        for bad in [
            format!("{}.05.{}.{}", parts[0], parts[2], parts[3]),
            format!("{}.+5.{}.{}", parts[0], parts[2], parts[3]),
            format!("{}.5.{}", parts[0], parts[2]),
            format!("{text}.x"),
        ] {
            assert!(RefreshToken::parse(&bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn kinds_are_told_apart_by_shape() {
        assert_eq!(kind_of("a.b.c"), TokenKind::Access);
        assert_eq!(kind_of("a.b.c.d"), TokenKind::Refresh);
        assert_eq!(
            kind_of(
                crate::SessionKeys::ephemeral()
                    .issue(Timestamp::from_millis(0))
                    .expose()
            ),
            TokenKind::Session
        );
        assert_eq!(kind_of("nothing"), TokenKind::Unknown);
        assert_eq!(kind_of(&"a.".repeat(3000)), TokenKind::Unknown);
    }

    #[test]
    fn client_ids_are_short_and_plain() {
        assert!(valid_client_id("mobile-app_1.ios:v2"));
        for bad in ["", "with space", "ünï", &"x".repeat(65)] {
            assert!(!valid_client_id(bad), "{bad}");
        }
    }
}

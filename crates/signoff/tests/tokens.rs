//! Token mode ([`signoff::token_mode`]) through its public API: hostile access
//! tokens, the link between tokens and their session (logout ends every
//! token derived from it), refresh rotation with reuse detection, keys,
//! introspection, revocation, and the `StateStore` the keys live in.
//!
//! Redis and PostgreSQL variants need those servers (see `support`).
#![cfg(all(feature = "sqlite", feature = "tokens"))]

use sha2::{Digest as _, Sha256};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use serde_json::{json, Value};
use signoff::token_mode::{
    list_keys, rotate_keys, AccessError, GrantError, Requester, SigningAlgorithm, TokenOptions,
    TokenPair, Tokens,
};
use signoff::{
    Actor, CacheOptions, CachedStore, Issued, ManualClock, MemoryStore, NewSession, Policy,
    SessionError, SessionStore, Sessions, SqliteStore, StateStore, Timestamp, UserId,
};

mod support;

/// A stopped clock at the current second: near the wall clock, because
/// Redis expires records on it, and on a whole second, so `exp` falls
/// exactly `access_ttl` after it.
fn start_clock() -> ManualClock {
    let now = signoff::Clock::now(&signoff::SystemClock).as_millis();
    ManualClock::at(Timestamp::from_millis(now - now % 1000))
}
const ISSUER: &str = "https://auth.example.test";
const AUDIENCE: &str = "api.example.test";
const CLIENT: &str = "app";

// ---- Fixtures ----------------------------------------------------------------

struct Rig {
    clock: Arc<ManualClock>,
    sessions: Sessions,
    tokens: Tokens,
    state: Arc<dyn StateStore>,
    options: TokenOptions,
    _dir: Option<tempfile::TempDir>,
}

impl Rig {
    async fn open(
        store: Arc<dyn SessionStore>,
        state: Arc<dyn StateStore>,
        policy: Policy,
        options: TokenOptions,
    ) -> Self {
        let clock = Arc::new(start_clock());
        let sessions = Sessions::with_clock(store, policy, clock.clone());
        let tokens = Tokens::open(sessions.clone(), state.clone(), options.clone())
            .await
            .expect("open tokens");
        Self {
            clock,
            sessions,
            tokens,
            state,
            options,
            _dir: None,
        }
    }

    /// Another node: its own `Tokens` over the same sessions and keys.
    async fn another_node(&self) -> Tokens {
        Tokens::open(
            self.sessions.clone(),
            self.state.clone(),
            self.options.clone(),
        )
        .await
        .expect("open tokens")
    }

    /// A user signs in and gets a first pair, issued to [`CLIENT`].
    async fn sign_in(&self, user: &str) -> (Issued, TokenPair) {
        let issued = self
            .sessions
            .login(None, NewSession::for_user(UserId::new(user)))
            .await
            .expect("login");
        let pair = self
            .tokens
            .issue(&issued.session, CLIENT)
            .await
            .expect("issue");
        (issued, pair)
    }

    fn now_secs(&self) -> i64 {
        self.sessions.now().as_millis() / 1000
    }

    /// Claims our server would issue for `pair`'s session, to hand-sign.
    fn claims_for(&self, pair: &TokenPair) -> Value {
        let now = self.now_secs();
        json!({
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": pair.session.user_id.as_ref().expect("user").as_str(),
            "sid": pair.session.handle.to_string(),
            "client_id": CLIENT,
            "iat": now,
            "exp": now + 300,
            "jti": "hand-made",
        })
    }
}

fn options(grace: Duration) -> TokenOptions {
    let mut options = TokenOptions::new(ISSUER, AUDIENCE);
    options.refresh_grace = grace;
    options
}

async fn memory_rig_with(policy: Policy, options: TokenOptions) -> Rig {
    let memory = Arc::new(MemoryStore::new());
    Rig::open(memory.clone(), memory, policy, options).await
}

async fn memory_rig() -> Rig {
    memory_rig_with(Policy::default(), options(Duration::ZERO)).await
}

/// SQLite in a temporary file, behind a [`CachedStore`] as a node runs it.
async fn cached_sqlite_rig(grace: Duration) -> (Rig, Arc<CachedStore<SqliteStore>>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = SqliteStore::open(dir.path().join("tokens.db"))
        .await
        .expect("open sqlite");
    let cached = Arc::new(CachedStore::new(sqlite.clone()));
    let mut rig = Rig::open(
        cached.clone(),
        Arc::new(sqlite),
        Policy::default(),
        options(grace),
    )
    .await;
    rig._dir = Some(dir);
    (rig, cached)
}

// ---- Hand-made JWTs ------------------------------------------------------------

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

fn sign_ed25519(key: &Ed25519KeyPair, header: &Value, claims: &Value) -> String {
    let input = signing_input(header, claims);
    let signature = key.sign(input.as_bytes());
    format!("{input}.{}", b64(signature.as_ref()))
}

fn attacker_ed25519() -> (Ed25519KeyPair, Vec<u8>) {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("generate");
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("load");
    (pair, pkcs8.as_ref().to_vec())
}

/// The server's own current signing key, read from the store as an
/// insider (or a leaked backup) would: it lets the tests make tokens that
/// are correctly signed but wrong in one other way.
async fn our_key(state: &dyn StateStore) -> (String, Ed25519KeyPair) {
    let record = state
        .get_state("token_keys")
        .await
        .expect("get_state")
        .expect("keys exist");
    let keys: Value = serde_json::from_slice(&record.value).expect("keys are JSON");
    let current = &keys["signing"][0];
    assert_eq!(current["alg"], "EdDSA");
    let pkcs8 = STANDARD
        .decode(current["private_pkcs8"].as_str().expect("private_pkcs8"))
        .expect("base64");
    let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).expect("PKCS#8 Ed25519");
    (current["kid"].as_str().expect("kid").to_owned(), pair)
}

fn our_header(kid: &str) -> Value {
    json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": kid })
}

async fn refused(rig: &Rig, token: &str) -> AccessError {
    let verified = rig.tokens.verify_access(token).await;
    let authenticated = rig.tokens.authenticate(token).await;
    assert!(authenticated.is_err(), "authenticate accepted {token}");
    verified.expect_err("verify_access accepted the token")
}

// ---- Negative JWT vectors --------------------------------------------------------

/// The control for every hand-made vector below: a token made by the same
/// helpers with nothing wrong is accepted, so each refusal is for the one
/// thing changed.
#[tokio::test]
async fn hand_signed_control_token_is_accepted() {
    let rig = memory_rig().await;
    let (_, pair) = rig.sign_in("alice").await;
    let (kid, key) = our_key(rig.state.as_ref()).await;
    let token = sign_ed25519(&key, &our_header(&kid), &rig.claims_for(&pair));
    let claims = rig.tokens.verify_access(&token).await.expect("valid");
    assert_eq!(claims.sub, "alice");
    let (_, session) = rig.tokens.authenticate(&token).await.expect("live");
    assert_eq!(session.handle, pair.session.handle);
    // `typ` may also be spelled as a media type.
    let header = json!({ "alg": "EdDSA", "typ": "application/at+jwt", "kid": kid });
    let token = sign_ed25519(&key, &header, &rig.claims_for(&pair));
    rig.tokens.verify_access(&token).await.expect("valid");
}

#[tokio::test]
async fn alg_none_is_refused() {
    let rig = memory_rig().await;
    let (_, pair) = rig.sign_in("alice").await;
    let (kid, _) = our_key(rig.state.as_ref()).await;
    for alg in ["none", "None", "NONE"] {
        let header = json!({ "alg": alg, "typ": "at+jwt", "kid": kid });
        let input = signing_input(&header, &rig.claims_for(&pair));
        for token in [format!("{input}."), format!("{input}.{}", b64(b"sig"))] {
            let e = refused(&rig, &token).await;
            assert!(matches!(e, AccessError::Malformed), "{alg}: {e:?}");
        }
    }
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_refused() {
    let rig = memory_rig().await;
    let (_, pair) = rig.sign_in("alice").await;
    let jwks = rig.tokens.jwks().await;
    let jwk = &jwks["keys"][0];
    let kid = jwk["kid"].as_str().expect("kid").to_owned();
    let x = URL_SAFE_NO_PAD
        .decode(jwk["x"].as_str().expect("x"))
        .expect("x is base64url");
    assert_eq!(x.len(), 32);
    let secrets: [Vec<u8>; 4] = [
        x,
        jwk["x"].as_str().expect("x").as_bytes().to_vec(),
        jwks.to_string().into_bytes(),
        jwk.to_string().into_bytes(),
    ];
    let claims = rig.claims_for(&pair);
    for secret in &secrets {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.typ = Some("at+jwt".to_owned());
        header.kid = Some(kid.clone());
        let key = jsonwebtoken::EncodingKey::from_secret(secret);
        let token = jsonwebtoken::encode(&header, &claims, &key).expect("encode");
        let e = refused(&rig, &token).await;
        assert!(matches!(e, AccessError::WrongAlgorithm), "{e:?}");
        // Without a kid there is no key to confuse.
        header.kid = None;
        let token = jsonwebtoken::encode(&header, &claims, &key).expect("encode");
        let e = refused(&rig, &token).await;
        assert!(matches!(e, AccessError::UnknownKey), "{e:?}");
    }
}

#[tokio::test]
async fn unknown_kid_is_refused() {
    let rig = memory_rig().await;
    let (_, pair) = rig.sign_in("alice").await;
    let (kid, key) = our_key(rig.state.as_ref()).await;
    let claims = rig.claims_for(&pair);
    for header in [
        json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": "not-ours" }),
        json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": format!("{kid}x") }),
        json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": "" }),
        json!({ "alg": "EdDSA", "typ": "at+jwt" }),
    ] {
        let token = sign_ed25519(&key, &header, &claims);
        let e = refused(&rig, &token).await;
        assert!(matches!(e, AccessError::UnknownKey), "{header}: {e:?}");
    }
}

#[tokio::test]
async fn expired_token_is_refused() {
    let rig = memory_rig().await;
    let (_, pair) = rig.sign_in("alice").await;
    // Verified once, so the verified-token cache holds it: expiry must
    // still be checked on every use.
    rig.tokens
        .authenticate(&pair.access_token)
        .await
        .expect("fresh");
    rig.clock.advance(Duration::from_secs(299));
    rig.tokens
        .verify_access(&pair.access_token)
        .await
        .expect("still within exp");
    rig.clock.advance(Duration::from_secs(1));
    let e = refused(&rig, &pair.access_token).await;
    assert!(matches!(e, AccessError::Expired), "{e:?}");
}

#[tokio::test]
async fn not_yet_valid_token_is_refused() {
    let rig = memory_rig().await;
    let (_, pair) = rig.sign_in("alice").await;
    let (kid, key) = our_key(rig.state.as_ref()).await;
    let now = rig.now_secs();

    let mut claims = rig.claims_for(&pair);
    claims["nbf"] = json!(now + 120);
    let token = sign_ed25519(&key, &our_header(&kid), &claims);
    let e = refused(&rig, &token).await;
    assert!(matches!(e, AccessError::NotYetValid), "{e:?}");
    // It becomes valid at nbf (it was only ever not *yet* valid).
    rig.clock.advance(Duration::from_secs(120));
    rig.tokens
        .verify_access(&token)
        .await
        .expect("valid at nbf");

    let now = rig.now_secs();
    let mut claims = rig.claims_for(&pair);
    claims["iat"] = json!(now + 3600);
    claims["exp"] = json!(now + 7200);
    let token = sign_ed25519(&key, &our_header(&kid), &claims);
    let e = refused(&rig, &token).await;
    assert!(matches!(e, AccessError::NotYetValid), "{e:?}");
}

#[tokio::test]
async fn wrong_audience_is_refused() {
    let rig = memory_rig().await;
    let (_, pair) = rig.sign_in("alice").await;
    let (kid, key) = our_key(rig.state.as_ref()).await;
    for aud in ["other-api", "api.example.test/", ""] {
        let mut claims = rig.claims_for(&pair);
        claims["aud"] = json!(aud);
        let token = sign_ed25519(&key, &our_header(&kid), &claims);
        let e = refused(&rig, &token).await;
        assert!(matches!(e, AccessError::WrongAudience), "{aud}: {e:?}");
    }
    // Our tokens carry one audience; a list (even one naming us) is not
    // a claim set we issue.
    for aud in [json!(["other-api"]), json!([AUDIENCE, "other-api"])] {
        let mut claims = rig.claims_for(&pair);
        claims["aud"] = aud.clone();
        let token = sign_ed25519(&key, &our_header(&kid), &claims);
        let e = refused(&rig, &token).await;
        assert!(
            matches!(e, AccessError::WrongAudience | AccessError::BadClaims),
            "{aud}: {e:?}"
        );
    }
}

#[tokio::test]
async fn wrong_issuer_is_refused() {
    let rig = memory_rig().await;
    let (_, pair) = rig.sign_in("alice").await;
    let (kid, key) = our_key(rig.state.as_ref()).await;
    for iss in ["https://evil.example", "https://auth.example.test/", ""] {
        let mut claims = rig.claims_for(&pair);
        claims["iss"] = json!(iss);
        let token = sign_ed25519(&key, &our_header(&kid), &claims);
        let e = refused(&rig, &token).await;
        assert!(matches!(e, AccessError::WrongIssuer), "{iss}: {e:?}");
    }
}

#[tokio::test]
async fn wrong_or_missing_typ_is_refused() {
    let rig = memory_rig().await;
    let (_, pair) = rig.sign_in("alice").await;
    let (kid, key) = our_key(rig.state.as_ref()).await;
    let claims = rig.claims_for(&pair);
    for header in [
        json!({ "alg": "EdDSA", "typ": "JWT", "kid": kid }),
        json!({ "alg": "EdDSA", "typ": "id+jwt", "kid": kid }),
        json!({ "alg": "EdDSA", "kid": kid }),
    ] {
        let token = sign_ed25519(&key, &header, &claims);
        let e = refused(&rig, &token).await;
        assert!(matches!(e, AccessError::WrongType), "{header}: {e:?}");
    }
}

#[tokio::test]
async fn tampered_payload_is_refused() {
    let rig = memory_rig().await;
    let (_, alice) = rig.sign_in("alice").await;
    let (_, bob) = rig.sign_in("bob").await;
    let parts: Vec<&str> = alice.access_token.split('.').collect();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
    let mut variants = Vec::new();
    for (field, value) in [
        ("sub", json!("mallory")),
        ("exp", json!(rig.now_secs() + 86_400)),
        ("sid", json!(bob.session.handle.to_string())),
        ("client_id", json!("admin-console")),
    ] {
        let mut changed = claims.clone();
        changed[field] = value;
        variants.push(changed);
    }
    // Bob's session and user, so only the signature can tell.
    claims["sub"] = json!("bob");
    claims["sid"] = json!(bob.session.handle.to_string());
    variants.push(claims);
    for changed in variants {
        let token = format!(
            "{}.{}.{}",
            parts[0],
            b64(changed.to_string().as_bytes()),
            parts[2]
        );
        let e = refused(&rig, &token).await;
        assert!(matches!(e, AccessError::BadSignature), "{changed}: {e:?}");
    }
    // A flipped bit in the signature itself.
    let mut signature = URL_SAFE_NO_PAD.decode(parts[2]).expect("b64");
    signature[0] ^= 1;
    let token = format!("{}.{}.{}", parts[0], parts[1], b64(&signature));
    let e = refused(&rig, &token).await;
    assert!(matches!(e, AccessError::BadSignature), "{e:?}");
}

#[tokio::test]
async fn jku_header_pointing_elsewhere_is_ignored() {
    let rig = memory_rig().await;
    let (_, pair) = rig.sign_in("alice").await;
    let (kid, _) = our_key(rig.state.as_ref()).await;
    let (attacker, _) = attacker_ed25519();
    let claims = rig.claims_for(&pair);
    let jku = "https://evil.example/.well-known/jwks.json";

    let header = json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": kid, "jku": jku, "x5u": jku });
    let e = refused(&rig, &sign_ed25519(&attacker, &header, &claims)).await;
    assert!(matches!(e, AccessError::BadSignature), "{e:?}");

    let header = json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": "attacker-1", "jku": jku });
    let e = refused(&rig, &sign_ed25519(&attacker, &header, &claims)).await;
    assert!(matches!(e, AccessError::UnknownKey), "{e:?}");
}

#[tokio::test]
async fn embedded_jwk_header_is_ignored() {
    let rig = memory_rig().await;
    let (_, pair) = rig.sign_in("alice").await;
    let (kid, _) = our_key(rig.state.as_ref()).await;
    let (attacker, _) = attacker_ed25519();
    let jwk = json!({
        "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
        "x": b64(attacker.public_key().as_ref()),
    });
    let claims = rig.claims_for(&pair);
    for (token_kid, expected_unknown) in [(kid.as_str(), false), ("attacker-1", true)] {
        let mut key = jwk.clone();
        key["kid"] = json!(token_kid);
        let header = json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": token_kid, "jwk": key });
        let e = refused(&rig, &sign_ed25519(&attacker, &header, &claims)).await;
        if expected_unknown {
            assert!(matches!(e, AccessError::UnknownKey), "{e:?}");
        } else {
            assert!(matches!(e, AccessError::BadSignature), "{e:?}");
        }
    }
}

#[tokio::test]
async fn oversized_token_is_refused_unread() {
    let rig = memory_rig().await;
    let (_, pair) = rig.sign_in("alice").await;
    let (kid, key) = our_key(rig.state.as_ref()).await;
    let mut claims = rig.claims_for(&pair);
    claims["padding"] = json!("x".repeat(4096));
    // Correctly signed by our key: only its size is wrong.
    let token = sign_ed25519(&key, &our_header(&kid), &claims);
    assert!(token.len() > signoff::token_mode::MAX_TOKEN_BYTES);
    let e = refused(&rig, &token).await;
    assert!(matches!(e, AccessError::Oversized), "{e:?}");
    let e = refused(&rig, &"a".repeat(1 << 20)).await;
    assert!(matches!(e, AccessError::Oversized), "{e:?}");
}

#[tokio::test]
async fn non_base64_segments_are_refused() {
    let rig = memory_rig().await;
    let (_, pair) = rig.sign_in("alice").await;
    let (kid, key) = our_key(rig.state.as_ref()).await;
    let parts: Vec<&str> = pair.access_token.split('.').collect();
    // A broken header: nothing is known about the key.
    for token in [
        format!("{}!.{}.{}", parts[0], parts[1], parts[2]),
        format!(
            "{}.{}.{}",
            STANDARD.encode(br#"{"alg":"EdDSA","typ":"at+jwt","kid":"k"}?"#),
            parts[1],
            parts[2]
        ),
        format!("{}.{}.{}", b64(b"not json"), parts[1], parts[2]),
        "\u{e9}.\u{e9}.\u{e9}".to_owned(),
        "..".to_owned(),
    ] {
        let e = refused(&rig, &token).await;
        assert!(matches!(e, AccessError::Malformed), "{token}: {e:?}");
    }
    // A broken signature segment.
    let token = format!("{}.{}.{}$$", parts[0], parts[1], parts[2]);
    let e = refused(&rig, &token).await;
    assert!(matches!(e, AccessError::Malformed), "{e:?}");
    // A broken payload that our own key signed: the signature holds, the
    // payload still cannot be read.
    let header = b64(our_header(&kid).to_string().as_bytes());
    let signed = |payload: &str| {
        let input = format!("{header}.{payload}");
        format!("{input}.{}", b64(key.sign(input.as_bytes()).as_ref()))
    };
    let e = refused(&rig, &signed("not*base64!")).await;
    assert!(matches!(e, AccessError::Malformed), "{e:?}");
    let e = refused(&rig, &signed(&b64(b"not json"))).await;
    assert!(matches!(e, AccessError::BadClaims), "{e:?}");
    let e = refused(&rig, &signed(&b64(br#"{"iss":"x"}"#))).await;
    assert!(matches!(e, AccessError::BadClaims), "{e:?}");
}

#[tokio::test]
async fn wrong_number_of_segments_is_refused() {
    let rig = memory_rig().await;
    let (_, pair) = rig.sign_in("alice").await;
    let token = &pair.access_token;
    let parts: Vec<&str> = token.split('.').collect();
    for bad in [
        String::new(),
        parts[0].to_owned(),
        format!("{}.{}", parts[0], parts[1]),
        format!("{token}.{}", parts[2]),
        format!("{}.{token}", parts[0]),
        format!("{token}."),
        format!(".{token}"),
    ] {
        let e = refused(&rig, &bad).await;
        assert!(matches!(e, AccessError::Malformed), "{bad}: {e:?}");
    }
}

#[tokio::test]
async fn es256_token_under_an_eddsa_kid_is_refused() {
    let rig = memory_rig().await;
    let (_, pair) = rig.sign_in("alice").await;
    let (kid, _) = our_key(rig.state.as_ref()).await;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("p256");
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.typ = Some("at+jwt".to_owned());
    header.kid = Some(kid);
    let token = jsonwebtoken::encode(
        &header,
        &rig.claims_for(&pair),
        &jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref()),
    )
    .expect("encode");
    let e = refused(&rig, &token).await;
    assert!(matches!(e, AccessError::WrongAlgorithm), "{e:?}");
}

/// The other way round: a server on ES256 keys accepts its own tokens and
/// refuses an EdDSA one under its kid.
#[tokio::test]
async fn eddsa_token_under_an_es256_kid_is_refused() {
    let mut options = options(Duration::ZERO);
    options.algorithm = SigningAlgorithm::ES256;
    let rig = memory_rig_with(Policy::default(), options).await;
    let (_, pair) = rig.sign_in("alice").await;
    rig.tokens
        .authenticate(&pair.access_token)
        .await
        .expect("own ES256 token");
    let jwks = rig.tokens.jwks().await;
    assert_eq!(jwks["keys"][0]["alg"], "ES256");
    let kid = jwks["keys"][0]["kid"].as_str().expect("kid").to_owned();
    let (attacker, _) = attacker_ed25519();
    let token = sign_ed25519(&attacker, &our_header(&kid), &rig.claims_for(&pair));
    let e = refused(&rig, &token).await;
    assert!(matches!(e, AccessError::WrongAlgorithm), "{e:?}");
}

// ---- Tokens end with their session ------------------------------------------------

#[tokio::test]
async fn valid_token_is_accepted() {
    let rig = memory_rig().await;
    let (issued, pair) = rig.sign_in("alice").await;
    assert_eq!(pair.expires_in, 300);
    let claims = rig
        .tokens
        .verify_access(&pair.access_token)
        .await
        .expect("valid");
    assert_eq!(claims.iss, ISSUER);
    assert_eq!(claims.aud, AUDIENCE);
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.sid, issued.session.handle.to_string());
    assert_eq!(claims.client_id, CLIENT);
    assert_eq!(claims.exp - claims.iat, 300);
    let (claims, session) = rig
        .tokens
        .authenticate(&pair.access_token)
        .await
        .expect("live");
    assert_eq!(claims.sub, "alice");
    assert_eq!(session.handle, issued.session.handle);
    let header = jsonwebtoken::decode_header(&pair.access_token).expect("header");
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
}

#[tokio::test]
async fn logout_ends_access_tokens_at_once() {
    let rig = memory_rig().await;
    let (issued, pair) = rig.sign_in("alice").await;
    let (_, other) = rig.sign_in("alice").await;
    rig.tokens
        .authenticate(&pair.access_token)
        .await
        .expect("live");
    rig.sessions
        .logout(issued.token.expose())
        .await
        .expect("logout");
    // The signature still checks out; the session does not.
    rig.tokens
        .verify_access(&pair.access_token)
        .await
        .expect("signature and claims are still fine");
    let e = rig
        .tokens
        .authenticate(&pair.access_token)
        .await
        .unwrap_err();
    assert!(matches!(e, AccessError::SessionEnded), "{e:?}");
    // Only that session: the user's other one is untouched.
    rig.tokens
        .authenticate(&other.access_token)
        .await
        .expect("other session");
}

#[tokio::test]
async fn logout_ends_access_tokens_through_the_cache() {
    let (rig, cached) = cached_sqlite_rig(Duration::ZERO).await;
    for end_by_handle in [false, true] {
        let (issued, pair) = rig.sign_in("alice").await;
        // Warm both the handle and the session caches.
        for _ in 0..3 {
            rig.tokens
                .authenticate(&pair.access_token)
                .await
                .expect("live");
        }
        let hits = cached.stats().hits();
        rig.tokens
            .authenticate(&pair.access_token)
            .await
            .expect("live");
        assert!(cached.stats().hits() > hits, "served from the cache");
        if end_by_handle {
            rig.sessions
                .end_by_handle(&issued.session.handle, None, Actor::Admin)
                .await
                .expect("end")
                .expect("ended a session");
        } else {
            rig.sessions
                .logout(issued.token.expose())
                .await
                .expect("logout");
        }
        let e = rig
            .tokens
            .authenticate(&pair.access_token)
            .await
            .unwrap_err();
        assert!(matches!(e, AccessError::SessionEnded), "{e:?}");
        let e = rig
            .tokens
            .refresh(&pair.refresh_token, None)
            .await
            .unwrap_err();
        assert!(matches!(e, GrantError::Invalid(_)), "{e:?}");
    }
}

/// Logout on another node (straight to the shared store) reaches a cached
/// node within the cache's stated staleness bound, not at `exp`.
#[tokio::test]
async fn logout_on_another_node_is_seen_within_the_cache_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = SqliteStore::open(dir.path().join("tokens.db"))
        .await
        .expect("open");
    let clock = Arc::new(start_clock());
    let mut cache = CacheOptions::default();
    cache.max_staleness = Duration::from_secs(1);
    let cached = Arc::new(CachedStore::with_options(
        sqlite.clone(),
        cache,
        clock.clone(),
    ));
    let node_a = Sessions::with_clock(cached, Policy::default(), clock.clone());
    let node_b = Sessions::with_clock(Arc::new(sqlite.clone()), Policy::default(), clock.clone());
    let state: Arc<dyn StateStore> = Arc::new(sqlite);
    let tokens_a = Tokens::open(node_a.clone(), state.clone(), options(Duration::ZERO))
        .await
        .expect("tokens");
    let issued = node_a
        .login(None, NewSession::for_user(UserId::new("alice")))
        .await
        .expect("login");
    let pair = tokens_a
        .issue(&issued.session, CLIENT)
        .await
        .expect("issue");
    tokens_a
        .authenticate(&pair.access_token)
        .await
        .expect("warm");
    node_b
        .logout(issued.token.expose())
        .await
        .expect("logout on b");
    clock.advance(Duration::from_secs(1));
    let e = tokens_a.authenticate(&pair.access_token).await.unwrap_err();
    assert!(matches!(e, AccessError::SessionEnded), "{e:?}");
}

/// A session whose user changed (or an anonymous one) does not honour a
/// token naming another `sub`, even correctly signed.
#[tokio::test]
async fn token_for_another_user_of_the_session_is_refused() {
    let rig = memory_rig().await;
    let (_, pair) = rig.sign_in("alice").await;
    let (kid, key) = our_key(rig.state.as_ref()).await;
    let mut claims = rig.claims_for(&pair);
    claims["sub"] = json!("bob");
    let token = sign_ed25519(&key, &our_header(&kid), &claims);
    rig.tokens.verify_access(&token).await.expect("well signed");
    let e = rig.tokens.authenticate(&token).await.unwrap_err();
    assert!(matches!(e, AccessError::SessionEnded), "{e:?}");
}

// ---- Refresh ------------------------------------------------------------------------

#[tokio::test]
async fn refresh_rotates_and_reuse_ends_the_family() {
    let rig = memory_rig().await;
    let (issued, rt1) = rig.sign_in("alice").await;
    let rt2 = rig
        .tokens
        .refresh(&rt1.refresh_token, Some(CLIENT))
        .await
        .expect("first refresh");
    assert_ne!(rt2.refresh_token, rt1.refresh_token);
    assert_ne!(rt2.access_token, rt1.access_token);
    assert_eq!(rt2.session.handle, rt1.session.handle);
    rig.tokens
        .authenticate(&rt2.access_token)
        .await
        .expect("new access token");

    let e = rig
        .tokens
        .refresh(&rt1.refresh_token, None)
        .await
        .unwrap_err();
    assert!(matches!(e, GrantError::Reused), "{e:?}");

    let e = rig
        .tokens
        .refresh(&rt2.refresh_token, None)
        .await
        .unwrap_err();
    assert!(matches!(e, GrantError::Invalid(_)), "{e:?}");
    for access in [&rt1.access_token, &rt2.access_token] {
        let e = rig.tokens.authenticate(access).await.unwrap_err();
        assert!(matches!(e, AccessError::SessionEnded), "{e:?}");
    }
    let e = rig
        .sessions
        .validate(issued.token.expose())
        .await
        .unwrap_err();
    assert!(matches!(e, SessionError::NotFound), "{e:?}");
    assert!(rig
        .sessions
        .store()
        .load_by_handle(&issued.session.handle)
        .await
        .expect("load")
        .is_none());
}

#[tokio::test]
async fn refresh_for_another_client_is_refused_and_ends_nothing() {
    let rig = memory_rig().await;
    let (_, pair) = rig.sign_in("alice").await;
    let e = rig
        .tokens
        .refresh(&pair.refresh_token, Some("other"))
        .await
        .unwrap_err();
    assert!(matches!(e, GrantError::Invalid(_)), "{e:?}");
    rig.tokens
        .refresh(&pair.refresh_token, Some(CLIENT))
        .await
        .expect("the right client still can");
}

#[tokio::test]
async fn forged_refresh_tokens_are_invalid_and_end_nothing() {
    let rig = memory_rig().await;
    let (issued, first) = rig.sign_in("alice").await;
    let (_, bob) = rig.sign_in("bob").await;
    // One refresh, so that counter 0 is "older": a forged token with an
    // old counter must not pass for a reused one.
    let live = rig
        .tokens
        .refresh(&first.refresh_token, None)
        .await
        .expect("refresh");
    let handle = issued.session.handle.to_string();
    let parts: Vec<&str> = live.refresh_token.split('.').collect();
    assert_eq!(parts.len(), 4);
    assert_eq!(parts[0], handle);
    assert_eq!(parts[1], "1");
    let random = |n: usize| b64(&(0..n).map(|_| rand::random::<u8>()).collect::<Vec<u8>>());
    let bob_parts: Vec<&str> = bob.refresh_token.split('.').collect();
    let forged = [
        // Right shape, random tag, every counter.
        format!("{handle}.0.{}.{}", random(32), random(16)),
        format!("{handle}.1.{}.{}", random(32), random(16)),
        format!("{handle}.2.{}.{}", random(32), random(16)),
        // The live token with its tag changed, or its nonce, or its counter.
        format!("{handle}.1.{}.{}", parts[2], random(16)),
        format!("{handle}.1.{}.{}", random(32), parts[3]),
        format!("{handle}.0.{}.{}", parts[2], parts[3]),
        // Bob's valid nonce and tag on Alice's handle, and Alice's on Bob's.
        format!("{handle}.0.{}.{}", bob_parts[2], bob_parts[3]),
        format!("{}.1.{}.{}", bob_parts[0], parts[2], parts[3]),
        // Wrong shapes.
        format!("{handle}.1.{}", parts[2]),
        format!("{}.x", live.refresh_token),
        "a.b.c.d".to_owned(),
        String::new(),
        "x".repeat(5000),
    ];
    for token in &forged {
        let e = rig.tokens.refresh(token, None).await.unwrap_err();
        assert!(matches!(e, GrantError::Invalid(_)), "{token}: {e:?}");
        assert!(
            !rig.tokens
                .introspect(token)
                .await
                .expect("introspect")
                .active,
            "{token}"
        );
    }
    // Nothing ended: both sessions and the live token still work.
    rig.tokens
        .authenticate(&live.access_token)
        .await
        .expect("alice's session lives");
    rig.tokens
        .authenticate(&bob.access_token)
        .await
        .expect("bob's session lives");
    rig.tokens
        .refresh(&live.refresh_token, None)
        .await
        .expect("the live token still refreshes");
    rig.tokens
        .refresh(&bob.refresh_token, None)
        .await
        .expect("bob's token still refreshes");
}

#[tokio::test]
async fn reuse_within_the_grace_window_succeeds_once_and_kills_the_other() {
    let rig = memory_rig_with(Policy::default(), options(Duration::from_secs(5))).await;
    let (_, rt1) = rig.sign_in("alice").await;
    let rt2 = rig
        .tokens
        .refresh(&rt1.refresh_token, None)
        .await
        .expect("refresh");
    rig.clock.advance(Duration::from_secs(4));
    // The client lost the response and retries with RT1.
    let rt3 = rig
        .tokens
        .refresh(&rt1.refresh_token, None)
        .await
        .expect("grace");
    assert_ne!(rt3.refresh_token, rt2.refresh_token);
    rig.tokens
        .authenticate(&rt3.access_token)
        .await
        .expect("new access token");
    let active: Vec<bool> = futures_active(
        &rig.tokens,
        &[&rt1.refresh_token, &rt2.refresh_token, &rt3.refresh_token],
    )
    .await;
    assert_eq!(active, [false, false, true], "only the newest is live");
    // RT2 was never used, but it is no longer the family's token: a later
    // use of it (by whoever holds the lost response) is refused.
    let e = rig
        .tokens
        .refresh(&rt2.refresh_token, None)
        .await
        .unwrap_err();
    assert!(
        matches!(e, GrantError::Reused | GrantError::Invalid(_)),
        "{e:?}"
    );
}

#[tokio::test]
async fn reuse_after_the_grace_window_ends_the_session() {
    let rig = memory_rig_with(Policy::default(), options(Duration::from_secs(5))).await;
    let (_, rt1) = rig.sign_in("alice").await;
    let rt2 = rig
        .tokens
        .refresh(&rt1.refresh_token, None)
        .await
        .expect("refresh");
    rig.clock.advance(Duration::from_secs(5));
    let e = rig
        .tokens
        .refresh(&rt1.refresh_token, None)
        .await
        .unwrap_err();
    assert!(matches!(e, GrantError::Reused), "{e:?}");
    let e = rig
        .tokens
        .refresh(&rt2.refresh_token, None)
        .await
        .unwrap_err();
    assert!(matches!(e, GrantError::Invalid(_)), "{e:?}");
    let e = rig
        .tokens
        .authenticate(&rt2.access_token)
        .await
        .unwrap_err();
    assert!(matches!(e, AccessError::SessionEnded), "{e:?}");
}

/// A token two generations old is reuse even inside the grace window.
#[tokio::test]
async fn grace_covers_only_the_token_just_used() {
    let rig = memory_rig_with(Policy::default(), options(Duration::from_secs(5))).await;
    let (_, rt1) = rig.sign_in("alice").await;
    let rt2 = rig
        .tokens
        .refresh(&rt1.refresh_token, None)
        .await
        .expect("1");
    let rt3 = rig
        .tokens
        .refresh(&rt2.refresh_token, None)
        .await
        .expect("2");
    let e = rig
        .tokens
        .refresh(&rt1.refresh_token, None)
        .await
        .unwrap_err();
    assert!(matches!(e, GrantError::Reused), "{e:?}");
    let e = rig
        .tokens
        .authenticate(&rt3.access_token)
        .await
        .unwrap_err();
    assert!(matches!(e, AccessError::SessionEnded), "{e:?}");
}

async fn futures_active(tokens: &Tokens, list: &[&str]) -> Vec<bool> {
    let mut out = Vec::new();
    for token in list {
        out.push(tokens.introspect(token).await.expect("introspect").active);
    }
    out
}

#[tokio::test]
async fn idle_timeout_applies_to_refresh() {
    let policy = Policy::builder()
        .idle_timeout(Duration::from_secs(600))
        .absolute_lifetime(Duration::from_secs(3600))
        .build()
        .expect("policy");
    let rig = memory_rig_with(policy, options(Duration::ZERO)).await;
    let (_, pair) = rig.sign_in("alice").await;
    rig.clock.advance(Duration::from_secs(599));
    let pair = rig
        .tokens
        .refresh(&pair.refresh_token, None)
        .await
        .expect("activity within the idle timeout");
    rig.clock.advance(Duration::from_secs(600));
    assert!(
        !rig.tokens
            .introspect(&pair.refresh_token)
            .await
            .expect("introspect")
            .active
    );
    let e = rig
        .tokens
        .refresh(&pair.refresh_token, None)
        .await
        .unwrap_err();
    assert!(matches!(e, GrantError::Invalid(_)), "{e:?}");
    // And it stays dead.
    let e = rig
        .tokens
        .refresh(&pair.refresh_token, None)
        .await
        .unwrap_err();
    assert!(matches!(e, GrantError::Invalid(_)), "{e:?}");
}

#[tokio::test]
async fn absolute_lifetime_applies_to_refresh() {
    let policy = Policy::builder()
        .idle_timeout(Duration::from_secs(600))
        .absolute_lifetime(Duration::from_secs(3600))
        .build()
        .expect("policy");
    let rig = memory_rig_with(policy, options(Duration::ZERO)).await;
    let (_, mut pair) = rig.sign_in("alice").await;
    // Refreshing every 250 s keeps it from idling, not from ending.
    for _ in 0..14 {
        rig.clock.advance(Duration::from_secs(250));
        pair = rig
            .tokens
            .refresh(&pair.refresh_token, None)
            .await
            .expect("within the lifetime");
    }
    // 3,650 s: past the lifetime, within the last access token's 300 s.
    rig.clock.advance(Duration::from_secs(150));
    let e = rig
        .tokens
        .refresh(&pair.refresh_token, None)
        .await
        .unwrap_err();
    assert!(matches!(e, GrantError::Invalid(_)), "{e:?}");
    // The access token just issued is unexpired, but its session ended.
    let e = rig
        .tokens
        .authenticate(&pair.access_token)
        .await
        .unwrap_err();
    assert!(matches!(e, AccessError::SessionEnded), "{e:?}");
}

// ---- Concurrent refresh ------------------------------------------------------------------

const TRIALS: usize = 50;

/// Two refreshes with the same token at once, `TRIALS` times.
async fn concurrent_refresh(rig: Rig) {
    let rig = Arc::new(rig);
    let grace = rig.options.refresh_grace;
    let mut both_won = 0;
    for trial in 0..TRIALS {
        let (_, pair) = rig.sign_in(&format!("user{trial}")).await;
        let start = Arc::new(tokio::sync::Barrier::new(2));
        let tasks: Vec<_> = (0..2)
            .map(|_| {
                let rig = rig.clone();
                let start = start.clone();
                let token = pair.refresh_token.clone();
                tokio::spawn(async move {
                    start.wait().await;
                    rig.tokens.refresh(&token, None).await
                })
            })
            .collect();
        let mut won = Vec::new();
        let mut lost = Vec::new();
        for task in tasks {
            match task.await.expect("task") {
                Ok(pair) => won.push(pair),
                Err(e) => lost.push(e),
            }
        }
        for e in &lost {
            assert!(
                matches!(e, GrantError::Reused | GrantError::Invalid(_)),
                "trial {trial}: {e:?}"
            );
        }
        let mut family = vec![pair.refresh_token.clone()];
        family.extend(won.iter().map(|p| p.refresh_token.clone()));
        let active = futures_active(
            &rig.tokens,
            &family.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .await
        .into_iter()
        .filter(|a| *a)
        .count();
        assert!(active <= 1, "trial {trial}: {active} live refresh tokens");
        if grace.is_zero() {
            assert_eq!(won.len(), 1, "trial {trial}: exactly one wins: {lost:?}");
            // The loser presented a used token: the family is over.
            assert_eq!(active, 0, "trial {trial}");
            for token in &family {
                let e = rig.tokens.refresh(token, None).await.unwrap_err();
                assert!(matches!(e, GrantError::Invalid(_)), "trial {trial}: {e:?}");
            }
            for p in &won {
                let e = rig.tokens.authenticate(&p.access_token).await.unwrap_err();
                assert!(matches!(e, AccessError::SessionEnded), "trial {trial}");
            }
        } else {
            assert!(!won.is_empty(), "trial {trial}: {lost:?}");
            if won.len() == 2 {
                both_won += 1;
            }
            assert_eq!(active, 1, "trial {trial}: the family lives on");
        }
    }
    if !grace.is_zero() {
        eprintln!("both refreshes won in {both_won} of {TRIALS} trials");
    }
}

async fn sqlite_rig(grace: Duration) -> Rig {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = SqliteStore::open(dir.path().join("race.db"))
        .await
        .expect("open");
    let mut rig = Rig::open(
        Arc::new(sqlite.clone()),
        Arc::new(sqlite),
        Policy::default(),
        options(grace),
    )
    .await;
    rig._dir = Some(dir);
    rig
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refresh_exactly_one_wins_memory() {
    concurrent_refresh(memory_rig().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refresh_exactly_one_wins_sqlite() {
    concurrent_refresh(sqlite_rig(Duration::ZERO).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refresh_with_grace_keeps_one_live_token_sqlite() {
    concurrent_refresh(sqlite_rig(Duration::from_secs(5)).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refresh_through_the_cache_sqlite() {
    let (rig, _) = cached_sqlite_rig(Duration::ZERO).await;
    concurrent_refresh(rig).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refresh_exactly_one_wins_redis() {
    for grace in [Duration::ZERO, Duration::from_secs(5)] {
        let (store, _cleanup) = support::redis::store().await;
        let rig = Rig::open(
            Arc::new(store.clone()),
            Arc::new(store),
            Policy::default(),
            options(grace),
        )
        .await;
        concurrent_refresh(rig).await;
    }
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refresh_exactly_one_wins_postgres() {
    for grace in [Duration::ZERO, Duration::from_secs(5)] {
        let (store, _schema) = support::postgres::fresh().await;
        let rig = Rig::open(
            Arc::new(store.clone()),
            Arc::new(store),
            Policy::default(),
            options(grace),
        )
        .await;
        concurrent_refresh(rig).await;
    }
}

// ---- Keys --------------------------------------------------------------------------------

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_owned())
        .collect()
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .expect("header")
        .kid
        .expect("kid")
}

/// The unknown-kid re-read is rate limited (1 s, real time).
async fn past_reload_limit() {
    tokio::time::sleep(Duration::from_millis(1100)).await;
}

#[tokio::test]
async fn key_rotation_keeps_the_previous_key_and_drops_the_oldest() {
    let rig = memory_rig().await;
    let (_, pair) = rig.sign_in("alice").await;
    let kid1 = kid_of(&pair.access_token);
    assert_eq!(kids(&rig.tokens.jwks().await), [kid1.as_str()]);
    let jwk = &rig.tokens.jwks().await["keys"][0];
    assert_eq!(jwk["kty"], "OKP");
    assert_eq!(jwk["alg"], "EdDSA");
    assert!(jwk.get("d").is_none(), "no private part in the JWKS");

    let kid2 = rotate_keys(
        rig.state.as_ref(),
        SigningAlgorithm::EdDSA,
        rig.sessions.now(),
    )
    .await
    .expect("rotate")
    .kid;
    assert_ne!(kid1, kid2);
    let listed = list_keys(rig.state.as_ref()).await.expect("list");
    assert_eq!(listed.len(), 2);
    assert!(listed[0].current && !listed[1].current);
    assert_eq!((&listed[0].kid, &listed[1].kid), (&kid2, &kid1));

    // A node started after the rotation signs with the new key, lists
    // both, and still accepts tokens of the previous one.
    let node_b = rig.another_node().await;
    assert_eq!(kids(&node_b.jwks().await), [kid2.clone(), kid1.clone()]);
    let (_, issued_b) = rig.sign_in("bob").await;
    let pair_b = node_b
        .issue(&issued_b.session, CLIENT)
        .await
        .expect("issue");
    assert_eq!(kid_of(&pair_b.access_token), kid2);
    node_b
        .authenticate(&pair.access_token)
        .await
        .expect("previous key verifies");

    // The first node meets a token with the new kid and picks the rotation up.
    past_reload_limit().await;
    rig.tokens
        .authenticate(&pair_b.access_token)
        .await
        .expect("new kid picked up");
    assert_eq!(kids(&rig.tokens.jwks().await), [kid2.clone(), kid1.clone()]);
    rig.tokens
        .authenticate(&pair.access_token)
        .await
        .expect("old key still verifies");

    // A second rotation drops the first key.
    let kid3 = rotate_keys(
        rig.state.as_ref(),
        SigningAlgorithm::EdDSA,
        rig.sessions.now(),
    )
    .await
    .expect("rotate")
    .kid;
    let node_c = rig.another_node().await;
    assert_eq!(kids(&node_c.jwks().await), [kid3.clone(), kid2.clone()]);
    let e = node_c.verify_access(&pair.access_token).await.unwrap_err();
    assert!(matches!(e, AccessError::UnknownKey), "{e:?}");
    node_c
        .authenticate(&pair_b.access_token)
        .await
        .expect("kid2 still verifies");
    let (_, issued_c) = rig.sign_in("carol").await;
    let pair_c = node_c
        .issue(&issued_c.session, CLIENT)
        .await
        .expect("issue");
    assert_eq!(kid_of(&pair_c.access_token), kid3);

    // The first node verified the kid1 token before; once it sees kid3 it
    // forgets that too.
    past_reload_limit().await;
    rig.tokens
        .authenticate(&pair_c.access_token)
        .await
        .expect("kid3 picked up");
    let e = rig
        .tokens
        .verify_access(&pair.access_token)
        .await
        .unwrap_err();
    assert!(matches!(e, AccessError::UnknownKey), "{e:?}");
    assert_eq!(kids(&rig.tokens.jwks().await), [kid3, kid2]);
}

#[tokio::test]
async fn rotation_keeps_refresh_tokens_valid() {
    let rig = memory_rig().await;
    let (_, pair) = rig.sign_in("alice").await;
    rotate_keys(
        rig.state.as_ref(),
        SigningAlgorithm::EdDSA,
        rig.sessions.now(),
    )
    .await
    .expect("rotate");
    rig.another_node()
        .await
        .refresh(&pair.refresh_token, None)
        .await
        .expect("the refresh MAC key is kept");
}

#[tokio::test]
async fn nodes_over_one_store_share_keys() {
    let rig = memory_rig().await;
    let node_b = rig.another_node().await;
    assert_eq!(kids(&rig.tokens.jwks().await), kids(&node_b.jwks().await));
    let (_, pair) = rig.sign_in("alice").await;
    node_b
        .authenticate(&pair.access_token)
        .await
        .expect("b verifies a's token");
    let next = node_b
        .refresh(&pair.refresh_token, None)
        .await
        .expect("b refreshes a's token");
    let e = rig
        .tokens
        .refresh(&pair.refresh_token, None)
        .await
        .unwrap_err();
    assert!(matches!(e, GrantError::Reused), "{e:?}");
    let e = node_b.authenticate(&next.access_token).await.unwrap_err();
    assert!(matches!(e, AccessError::SessionEnded), "{e:?}");
}

// ---- Introspection and revocation --------------------------------------------------------

async fn inactive(tokens: &Tokens, token: &str) {
    let answer = tokens.introspect(token).await.expect("introspect");
    assert_eq!(
        serde_json::to_string(&answer).expect("json"),
        r#"{"active":false}"#,
        "{token}"
    );
}

#[tokio::test]
async fn introspect_describes_live_tokens() {
    let rig = memory_rig().await;
    let (issued, pair) = rig.sign_in("alice").await;
    let access = rig
        .tokens
        .introspect(&pair.access_token)
        .await
        .expect("introspect");
    assert!(access.active);
    assert_eq!(access.token_type, Some("access_token"));
    assert_eq!(access.sub.as_deref(), Some("alice"));
    assert_eq!(access.client_id.as_deref(), Some(CLIENT));
    assert_eq!(
        access.sid.as_deref(),
        Some(issued.session.handle.to_string().as_str())
    );
    let refresh = rig
        .tokens
        .introspect(&pair.refresh_token)
        .await
        .expect("introspect");
    assert!(refresh.active);
    assert_eq!(refresh.token_type, Some("refresh_token"));
    assert_eq!(refresh.client_id.as_deref(), Some(CLIENT));
    assert_eq!(refresh.sub.as_deref(), Some("alice"));
    // The refresh token itself is never in the session record.
    let stored = rig
        .sessions
        .store()
        .load_by_handle(&issued.session.handle)
        .await
        .expect("load")
        .expect("session");
    for value in stored.data.values() {
        assert!(!value.contains(&pair.refresh_token));
        assert!(!value.contains(pair.refresh_token.split('.').nth(2).expect("nonce")));
    }
}

#[tokio::test]
async fn introspect_says_only_inactive_for_dead_tokens() {
    let rig = memory_rig().await;
    // Unknown, of every shape.
    let (_, other) = rig.sign_in("zed").await;
    let handle = other.session.handle.to_string();
    for unknown in [
        String::new(),
        "nonsense".to_owned(),
        "a.b.c".to_owned(),
        "a.b.c.d".to_owned(),
        format!("{handle}.0.{}.{}", b64(&[1; 32]), b64(&[2; 16])),
        signoff::SessionKeys::ephemeral()
            .issue(signoff::Timestamp::from_millis(0))
            .expose()
            .to_owned(),
        "x".repeat(10_000),
    ] {
        inactive(&rig.tokens, &unknown).await;
    }
    // Expired access token.
    let (_, pair) = rig.sign_in("alice").await;
    rig.clock.advance(Duration::from_secs(301));
    inactive(&rig.tokens, &pair.access_token).await;
    // Used refresh token.
    let next = rig
        .tokens
        .refresh(&pair.refresh_token, None)
        .await
        .expect("refresh");
    inactive(&rig.tokens, &pair.refresh_token).await;
    assert!(
        rig.tokens
            .introspect(&next.refresh_token)
            .await
            .expect("introspect")
            .active
    );
    // Revoked: access and refresh alike.
    assert!(rig
        .tokens
        .revoke(&next.refresh_token, Requester::Client(CLIENT))
        .await
        .expect("revoke"));
    inactive(&rig.tokens, &next.refresh_token).await;
    inactive(&rig.tokens, &next.access_token).await;
}

#[tokio::test]
async fn revoke_only_by_the_client_it_was_issued_to() {
    let rig = memory_rig().await;
    let (issued, pair) = rig.sign_in("alice").await;
    for token in [&pair.access_token, &pair.refresh_token] {
        assert!(!rig
            .tokens
            .revoke(token, Requester::Client("other"))
            .await
            .expect("revoke"));
    }
    rig.tokens
        .authenticate(&pair.access_token)
        .await
        .expect("untouched");
    rig.sessions
        .validate(issued.token.expose())
        .await
        .expect("untouched");

    assert!(rig
        .tokens
        .revoke(&pair.access_token, Requester::Client(CLIENT))
        .await
        .expect("revoke"));
    let e = rig
        .tokens
        .authenticate(&pair.access_token)
        .await
        .unwrap_err();
    assert!(matches!(e, AccessError::SessionEnded), "{e:?}");
    let e = rig
        .tokens
        .refresh(&pair.refresh_token, None)
        .await
        .unwrap_err();
    assert!(matches!(e, GrantError::Invalid(_)), "{e:?}");
    assert!(rig.sessions.validate(issued.token.expose()).await.is_err());
    // Again: nothing left to revoke.
    assert!(!rig
        .tokens
        .revoke(&pair.access_token, Requester::Client(CLIENT))
        .await
        .expect("revoke"));
}

#[tokio::test]
async fn revoking_a_refresh_token_ends_the_session() {
    let rig = memory_rig().await;
    let (_, pair) = rig.sign_in("alice").await;
    assert!(rig
        .tokens
        .revoke(&pair.refresh_token, Requester::Client(CLIENT))
        .await
        .expect("revoke"));
    let e = rig
        .tokens
        .authenticate(&pair.access_token)
        .await
        .unwrap_err();
    assert!(matches!(e, AccessError::SessionEnded), "{e:?}");
}

#[tokio::test]
async fn revoking_unknown_tokens_changes_nothing() {
    let rig = memory_rig().await;
    let (_, pair) = rig.sign_in("alice").await;
    let handle = pair.session.handle.to_string();
    for unknown in [
        String::new(),
        "nonsense".to_owned(),
        "a.b.c".to_owned(),
        format!("{handle}.0.{}.{}", b64(&[1; 32]), b64(&[2; 16])),
        signoff::SessionKeys::ephemeral()
            .issue(signoff::Timestamp::from_millis(0))
            .expose()
            .to_owned(),
    ] {
        for by in [Requester::Client(CLIENT), Requester::Admin] {
            assert!(!rig.tokens.revoke(&unknown, by).await.expect("revoke"));
        }
    }
    rig.tokens
        .authenticate(&pair.access_token)
        .await
        .expect("untouched");
}

// ---- StateStore ----------------------------------------------------------------------------

async fn compare_and_set(store: &dyn StateStore) {
    let name = "test_record";
    assert_eq!(store.get_state(name).await.expect("get"), None);
    // Updating what does not exist writes nothing.
    assert!(!store.put_state(name, b"v?", Some(1)).await.expect("put"));
    assert!(!store.put_state(name, b"v?", Some(0)).await.expect("put"));
    assert_eq!(store.get_state(name).await.expect("get"), None);

    assert!(store.put_state(name, b"first", None).await.expect("put"));
    assert!(!store.put_state(name, b"second", None).await.expect("put"));
    let v = store.get_state(name).await.expect("get").expect("record");
    assert_eq!((v.value.as_slice(), v.version), (&b"first"[..], 1));

    assert!(!store.put_state(name, b"stale", Some(0)).await.expect("put"));
    assert!(!store
        .put_state(name, b"future", Some(2))
        .await
        .expect("put"));
    assert!(store.put_state(name, b"v2", Some(1)).await.expect("put"));
    assert!(!store.put_state(name, b"again", Some(1)).await.expect("put"));
    let bytes: Vec<u8> = (0..=255).collect();
    assert!(store.put_state(name, &bytes, Some(2)).await.expect("put"));
    let v = store.get_state(name).await.expect("get").expect("record");
    assert_eq!((v.value, v.version), (bytes, 3));
    // Records are independent.
    assert_eq!(store.get_state("other").await.expect("get"), None);
    assert!(store.put_state("other", b"", None).await.expect("put"));
    let v = store
        .get_state("other")
        .await
        .expect("get")
        .expect("record");
    assert_eq!((v.value.len(), v.version), (0, 1));
    assert_eq!(
        store
            .get_state(name)
            .await
            .expect("get")
            .expect("record")
            .version,
        3
    );
}

/// Many writers with the same expected version: exactly one wins.
async fn one_writer_wins(store: Arc<dyn StateStore>) {
    assert!(store.put_state("race", b"0", None).await.expect("put"));
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .put_state("race", format!("{i}").as_bytes(), Some(1))
                    .await
                    .expect("put")
            })
        })
        .collect();
    let mut wins = 0;
    for task in tasks {
        wins += usize::from(task.await.expect("task"));
    }
    assert_eq!(wins, 1);
    let v = store.get_state("race").await.expect("get").expect("record");
    assert_eq!(v.version, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_store_compare_and_set_memory() {
    compare_and_set(&MemoryStore::new()).await;
    one_writer_wins(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_store_compare_and_set_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path().join("state.db"))
        .await
        .expect("open");
    compare_and_set(&store).await;
    let store = SqliteStore::open(dir.path().join("race.db"))
        .await
        .expect("open");
    one_writer_wins(Arc::new(store)).await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_store_compare_and_set_redis() {
    let (store, _cleanup) = support::redis::store().await;
    compare_and_set(&store).await;
    let (store, _cleanup2) = support::redis::store().await;
    one_writer_wins(Arc::new(store)).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_store_compare_and_set_postgres() {
    let (store, _schema) = support::postgres::fresh().await;
    compare_and_set(&store).await;
    let (store, _schema2) = support::postgres::fresh().await;
    one_writer_wins(Arc::new(store)).await;
}

/// Two nodes starting at once on an empty store end up with one key set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_share_one_key_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = SqliteStore::open(dir.path().join("keys.db"))
        .await
        .expect("open");
    let sessions = Sessions::new(Arc::new(sqlite.clone()), Policy::default());
    let state: Arc<dyn StateStore> = Arc::new(sqlite);
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let sessions = sessions.clone();
            let state = state.clone();
            tokio::spawn(async move {
                Tokens::open(sessions, state, options(Duration::ZERO))
                    .await
                    .expect("open")
            })
        })
        .collect();
    let mut sets = Vec::new();
    for open in opens {
        sets.push(kids(&open.await.expect("task").jwks().await));
    }
    assert!(sets.windows(2).all(|w| w[0] == w[1]), "{sets:?}");
    assert_eq!(list_keys(state.as_ref()).await.expect("list").len(), 1);
}

/// Invariant 4 (docs/security.md) for token mode: the store holds digests of refresh
/// tokens, never the tokens, and nothing of an access token. The database
/// file and its WAL are scanned for every token issued, live and used; the
/// stored digest of the live refresh token is the positive control.
#[tokio::test]
async fn the_sqlite_file_never_holds_a_refresh_or_access_token() {
    let rig = sqlite_rig(Duration::ZERO).await;
    let (_, first) = rig.sign_in("alice").await;
    let second = rig
        .tokens
        .refresh(&first.refresh_token, Some(CLIENT))
        .await
        .expect("refresh");
    let dir = rig._dir.as_ref().expect("a database directory").path();
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        bytes.extend(std::fs::read(entry.expect("entry").path()).expect("read"));
    }
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    for token in [
        &first.refresh_token,
        &second.refresh_token,
        &first.access_token,
        &second.access_token,
    ] {
        assert!(!contains(token.as_bytes()), "a token is stored in clear");
        // Nor its last two parts alone (a refresh token's nonce and tag, an
        // access token's claims and signature).
        for part in token.rsplit('.').take(2) {
            assert!(!contains(part.as_bytes()), "part of a token is stored");
        }
    }
    let digest: String = Sha256::digest(second.refresh_token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(
        contains(digest.as_bytes()),
        "the control: the live digest is stored"
    );
}

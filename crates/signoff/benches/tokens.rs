//! The bearer-token hot path beside the cookie one, measured in one run:
//!
//! | figure                          | baseline                       |
//! |---------------------------------|--------------------------------|
//! | `bearer/authenticate_warm`      | `baseline/cookie_validate_warm` |
//! | `bearer/verify_signature_cold`  | `baseline/ed25519_verify`      |
//!
//! - `bearer/authenticate_warm`: [`Tokens::authenticate`] of the same
//!   access token again and again: its signature is remembered and its
//!   session is served by a warm [`CachedStore`] over SQLite.
//! - `bearer/verify_signature_cold`: [`Tokens::authenticate`] of a token
//!   never seen before, so the signature and claims are checked in full;
//!   the session is still served from the cache. The tokens are minted
//!   (outside the timing) with the server's own key, with the claims the
//!   server would give them and a fresh `jti` each.
//! - `baseline/cookie_validate_warm`: [`Sessions::validate`] of a session
//!   token over the same cached store: what a cookie costs.
//! - `baseline/ed25519_verify`: one Ed25519 signature check in `ring`, the
//!   floor under a cold token.
//!
//! The clock stands still, so nothing expires and nothing is touched.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use criterion::{criterion_group, criterion_main, Criterion};
use signoff::token_mode::{AccessClaims, TokenOptions, Tokens};
use signoff::{
    CachedStore, ManualClock, NewSession, Policy, Sessions, SqliteStore, StateStore, Timestamp,
    UserId,
};
use tokio::runtime::Runtime;

const T0: i64 = 1_790_000_000_000;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Mints access tokens as the server would, with its current key.
struct Minter {
    kid: String,
    key: jsonwebtoken::EncodingKey,
    template: AccessClaims,
    next: u64,
}

impl Minter {
    async fn new(state: &dyn StateStore, template: AccessClaims) -> Self {
        let record = state
            .get_state("token_keys")
            .await
            .expect("get_state")
            .expect("keys");
        let keys: serde_json::Value = serde_json::from_slice(&record.value).expect("json");
        let current = &keys["signing"][0];
        let pkcs8 = STANDARD
            .decode(current["private_pkcs8"].as_str().expect("private key"))
            .expect("base64");
        Self {
            kid: current["kid"].as_str().expect("kid").to_owned(),
            key: jsonwebtoken::EncodingKey::from_ed_der(&pkcs8),
            template,
            next: 0,
        }
    }

    fn mint(&mut self) -> String {
        self.next += 1;
        let mut claims = self.template.clone();
        claims.jti = format!("bench-{}", self.next);
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.typ = Some("at+jwt".to_owned());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.key).expect("sign")
    }
}

fn bearer(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::at(Timestamp::from_millis(T0)));
    let (sessions, tokens, cookie, access, mut minter) = rt.block_on(async {
        let sqlite = SqliteStore::open(dir.path().join("tokens.db"))
            .await
            .expect("open");
        let sessions = Sessions::with_clock(
            Arc::new(CachedStore::new(sqlite.clone())),
            Policy::default(),
            clock.clone(),
        );
        let state: Arc<dyn StateStore> = Arc::new(sqlite);
        let tokens = Tokens::open(
            sessions.clone(),
            state.clone(),
            TokenOptions::new("https://auth.example.test", "api.example.test"),
        )
        .await
        .expect("tokens");
        let issued = sessions
            .login(None, NewSession::for_user(UserId::new("user000000000001")))
            .await
            .expect("login");
        let pair = tokens.issue(&issued.session, "app").await.expect("issue");
        let claims = tokens
            .verify_access(&pair.access_token)
            .await
            .expect("valid");
        let minter = Minter::new(state.as_ref(), (*claims).clone()).await;
        (sessions, tokens, issued.token, pair.access_token, minter)
    });
    // Warm: the signature is remembered, the session cached.
    rt.block_on(tokens.authenticate(&access)).expect("warm");
    rt.block_on(sessions.validate(cookie.expose()))
        .expect("warm");
    let minted = minter.mint();
    rt.block_on(tokens.authenticate(&minted))
        .expect("minted tokens are accepted");

    let mut group = c.benchmark_group("bearer");
    group.bench_function("authenticate_warm", |b| {
        b.to_async(&rt)
            .iter(|| async { tokens.authenticate(&access).await.expect("valid") })
    });
    group.bench_function("verify_signature_cold", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let fresh: Vec<String> = (0..iters).map(|_| minter.mint()).collect();
            let tokens = &tokens;
            async move {
                let start = Instant::now();
                for token in &fresh {
                    tokens.authenticate(token).await.expect("valid");
                }
                start.elapsed()
            }
        })
    });
    group.finish();

    let mut group = c.benchmark_group("baseline");
    group.bench_function("cookie_validate_warm", |b| {
        b.to_async(&rt)
            .iter(|| async { sessions.validate(cookie.expose()).await.expect("valid") })
    });
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key");
    let message = access.rsplit_once('.').expect("jwt").0.as_bytes().to_vec();
    let signature = ring::signature::KeyPair::public_key(&pair);
    let public = ring::signature::UnparsedPublicKey::new(
        &ring::signature::ED25519,
        signature.as_ref().to_vec(),
    );
    let sig = pair.sign(&message);
    group.bench_function("ed25519_verify", |b| {
        b.iter(|| {
            public
                .verify(std::hint::black_box(&message), sig.as_ref())
                .expect("verify")
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bearer
}
criterion_main!(benches);

//! OpenID Connect back-channel logout (docs/oidc.md) against a local
//! signer: a small provider in the test serves discovery and its signing
//! key, so the test can sign every token the OpenID conformance suite's
//! RP back-channel tests send, good and bad. Each bad one gets 400 and
//! ends nothing; a good one ends exactly the sessions it names, at once;
//! a replayed one is refused, also by another node. The full sign-in with
//! a real provider (panva's oidc-provider) is in tests/oidc_sign_in.rs.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use signoff::{NewSession, Policy, SessionData, Sessions, SqliteStore, StateStore, UserId};
use support::{get, post_form, services, Gateway};

const CLIENT_ID: &str = "signoff-test";
const SECRET: &str = "client-secret-for-tests";
const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// A provider that only signs: discovery and its key set, counting how
/// often the keys are read.
struct LocalProvider {
    issuer: String,
    key: EncodingKey,
    other_key: EncodingKey,
    jwks_reads: Arc<AtomicUsize>,
    /// What the token endpoint answers as `id_token` next.
    next_id_token: Arc<std::sync::Mutex<String>>,
    _server: tokio::task::JoinHandle<()>,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl LocalProvider {
    async fn start() -> LocalProvider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        // The raw public key is 0x04 || x || y.
        let raw = pair.public_key_raw();
        let jwks = json!({"keys": [{
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": "k1",
            "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
        }]});
        let discovery = json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/auth"),
            "token_endpoint": format!("{issuer}/token"),
            "jwks_uri": format!("{issuer}/jwks"),
            "end_session_endpoint": format!("{issuer}/session/end"),
            "backchannel_logout_supported": true,
        });
        let jwks_reads = Arc::new(AtomicUsize::new(0));
        let reads = jwks_reads.clone();
        let next_id_token = Arc::new(std::sync::Mutex::new(String::new()));
        let id_token = next_id_token.clone();
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || {
                    let d = discovery.clone();
                    async move {
                        (
                            [(http::header::CONTENT_TYPE, "application/json")],
                            d.to_string(),
                        )
                    }
                }),
            )
            .route(
                "/jwks",
                axum::routing::get(move || {
                    reads.fetch_add(1, Ordering::SeqCst);
                    let k = jwks.clone();
                    async move {
                        (
                            [(http::header::CONTENT_TYPE, "application/json")],
                            k.to_string(),
                        )
                    }
                }),
            )
            .route(
                "/token",
                axum::routing::post(move || {
                    let token = id_token.lock().unwrap().clone();
                    async move {
                        (
                            [(http::header::CONTENT_TYPE, "application/json")],
                            json!({"id_token": token, "token_type": "Bearer"}).to_string(),
                        )
                    }
                }),
            );
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        LocalProvider {
            issuer,
            key: EncodingKey::from_ec_der(&pair.serialize_der()),
            other_key: EncodingKey::from_ec_der(&other.serialize_der()),
            jwks_reads,
            next_id_token,
            _server: server,
        }
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    /// A good logout token's claims for `sub` and `sid`.
    fn claims(&self, sub: Option<&str>, sid: Option<&str>) -> Value {
        let mut c = json!({
            "iss": self.issuer,
            "aud": CLIENT_ID,
            "iat": Self::now(),
            "exp": Self::now() + 120,
            "jti": format!("{:016x}", rand::random::<u64>()),
            "events": { EVENT: {} },
        });
        if let Some(sub) = sub {
            c["sub"] = json!(sub);
        }
        if let Some(sid) = sid {
            c["sid"] = json!(sid);
        }
        c
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_with(claims, "k1", Some("logout+jwt"), &self.key)
    }

    fn sign_with(&self, claims: &Value, kid: &str, typ: Option<&str>, key: &EncodingKey) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.to_owned());
        header.typ = typ.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, key).unwrap()
    }
}

/// A node signing in with the local provider, on `db`.
fn node(dir: tempfile::TempDir, db: &str, issuer: &str) -> Gateway {
    node_with(dir, db, issuer, &[])
}

/// The same with `extra` flags.
fn node_with(dir: tempfile::TempDir, db: &str, issuer: &str, extra: &[&str]) -> Gateway {
    let secret = dir.path().join("client-secret");
    std::fs::write(&secret, SECRET).unwrap();
    let secret = secret.display().to_string();
    let mut args = vec![
        "--oidc-issuer",
        issuer,
        "--oidc-client-id",
        CLIENT_ID,
        "--oidc-client-secret-file",
        &secret,
    ];
    args.extend_from_slice(extra);
    Gateway::start_on(dir, db, None, &args)
}

/// A provider user's session, made the way a sign-in makes it.
async fn provider_session(engine: &Sessions, sub: &str, sid: &str) -> String {
    let mut data = SessionData::new();
    data.insert("signoff.user".into(), sub.into());
    data.insert("signoff.oidc.provider".into(), "default".into());
    data.insert("signoff.oidc.sub".into(), sub.into());
    data.insert("signoff.oidc.sid".into(), sid.into());
    let new = NewSession::for_user(UserId::new(format!("oidc:default:{sub}"))).reserved_data(data);
    engine.create(new).await.unwrap().token.expose().to_owned()
}

/// Whether the gateway takes `token` as signed in (forward-auth).
async fn alive(gw: &Gateway, token: &str) -> bool {
    let cookie = format!("signoff={token}");
    let r = get(
        &gw.url("/.signoff/auth"),
        &[("cookie", cookie.as_str()), ("x-forwarded-uri", "/p")],
    )
    .await;
    match r.status {
        200 => true,
        401 => false,
        other => panic!("/auth answered {other}: {}", r.text()),
    }
}

async fn send(gw: &Gateway, token: &str) -> support::Reply {
    post_form(
        &gw.url("/.signoff/oidc/backchannel-logout"),
        &[("logout_token", token)],
        &[],
    )
    .await
}

#[tokio::test]
async fn backchannel_logout_takes_only_good_tokens_and_ends_what_they_name() {
    let provider = LocalProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signoff.db");
    let db = format!("sqlite://{}", path.display());
    let gw = node(dir, &db, &provider.issuer);
    let engine = Sessions::new(
        Arc::new(SqliteStore::open(&path).await.unwrap()),
        Policy::default(),
    );
    let alice = provider_session(&engine, "alice", "sid-a").await;
    assert!(alive(&gw, &alice).await);

    // The negative matrix: each refused with 400, and nothing ends.
    let good = provider.claims(Some("alice"), None);
    let with = |key: &str, value: Value| {
        let mut c = good.clone();
        c[key] = value;
        c
    };
    let without = |key: &str| {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(key);
        c
    };
    let unsigned = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(good.to_string().as_bytes())
    );
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &good,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let now = LocalProvider::now();
    let cases: Vec<(&str, String)> = vec![
        ("alg none", unsigned),
        ("HS256 with the client secret", hs256),
        (
            "signed by another key",
            provider.sign_with(&good, "k1", None, &provider.other_key),
        ),
        ("no events", provider.sign(&without("events"))),
        (
            "a wrong event",
            provider.sign(&with(
                "events",
                json!({"http://schemas.openid.net/event/other": {}}),
            )),
        ),
        (
            "events not an object",
            provider.sign(&with("events", json!([EVENT]))),
        ),
        ("with a nonce", provider.sign(&with("nonce", json!("n")))),
        (
            "a wrong aud",
            provider.sign(&with("aud", json!("someone-else"))),
        ),
        (
            "a wrong iss",
            provider.sign(&with("iss", json!("http://127.0.0.1:1"))),
        ),
        ("expired", provider.sign(&with("exp", json!(now - 600)))),
        ("too old", provider.sign(&with("iat", json!(now - 3600)))),
        (
            "issued in the future",
            provider.sign(&with("iat", json!(now + 3600))),
        ),
        ("no iat", provider.sign(&without("iat"))),
        ("neither sid nor sub", provider.sign(&without("sub"))),
        ("no jti", provider.sign(&without("jti"))),
        (
            "an access token's typ",
            provider.sign_with(&good, "k1", Some("at+jwt"), &provider.key),
        ),
        ("truncated", provider.sign(&good)[..60].to_owned()),
        ("garbage", "not.a.jwt".to_owned()),
        ("oversized", "a".repeat(20_000)),
    ];
    for (what, token) in &cases {
        let r = send(&gw, token).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        assert_eq!(r.header("cache-control"), Some("no-store"), "{what}");
        assert!(alive(&gw, &alice).await, "{what} ended the session");
    }
    let empty = post_form(&gw.url("/.signoff/oidc/backchannel-logout"), &[], &[]).await;
    assert_eq!(empty.status, 400);

    // A flood of unknown key ids reads the provider's keys at most once
    // more (a minute's cooldown).
    let before = provider.jwks_reads.load(Ordering::SeqCst);
    for n in 0..20 {
        let r = send(
            &gw,
            &provider.sign_with(&good, &format!("unknown-{n}"), None, &provider.key),
        )
        .await;
        assert_eq!(r.status, 400);
    }
    let reads = provider.jwks_reads.load(Ordering::SeqCst) - before;
    assert!(reads <= 1, "20 unknown kids read the keys {reads} times");

    // `sid` ends that provider session's sessions, not the user's others.
    let alice_2 = provider_session(&engine, "alice", "sid-b").await;
    let r = send(
        &gw,
        &provider.sign(&provider.claims(Some("alice"), Some("sid-a"))),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!alive(&gw, &alice).await, "the sid's session ended at once");
    assert!(alive(&gw, &alice_2).await, "another provider session lives");

    // `sub` alone ends what was made before the token was issued.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let claims = provider.claims(Some("alice"), None);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let later = provider_session(&engine, "alice", "sid-c").await;
    let token = provider.sign(&claims);
    let r = send(&gw, &token).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!alive(&gw, &alice_2).await);
    assert!(alive(&gw, &later).await, "made after the token's iat");
    // A replay is refused.
    let again = send(&gw, &token).await;
    assert_eq!(again.status, 400, "a replayed jti");

    // `sid` alone finds its user through the record a sign-in keeps.
    let sid_only = provider_session(&engine, "bob", "sid-bob").await;
    let store = SqliteStore::open(&path).await.unwrap();
    let record = {
        use sha2::Digest as _;
        format!("oidc.sid.default.{:x}", sha2::Sha256::digest(b"sid-bob"))
    };
    assert!(store.put_state(&record, b"bob", None).await.unwrap());
    let r = send(&gw, &provider.sign(&provider.claims(None, Some("sid-bob")))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!alive(&gw, &sid_only).await);

    // The operator ends a provider user's sessions by `oidc:PROVIDER:SUB`.
    let listed = support::cli(&["sessions", "list", "--user", "oidc:default:alice"], &db);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("oidc:default:alice"));
    let out = support::cli(&["sessions", "end", "--user", "oidc:default:alice"], &db);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ended 1 session"),
        "{:?}",
        out
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while alive(&gw, &later).await {
        assert!(
            std::time::Instant::now() < deadline,
            "the CLI's end did not reach the gateway"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn redis_a_replayed_logout_token_is_refused_by_the_other_node() {
    let Some(base) = services::shared_redis() else {
        return;
    };
    let provider = LocalProvider::start().await;
    let prefix = services::unique("signoff-test-oidc-");
    let db = format!("{base}?prefix={prefix}");
    let a = node(tempfile::tempdir().unwrap(), &db, &provider.issuer);
    let b = node(tempfile::tempdir().unwrap(), &db, &provider.issuer);
    let token = provider.sign(&provider.claims(Some("carol"), Some("s1")));
    assert_eq!(send(&a, &token).await.status, 200);
    assert_eq!(
        send(&b, &token).await.status,
        400,
        "replayed to the other node"
    );
    assert_eq!(send(&a, &token).await.status, 400);
    let _ = std::process::Command::new("sh")
        .args([
            "-c",
            &format!(
                "redis-cli -u '{base}' --scan --pattern '{prefix}:*' | xargs -r redis-cli -u '{base}' unlink"
            ),
        ])
        .output();
}

/// With `--password-sign-in false` the login page offers the provider
/// alone, and a password form posted anyway signs nobody in; without it,
/// both are there.
#[tokio::test]
async fn passwords_can_be_turned_off_beside_a_provider() {
    let provider = LocalProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("signoff.db").display());
    support::add_user(&db, support::USER, support::PASSWORD);
    for (password, form_shown) in [("true", true), ("false", false)] {
        let gw = node_with(
            tempfile::tempdir().unwrap(),
            &db,
            &provider.issuer,
            &[
                "--oidc-name",
                "Acme ID",
                "--password-sign-in",
                password,
                "--tokens",
            ],
        );
        let page = get(&gw.url("/.signoff/login"), &[]).await.text();
        assert!(page.contains("Sign in with Acme ID"), "{page}");
        assert_eq!(page.contains("name=\"password\""), form_shown, "{page}");
        let login = post_form(
            &gw.url("/.signoff/login"),
            &[("username", support::USER), ("password", support::PASSWORD)],
            &[("origin", &gw.origin)],
        )
        .await;
        let api = support::request(
            http::Method::POST,
            &gw.url("/.signoff/api/login"),
            &[],
            Some((
                "application/json",
                format!(
                    "{{\"username\":\"{}\",\"password\":\"{}\"}}",
                    support::USER,
                    support::PASSWORD
                )
                .into_bytes(),
            )),
        )
        .await;
        if form_shown {
            assert_eq!(login.status, 303);
            assert_eq!(api.status, 200, "{}", api.text());
        } else {
            assert_eq!(login.status, 403, "{}", login.text());
            assert!(login.new_cookie("signoff").is_none());
            assert_eq!(
                api.status,
                403,
                "token mode's api/login too: {}",
                api.text()
            );
        }
    }
}

/// A provider that cannot be told of a sign-out (here: told not to) is
/// asked for the password at the next sign-in: the sign-out goes to the
/// central signed-out page, which remembers it, and the next sign-in sends
/// `prompt=login`.
#[tokio::test]
async fn a_signout_the_provider_cannot_hear_makes_the_next_sign_in_ask_for_the_password() {
    let provider = LocalProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signoff.db");
    let db = format!("sqlite://{}", path.display());
    let gw = node_with(
        dir,
        &db,
        &provider.issuer,
        &["--oidc-logout-at-provider", "false"],
    );
    let engine = Sessions::new(
        Arc::new(SqliteStore::open(&path).await.unwrap()),
        Policy::default(),
    );
    let dave = provider_session(&engine, "dave", "sid-d").await;
    let start = get(&gw.url("/.signoff/oidc/start?provider=default"), &[]).await;
    assert!(!start.header("location").unwrap().contains("prompt=login"));
    let out = post_form(
        &gw.url("/.signoff/logout"),
        &[],
        &[
            ("cookie", &format!("signoff={dave}")),
            ("origin", &gw.origin),
        ],
    )
    .await;
    assert_eq!(out.status, 303);
    let to = out.header("location").unwrap().to_owned();
    assert_eq!(to, gw.url("/.signoff/signed-out?relogin=1"));
    assert!(out.header("clear-site-data").is_some());
    let page = get(&to, &[]).await;
    let relogin = page.new_cookie("signoff-relogin").expect("remembered");
    let start = get(
        &gw.url("/.signoff/oidc/start?provider=default"),
        &[("cookie", &format!("signoff-relogin={relogin}"))],
    )
    .await;
    assert!(start.header("location").unwrap().contains("&prompt=login"));
}

/// The ID token's checks at the callback, against the local signer (whose
/// token endpoint answers what the test sets): every bad token gets 400 and
/// no session; the good one, the control, signs in.
#[tokio::test]
async fn the_callback_takes_only_a_good_id_token() {
    let provider = LocalProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("signoff.db").display());
    let gw = node(dir, &db, &provider.issuer);
    let now = LocalProvider::now();
    let claims = |nonce: &str| {
        json!({"iss": provider.issuer, "aud": CLIENT_ID, "sub": "erin",
            "preferred_username": "erin", "nonce": nonce, "iat": now, "exp": now + 300})
    };
    let signed = |c: Value| provider.sign_with(&c, "k1", None, &provider.key);
    let changed = |key: &'static str, value: Value| {
        move |nonce: &str| {
            let mut c = claims(nonce);
            c[key] = value.clone();
            signed(c)
        }
    };
    type Make<'a> = Box<dyn Fn(&str) -> String + 'a>;
    let cases: Vec<(&str, Make, &str)> = vec![
        (
            "a wrong nonce",
            Box::new(changed("nonce", json!("another"))),
            "",
        ),
        ("no nonce", Box::new(changed("nonce", Value::Null)), ""),
        (
            "a code for another client (aud)",
            Box::new(changed("aud", json!("another-client"))),
            "",
        ),
        (
            "several audiences, no azp",
            Box::new(changed("aud", json!([CLIENT_ID, "x"]))),
            "",
        ),
        (
            "azp another client",
            Box::new(changed("azp", json!("x"))),
            "",
        ),
        (
            "a wrong iss",
            Box::new(changed("iss", json!("https://evil.example"))),
            "",
        ),
        ("expired", Box::new(changed("exp", json!(now - 600))), ""),
        (
            "issued in the future",
            Box::new(changed("iat", json!(now + 3600))),
            "",
        ),
        ("no sub", Box::new(changed("sub", Value::Null)), ""),
        (
            "alg none",
            Box::new(|nonce: &str| {
                format!(
                    "{}.{}.",
                    b64(br#"{"alg":"none"}"#),
                    b64(claims(nonce).to_string().as_bytes())
                )
            }),
            "",
        ),
        (
            "HS256 with the client secret",
            Box::new(|nonce: &str| {
                jsonwebtoken::encode(
                    &Header::new(Algorithm::HS256),
                    &claims(nonce),
                    &EncodingKey::from_secret(SECRET.as_bytes()),
                )
                .unwrap()
            }),
            "",
        ),
        (
            "signed by another key",
            Box::new(|nonce: &str| {
                provider.sign_with(&claims(nonce), "k1", None, &provider.other_key)
            }),
            "",
        ),
        (
            "an answer naming another issuer (mix-up)",
            Box::new(|nonce: &str| signed(claims(nonce))),
            "&iss=https%3A%2F%2Fevil.example",
        ),
        ("not a JWT", Box::new(|_: &str| "garbage".to_owned()), ""),
    ];
    for (what, make, extra) in &cases {
        let r = callback_with(&gw, &provider, make, extra).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        assert!(
            r.new_cookie("signoff").is_none(),
            "{what} signed someone in"
        );
    }
    // A good token whose name no user can have: refused, saying why.
    let spaced = callback_with(
        &gw,
        &provider,
        &changed("preferred_username", json!("erin smith")),
        "",
    )
    .await;
    assert_eq!(spaced.status, 403, "{}", spaced.text());
    assert!(
        spaced.text().contains("as your user name"),
        "{}",
        spaced.text()
    );
    assert!(spaced.new_cookie("signoff").is_none());
    // The control: the same sign-in with a good token.
    let good = callback_with(&gw, &provider, &|nonce: &str| signed(claims(nonce)), "").await;
    assert_eq!(good.status, 303, "{}", good.text());
    assert!(good.new_cookie("signoff").is_some());
}

/// One sign-in: the callback's answer when the provider's ID token is what
/// `make` builds from the nonce signoff sent (`extra` added to the
/// callback's query).
async fn callback_with(
    gw: &Gateway,
    provider: &LocalProvider,
    make: &dyn Fn(&str) -> String,
    extra: &str,
) -> support::Reply {
    let param = |url: &str, name: &str| {
        url.split(['?', '&'])
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
            .unwrap_or_default()
            .to_owned()
    };
    let start = get(&gw.url("/.signoff/oidc/start?provider=default"), &[]).await;
    let location = start.header("location").unwrap().to_owned();
    let pending = start.new_cookie("signoff-oidc").unwrap();
    *provider.next_id_token.lock().unwrap() = make(&param(&location, "nonce"));
    let url = gw.url(&format!(
        "/.signoff/oidc/callback?code=c&state={}{extra}",
        param(&location, "state")
    ));
    get(&url, &[("cookie", &format!("signoff-oidc={pending}"))]).await
}

/// The admin API lists and ends a provider user's sessions by
/// `oidc:PROVIDER:SUB`, like a local user's by name.
#[tokio::test]
async fn the_admin_api_ends_a_provider_users_sessions() {
    let provider = LocalProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signoff.db");
    let db = format!("sqlite://{}", path.display());
    let (admin, hash) = support::admin_token();
    let gw = node_with(dir, &db, &provider.issuer, &["--admin-token-sha256", &hash]);
    let engine = Sessions::new(
        Arc::new(SqliteStore::open(&path).await.unwrap()),
        Policy::default(),
    );
    let frank = provider_session(&engine, "frank", "sid-f").await;
    let bearer = format!("Bearer {admin}");
    let url = gw.url("/.signoff/admin/users/oidc:default:frank/sessions");
    let list = get(&url, &[("authorization", &bearer)]).await;
    assert_eq!(list.status, 200, "{}", list.text());
    assert_eq!(list.json().as_array().unwrap().len(), 1);
    let ended = support::request(
        http::Method::DELETE,
        &url,
        &[("authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(ended.status, 200, "{}", ended.text());
    assert_eq!(ended.json()["ended"], 1);
    assert!(!alive(&gw, &frank).await);
}

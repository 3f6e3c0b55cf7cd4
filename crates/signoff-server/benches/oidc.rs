//! OpenID Connect figures of issue 20 (docs/benchmarks.md, "OpenID Connect
//! (issue 20)"): how soon a provider's back-channel logout posted to node
//! A is refused on node B (Redis, B caching sessions for 30 s), beside a
//! signoff sign-out on A seen on B in the same run; and what a sign-in's
//! callback costs inside signoff, beside a signed-in forward-auth check.
//!
//! The provider is a local signer in this process (discovery, keys, and a
//! token endpoint that answers at once), so the figures are signoff's own.
//!
//! ```sh
//! cargo bench -p signoff-server --bench oidc                      # 200 trials, about 20 s
//! SIGNOFF_BENCH_QUICK=1 cargo bench -p signoff-server --bench oidc   # 5 trials (CI: -- --test)
//! ```
//!
//! Redis comes from `SIGNOFF_TEST_REDIS` (default redis://127.0.0.1:6379);
//! without it the run fails. Every process started here is killed when its
//! guard drops, also on panic.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const CLIENT_ID: &str = "bench";
const USER: &str = "alice";
const PASSWORD: &str = "correct horse battery";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The local signer.
struct Provider {
    issuer: String,
    key: Arc<EncodingKey>,
}

impl Provider {
    async fn start() -> Provider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = pair.public_key_raw();
        let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256",
            "kid": "k1", "x": b64(&raw[1..33]), "y": b64(&raw[33..65])}]})
        .to_string();
        let discovery = json!({
            "issuer": issuer, "authorization_endpoint": format!("{issuer}/auth"),
            "token_endpoint": format!("{issuer}/token"), "jwks_uri": format!("{issuer}/jwks"),
        })
        .to_string();
        let key = Arc::new(EncodingKey::from_ec_der(&pair.serialize_der()));
        let (token_key, token_issuer) = (key.clone(), issuer.clone());
        let json = |body: String| ([(http::header::CONTENT_TYPE, "application/json")], body);
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || {
                    let d = discovery.clone();
                    async move { json(d) }
                }),
            )
            .route(
                "/jwks",
                axum::routing::get(move || {
                    let k = jwks.clone();
                    async move { json(k) }
                }),
            )
            // The code is the nonce (the bench reads it off the
            // authorization URL): an ID token for it, at once.
            .route(
                "/token",
                axum::routing::post(move |body: Bytes| {
                    let (key, iss) = (token_key.clone(), token_issuer.clone());
                    async move {
                        let form: Vec<(String, String)> =
                            form_urlencoded::parse(&body).into_owned().collect();
                        let code = form
                            .iter()
                            .find(|(k, _)| k == "code")
                            .map(|(_, v)| v.clone())
                            .unwrap_or_default();
                        let claims = json!({"iss": iss, "aud": CLIENT_ID, "sub": "carol",
                            "preferred_username": "carol", "nonce": code, "sid": code,
                            "iat": now(), "exp": now() + 300});
                        let token = sign(&key, &claims);
                        json(json!({"id_token": token, "token_type": "Bearer"}).to_string())
                    }
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Provider { issuer, key }
    }

    fn logout_token(&self, sid: &str) -> String {
        sign(
            &self.key,
            &json!({"iss": self.issuer, "aud": CLIENT_ID, "sub": "carol", "sid": sid,
                "iat": now(), "exp": now() + 120, "jti": format!("{:032x}", rand::random::<u128>()),
                "events": {"http://schemas.openid.net/event/backchannel-logout": {}}}),
        )
    }
}

fn sign(key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("k1".into());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

/// A `signoff serve` process, killed on drop.
struct Node {
    child: Child,
    origin: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn node(db: &str, issuer: &str, secret: &std::path::Path, extra: &[&str]) -> Node {
    let mut child = Command::new(env!("CARGO_BIN_EXE_signoff"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--db",
            db,
            "--oidc-issuer",
            issuer,
        ])
        .args(["--oidc-client-id", CLIENT_ID, "--oidc-client-secret-file"])
        .arg(secret)
        .args(extra)
        .env("SIGNOFF_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let origin = line
        .trim()
        .strip_prefix("signoff listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .trim_end_matches('/')
        .to_owned();
    Node { child, origin }
}

type Http = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

async fn call(
    client: &Http,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    form: Option<String>,
) -> (u16, HeaderMap) {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    if form.is_some() {
        b = b.header("content-type", "application/x-www-form-urlencoded");
    }
    let r = client
        .request(
            b.body(Full::new(Bytes::from(form.unwrap_or_default())))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let _ = r.into_body().collect().await;
    (status, headers)
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all("set-cookie").iter().find_map(|v| {
        let v = v.to_str().ok()?;
        let (n, rest) = v.split_once('=')?;
        (n == name).then(|| rest.split(';').next().unwrap_or("").to_owned())
    })
}

fn param(url: &str, name: &str) -> String {
    url.split(['?', '&'])
        .find_map(|p| p.strip_prefix(&format!("{name}=")))
        .unwrap_or_default()
        .to_owned()
}

/// A sign-in through the provider: (session token, the provider's sid,
/// time of the callback).
async fn sign_in(client: &Http, a: &Node) -> (String, String, Duration) {
    let (status, h) = call(
        client,
        Method::GET,
        &format!("{}/.signoff/oidc/start?provider=default", a.origin),
        &[],
        None,
    )
    .await;
    assert_eq!(status, 303);
    let location = h["location"].to_str().unwrap().to_owned();
    let pending = cookie_value(&h, "signoff-oidc").unwrap();
    let (state, nonce) = (param(&location, "state"), param(&location, "nonce"));
    let url = format!(
        "{}/.signoff/oidc/callback?code={nonce}&state={state}",
        a.origin
    );
    let cookie = format!("signoff-oidc={pending}");
    let t = Instant::now();
    let (status, h) = call(client, Method::GET, &url, &[("cookie", &cookie)], None).await;
    let took = t.elapsed();
    assert_eq!(status, 303, "callback");
    // The local provider's sid is the nonce.
    (cookie_value(&h, "signoff").unwrap(), nonce, took)
}

async fn alive(client: &Http, node: &Node, token: &str) -> bool {
    let cookie = format!("signoff={token}");
    let (status, _) = call(
        client,
        Method::GET,
        &format!("{}/.signoff/auth", node.origin),
        &[("cookie", &cookie), ("x-forwarded-uri", "/p")],
        None,
    )
    .await;
    status == 200
}

/// From `t` until node `b` refuses `token`.
async fn refused_after(client: &Http, b: &Node, token: &str, t: Instant) -> Duration {
    while alive(client, b, token).await {
        assert!(t.elapsed() < Duration::from_secs(5), "never refused");
    }
    t.elapsed()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let quick = std::env::var("SIGNOFF_BENCH_QUICK").is_ok_and(|v| v == "1")
        || std::env::args().any(|a| a == "--test");
    let trials = if quick { 5 } else { 200 };
    let redis = std::env::var("SIGNOFF_TEST_REDIS").unwrap_or("redis://127.0.0.1:6379".into());
    let prefix = format!("signoff-bench-oidc-{:016x}", rand::random::<u64>());
    let db = format!("{redis}?prefix={prefix}");
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "bench-secret").unwrap();
    let add = Command::new(env!("CARGO_BIN_EXE_signoff"))
        .args(["user", "add", USER, "--password-stdin", "--db", &db])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write as _;
            writeln!(c.stdin.take().unwrap(), "{PASSWORD}")?;
            c.wait()
        })
        .unwrap();
    assert!(add.success(), "signoff user add (is Redis at {redis}?)");
    let provider = Provider::start().await;
    let a = node(&db, &provider.issuer, &secret, &[]);
    let b = node(
        &db,
        &provider.issuer,
        &secret,
        &["--cache-staleness", "30s"],
    );
    let client: Http = Client::builder(TokioExecutor::new()).build_http();

    let (mut callback, mut check, mut backchannel, mut logout) = (vec![], vec![], vec![], vec![]);
    for _ in 0..trials {
        // A provider's logout, posted to A, seen on B.
        let (token, sid, took) = sign_in(&client, &a).await;
        callback.push(took);
        let t = Instant::now();
        assert!(alive(&client, &a, &token).await);
        check.push(t.elapsed());
        assert!(alive(&client, &b, &token).await, "B caches it");
        let t = Instant::now();
        let form = format!("logout_token={}", provider.logout_token(&sid));
        let (status, _) = call(
            &client,
            Method::POST,
            &format!("{}/.signoff/oidc/backchannel-logout", a.origin),
            &[],
            Some(form),
        )
        .await;
        assert_eq!(status, 200, "back-channel logout");
        backchannel.push(refused_after(&client, &b, &token, t).await);

        // The baseline: a password user's sign-out on A, seen on B.
        let login = format!("username={USER}&password={}", PASSWORD.replace(' ', "+"));
        let (status, h) = call(
            &client,
            Method::POST,
            &format!("{}/.signoff/login", a.origin),
            &[("origin", &a.origin)],
            Some(login),
        )
        .await;
        assert_eq!(status, 303);
        let own = cookie_value(&h, "signoff").unwrap();
        assert!(alive(&client, &b, &own).await);
        let t = Instant::now();
        let cookie = format!("signoff={own}");
        let (status, _) = call(
            &client,
            Method::POST,
            &format!("{}/.signoff/logout", a.origin),
            &[("cookie", &cookie), ("origin", &a.origin)],
            None,
        )
        .await;
        assert_eq!(status, 303);
        logout.push(refused_after(&client, &b, &own, t).await);
    }
    for v in [&mut callback, &mut check, &mut backchannel, &mut logout] {
        v.sort();
    }
    println!("OpenID Connect, {trials} trials (node B caches sessions for 30 s):");
    println!("| figure | p50 | p99 |");
    println!("|---|---|---|");
    for (name, v) in [
        (
            "provider's back-channel logout on A → first refusal on B",
            &backchannel,
        ),
        (
            "baseline: signoff sign-out on A → first refusal on B",
            &logout,
        ),
        (
            "sign-in callback inside signoff (provider answers at once)",
            &callback,
        ),
        ("baseline: a signed-in forward-auth check", &check),
    ] {
        println!(
            "| {name} | {} | {} |",
            ms(percentile(v, 0.5)),
            ms(percentile(v, 0.99))
        );
    }
    let ratio = |x: &[Duration], y: &[Duration]| {
        percentile(x, 0.5).as_secs_f64() / percentile(y, 0.5).as_secs_f64()
    };
    println!(
        "back-channel / sign-out (p50): {:.2}×; callback / check (p50): {:.1}×",
        ratio(&backchannel, &logout),
        ratio(&callback, &check)
    );
    drop((a, b));
    let _ = Command::new("sh")
        .args([
            "-c",
            &format!("redis-cli -u '{redis}' --scan --pattern '{prefix}:*' | xargs -r redis-cli -u '{redis}' unlink"),
        ])
        .output();
}

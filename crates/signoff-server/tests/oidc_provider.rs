//! The OpenID provider the OpenID Connect tests use (tests/support/oidc.rs,
//! tests/oidc/provider.mjs), checked without signoff: its discovery
//! document, a whole authorization code flow with PKCE by plain HTTP (the
//! ID token's claims and `sid`), back-channel logout tokens that reach a
//! receiver on loopback (with and without a provider session, with `sid`
//! and with `sub` alone), RP-initiated logout, and the control routes; and
//! in Chromium, the provider's own sign-in and sign-out pages through the
//! helpers the gateway's browser tests use.

mod support;

use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use support::browser::{Browser, Engine, Error, Result};
use support::oidc::{jwt_parts, pkce_challenge, random_text, OidcProvider, ProviderAgent, SCOPES};
use support::{get, post_form};

const REDIRECT_URI: &str = "http://127.0.0.1:1/oidc/callback";
const POST_LOGOUT_REDIRECT_URI: &str = "http://127.0.0.1:1/signed-out";
const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// One request the back-channel receiver got.
#[derive(Debug)]
struct Delivery {
    request_line: String,
    content_type: String,
    body: String,
}

impl Delivery {
    fn logout_token(&self) -> String {
        form_urlencoded::parse(self.body.as_bytes())
            .find(|(k, _)| k == "logout_token")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_else(|| panic!("no logout_token in {self:?}"))
    }
}

/// A bare HTTP server on loopback standing in for the client (signoff):
/// its back-channel logout endpoint answers a POST with 200, or 400 to a
/// token whose `sub` is `refused`; any GET (the callback, the page after
/// logout) gets a small page. Every request goes to the test.
struct Receiver {
    origin: String,
    /// The back-channel logout endpoint.
    url: String,
    got: mpsc::UnboundedReceiver<Delivery>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let url = format!("{origin}/oidc/backchannel-logout");
        let (tx, got) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve_one(socket, tx.clone()));
            }
        });
        Receiver { origin, url, got }
    }

    /// The next POST (GETs before it are passed over).
    async fn next(&mut self) -> Delivery {
        loop {
            let delivery = tokio::time::timeout(Duration::from_secs(10), self.got.recv())
                .await
                .expect("no back-channel request within 10 s")
                .expect("receiver gone");
            if delivery.request_line.starts_with("POST ") {
                return delivery;
            }
        }
    }

    /// Nothing more arrived (after a short wait).
    async fn nothing_more(&mut self) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Ok(extra) = self.got.try_recv() {
            panic!("unexpected back-channel request {extra:?}");
        }
    }
}

async fn serve_one(mut socket: TcpStream, tx: mpsc::UnboundedSender<Delivery>) {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
            .unwrap_or_default()
    };
    let length: usize = header("content-length").parse().unwrap_or(0);
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = String::from_utf8_lossy(&buf[head_end..]).into_owned();
    let delivery = Delivery {
        request_line: head.lines().next().unwrap_or_default().to_owned(),
        content_type: header("content-type"),
        body,
    };
    let refused = form_urlencoded::parse(delivery.body.as_bytes())
        .find(|(k, _)| k == "logout_token")
        .is_some_and(|(_, token)| jwt_parts(&token).1["sub"] == "refused");
    const PAGE: &str = "<!DOCTYPE html><title>client</title><p>the client's page</p>";
    let (status, content_type, body) = if delivery.request_line.starts_with("GET ") {
        ("200 OK", "text/html; charset=utf-8", PAGE)
    } else if refused {
        ("400 Bad Request", "text/plain", "")
    } else {
        ("200 OK", "text/plain", "")
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = socket.write_all(reply.as_bytes()).await;
    let _ = tx.send(delivery);
}

/// Checks a logout token as the spec has it, and returns its claims.
fn check_logout_token(op: &OidcProvider, jwks: &Value, delivery: &Delivery) -> Value {
    assert!(
        delivery
            .request_line
            .starts_with("POST /oidc/backchannel-logout "),
        "{delivery:?}"
    );
    assert_eq!(delivery.content_type, "application/x-www-form-urlencoded");
    let (header, claims) = jwt_parts(&delivery.logout_token());
    assert_eq!(header["alg"], "RS256", "{header}");
    assert_eq!(header["typ"], "logout+jwt", "{header}");
    let kids: Vec<&Value> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| &k["kid"])
        .collect();
    assert!(kids.contains(&&header["kid"]), "{header} not in {jwks}");
    assert_eq!(claims["iss"], op.issuer.as_str(), "{claims}");
    assert_eq!(claims["aud"], op.client_id.as_str(), "{claims}");
    assert_eq!(
        claims["events"],
        json!({ BACKCHANNEL_EVENT: {} }),
        "{claims}"
    );
    assert!(
        claims["jti"].as_str().is_some_and(|j| !j.is_empty()),
        "{claims}"
    );
    assert!(claims.get("nonce").is_none(), "{claims}");
    let iat = claims["iat"].as_i64().expect("iat");
    let exp = claims["exp"].as_i64().expect("exp");
    assert!(exp > iat, "{claims}");
    claims
}

#[tokio::test]
async fn discovery_and_backchannel_logout_without_a_provider_session() {
    let mut receiver = Receiver::start().await;
    let Some(op) = OidcProvider::start(REDIRECT_URI, &receiver.url, POST_LOGOUT_REDIRECT_URI)
    else {
        return;
    };
    assert!(op.issuer.starts_with("http://127.0.0.1:"), "{}", op.issuer);

    let doc = op.discovery().await;
    assert_eq!(doc["issuer"], op.issuer.as_str());
    for (field, path) in [
        ("authorization_endpoint", "/auth"),
        ("token_endpoint", "/token"),
        ("jwks_uri", "/jwks"),
        ("end_session_endpoint", "/session/end"),
        ("userinfo_endpoint", "/me"),
    ] {
        assert_eq!(doc[field], op.url(path).as_str(), "{field}: {doc}");
    }
    assert_eq!(doc["backchannel_logout_supported"], true, "{doc}");
    assert_eq!(doc["backchannel_logout_session_supported"], true, "{doc}");
    assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(
        doc["id_token_signing_alg_values_supported"],
        json!(["RS256"])
    );
    for scope in SCOPES.split(' ') {
        assert!(
            doc["scopes_supported"]
                .as_array()
                .unwrap()
                .contains(&json!(scope)),
            "{scope}: {doc}"
        );
    }
    let jwks = get(doc["jwks_uri"].as_str().unwrap(), &[]).await.json();

    // No session at the provider is needed: it signs whatever it is told.
    op.send_backchannel_logout("bob", Some("a-provider-sid"))
        .await;
    let claims = check_logout_token(&op, &jwks, &receiver.next().await);
    assert_eq!(claims["sub"], "bob");
    assert_eq!(claims["sid"], "a-provider-sid");

    // `sub` alone (a logout of every session of that user).
    op.send_backchannel_logout("bob", None).await;
    let claims = check_logout_token(&op, &jwks, &receiver.next().await);
    assert_eq!(claims["sub"], "bob");
    assert!(claims.get("sid").is_none(), "{claims}");

    // Every token is a new one.
    op.send_backchannel_logout("bob", None).await;
    let again = check_logout_token(&op, &jwks, &receiver.next().await);
    assert_ne!(again["jti"], claims["jti"]);

    // A client that refuses the token: the control route says so.
    let refused = op.try_send_backchannel_logout("refused", None).await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("400")),
        "{refused:?}"
    );
    receiver.next().await;

    // No sessions, nothing to end.
    assert!(op.sessions_of("bob").await.is_empty());
    assert!(op.end_sessions_of("bob").await.is_empty());
    receiver.nothing_more().await;
}

/// `{authorization_endpoint}?…` for the test client; returns it with the
/// PKCE verifier, the state and the nonce.
fn authorization_request(
    op: &OidcProvider,
    redirect_uri: &str,
    scope: &str,
) -> (String, String, String, String) {
    let verifier = random_text(64);
    let state = random_text(22);
    let nonce = random_text(22);
    let challenge = pkce_challenge(&verifier);
    let query = serde_urlencoded::to_string([
        ("client_id", op.client_id.as_str()),
        ("response_type", "code"),
        ("scope", scope),
        ("redirect_uri", redirect_uri),
        ("state", &state),
        ("nonce", &nonce),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
    ])
    .unwrap();
    (op.url(&format!("/auth?{query}")), verifier, state, nonce)
}

/// The query parameter `name` of `url`.
fn param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Signs `login` in by HTTP and redeems the code: (ID token, its claims).
async fn sign_in(
    op: &OidcProvider,
    agent: &mut ProviderAgent,
    login: &str,
    scope: &str,
) -> (String, Value) {
    let (authorize, verifier, state, nonce) = authorization_request(op, REDIRECT_URI, scope);
    let callback = op.sign_in_by_http(agent, &authorize, login).await;
    redeem(
        op,
        REDIRECT_URI,
        &callback,
        &verifier,
        &state,
        &nonce,
        login,
    )
    .await
}

/// Checks the client's callback URL and redeems its code: (ID token, its
/// claims).
async fn redeem(
    op: &OidcProvider,
    redirect_uri: &str,
    callback: &str,
    verifier: &str,
    state: &str,
    nonce: &str,
    login: &str,
) -> (String, Value) {
    assert!(callback.starts_with(redirect_uri), "{callback}");
    assert_eq!(param(callback, "state").as_deref(), Some(state));
    assert_eq!(param(callback, "iss").as_deref(), Some(op.issuer.as_str()));
    let code = param(callback, "code").expect("a code");

    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", op.client_id, op.client_secret))
    );
    let tokens = post_form(
        &op.url("/token"),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ],
        &[("authorization", &basic)],
    )
    .await;
    assert_eq!(tokens.status, 200, "token endpoint: {}", tokens.text());
    let tokens = tokens.json();
    let id_token = tokens["id_token"].as_str().expect("an id_token").to_owned();
    let (header, claims) = jwt_parts(&id_token);
    assert_eq!(header["alg"], "RS256", "{header}");
    assert_eq!(claims["iss"], op.issuer.as_str(), "{claims}");
    assert_eq!(claims["aud"], op.client_id.as_str(), "{claims}");
    assert_eq!(claims["nonce"], nonce, "{claims}");
    assert_eq!(claims["sub"], login, "{claims}");
    assert!(
        claims["sid"].as_str().is_some_and(|s| !s.is_empty()),
        "{claims}"
    );

    // The code is good once.
    let again = post_form(
        &op.url("/token"),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ],
        &[("authorization", &basic)],
    )
    .await;
    assert_eq!(again.status, 400, "{}", again.text());
    (id_token, claims)
}

#[tokio::test]
async fn code_flow_then_logout_from_the_provider_and_from_the_client() {
    let mut receiver = Receiver::start().await;
    let Some(op) = OidcProvider::start(REDIRECT_URI, &receiver.url, POST_LOGOUT_REDIRECT_URI)
    else {
        return;
    };
    let jwks = get(&op.url("/jwks"), &[]).await.json();

    // carol, with every scope: all the claims are in the ID token.
    let mut carol = ProviderAgent::new();
    let (id_token, claims) = sign_in(&op, &mut carol, "carol", SCOPES).await;
    assert_eq!(claims["preferred_username"], "carol", "{claims}");
    assert_eq!(claims["email"], "carol@example.com", "{claims}");
    assert_eq!(claims["email_verified"], true, "{claims}");
    assert_eq!(claims["groups"], json!(["admins", "staff"]), "{claims}");
    assert!(carol.session_cookie().is_some());
    let sid = claims["sid"].as_str().unwrap().to_owned();
    assert_eq!(op.sessions_of("carol").await, vec![sid.clone()]);

    // Signed in at the provider: the next authorization needs no form.
    let (authorize, ..) = authorization_request(&op, REDIRECT_URI, SCOPES);
    let silent = carol.get(&authorize).await;
    assert_eq!(silent.status, 303, "{}", silent.text());
    let location = silent.header("location").unwrap_or_default();
    assert!(location.starts_with(REDIRECT_URI), "{location}");

    // The provider tells the client about that very session.
    op.send_backchannel_logout("carol", Some(&sid)).await;
    let logout = check_logout_token(&op, &jwks, &receiver.next().await);
    assert_eq!(
        (logout["sub"].as_str(), logout["sid"].as_str()),
        (Some("carol"), Some(sid.as_str()))
    );

    // RP-initiated logout: the provider asks, ends its session, sends the
    // back-channel token for it and redirects to post_logout_redirect_uri.
    let end_session = format!(
        "{}?{}",
        op.url("/session/end"),
        serde_urlencoded::to_string([
            ("id_token_hint", id_token.as_str()),
            ("post_logout_redirect_uri", POST_LOGOUT_REDIRECT_URI),
            ("state", "after-logout"),
        ])
        .unwrap()
    );
    let done = op.end_session_by_http(&mut carol, &end_session).await;
    assert_eq!(done.status, 303, "{}", done.text());
    let location = done.header("location").unwrap_or_default();
    assert!(location.starts_with(POST_LOGOUT_REDIRECT_URI), "{location}");
    assert_eq!(param(location, "state").as_deref(), Some("after-logout"));
    let logout = check_logout_token(&op, &jwks, &receiver.next().await);
    assert_eq!(
        (logout["sub"].as_str(), logout["sid"].as_str()),
        (Some("carol"), Some(sid.as_str()))
    );
    assert!(op.sessions_of("carol").await.is_empty());
    assert!(carol.session_cookie().is_none());
    // And the next authorization asks for the login again.
    let (authorize, ..) = authorization_request(&op, REDIRECT_URI, SCOPES);
    let asks = carol.get(&authorize).await;
    assert_eq!(asks.status, 303, "{}", asks.text());
    let location = asks.header("location").unwrap_or_default();
    assert!(location.starts_with("/interaction/"), "{location}");

    // bob, twice (two browsers), `openid` alone: no other claims; `staff`
    // would be his group. The provider then ends both his sessions.
    let mut bob_phone = ProviderAgent::new();
    let mut bob_laptop = ProviderAgent::new();
    let (_, phone) = sign_in(&op, &mut bob_phone, "bob", "openid").await;
    let (_, laptop) = sign_in(&op, &mut bob_laptop, "bob", "openid groups").await;
    for claim in ["preferred_username", "email", "email_verified", "groups"] {
        assert!(phone.get(claim).is_none(), "{claim}: {phone}");
    }
    assert_eq!(laptop["groups"], json!(["staff"]), "{laptop}");
    assert!(laptop.get("email").is_none(), "{laptop}");
    let mut sids = vec![
        phone["sid"].as_str().unwrap().to_owned(),
        laptop["sid"].as_str().unwrap().to_owned(),
    ];
    sids.sort();
    let mut ended = op.end_sessions_of("bob").await;
    ended.sort();
    assert_eq!(ended, sids);
    let mut told = Vec::new();
    for _ in 0..2 {
        let logout = check_logout_token(&op, &jwks, &receiver.next().await);
        assert_eq!(logout["sub"], "bob", "{logout}");
        told.push(logout["sid"].as_str().unwrap().to_owned());
    }
    told.sort();
    assert_eq!(told, sids);
    assert!(op.sessions_of("bob").await.is_empty());
    receiver.nothing_more().await;
}

/// The provider's end_session_endpoint for `id_token`.
fn end_session_url(op: &OidcProvider, id_token: &str, post_logout: &str, state: &str) -> String {
    let query = serde_urlencoded::to_string([
        ("id_token_hint", id_token),
        ("post_logout_redirect_uri", post_logout),
        ("state", state),
    ])
    .unwrap();
    format!("{}?{query}", op.url("/session/end"))
}

/// The helpers for the gateway's browser tests, in Chromium: the
/// provider's sign-in form, the silent sign-in that follows, its "Sign
/// out?" page, and the form again after that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_pages_in_chromium() -> Result<()> {
    let mut client = Receiver::start().await;
    let callback = format!("{}/oidc/callback", client.origin);
    let signed_out = format!("{}/signed-out", client.origin);
    let Some(op) = OidcProvider::start(&callback, &client.url, &signed_out) else {
        return Ok(());
    };
    let Some(b) = Browser::open(Engine::Chromium).await else {
        return Ok(());
    };
    let jwks = get(&op.url("/jwks"), &[]).await.json();

    let (authorize, verifier, state, nonce) = authorization_request(&op, &callback, SCOPES);
    b.goto(&authorize).await?;
    let here = b.current_url().await?;
    if !(op.owns(&here) && here.contains("/interaction/")) {
        return Err(Error::new(format!(
            "no sign-in form at the provider: {here}"
        )));
    }
    op.sign_in_in_browser(&b, "carol").await?;
    let here = b.current_url().await?;
    let (id_token, claims) =
        redeem(&op, &callback, &here, &verifier, &state, &nonce, "carol").await;
    assert_eq!(claims["groups"], json!(["admins", "staff"]), "{claims}");

    // Signed in at the provider: straight back to the client.
    let (authorize, ..) = authorization_request(&op, &callback, SCOPES);
    b.goto(&authorize).await?;
    op.sign_in_in_browser(&b, "carol").await?;
    let here = b.current_url().await?;
    if !here.starts_with(&callback) {
        return Err(Error::new(format!("no silent sign-in: {here}")));
    }

    // RP-initiated logout: "Yes", then the client's page, and the
    // back-channel token for the session on the way.
    b.goto(&end_session_url(&op, &id_token, &signed_out, "bye"))
        .await?;
    op.confirm_logout_in_browser(&b).await?;
    let here = b.current_url().await?;
    if !here.starts_with(&signed_out) || param(&here, "state").as_deref() != Some("bye") {
        return Err(Error::new(format!(
            "not back at the client after logout: {here}"
        )));
    }
    let logout = check_logout_token(&op, &jwks, &client.next().await);
    assert_eq!(logout["sid"], claims["sid"], "{logout}");
    assert!(op.sessions_of("carol").await.is_empty());

    // The provider asks again.
    let (authorize, ..) = authorization_request(&op, &callback, SCOPES);
    b.goto(&authorize).await?;
    b.wait_for_js(
        "!!document.querySelector('input[name=login]')",
        support::browser::DEFAULT_TIMEOUT,
    )
    .await?;
    b.close().await
}

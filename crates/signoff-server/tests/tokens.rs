//! Token mode through a real `signoff serve --tokens` in front of a real
//! upstream: API sign-in, bearer access tokens on proxied requests,
//! refresh rotation and reuse, logout, RFC 7009 revocation and RFC 7662
//! introspection, and the example client script.
//!
//! The JWT negative vectors, the refresh race and key rotation are in the
//! engine's `tests/tokens.rs`; the two-node refusal is in `multinode.rs`.

mod support;

use std::process::Command;

use base64::Engine as _;
use hyper::Method;
use serde_json::Value;
use sha2::{Digest, Sha256};
use support::{
    admin_token, cookie, get, post_form, request, sessions_action, sessions_page, signoff_bin,
    Gateway, Reply, Upstream, PASSWORD, USER,
};

const CLIENT_SECRET: &str = "resource-server-secret";

fn client_flag() -> String {
    let digest = Sha256::digest(CLIENT_SECRET.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("api:{hex}")
}

fn basic(id: &str, secret: &str) -> String {
    let raw = format!("{id}:{secret}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

struct Setup {
    gw: Gateway,
    _up: Upstream,
    admin: String,
}

fn setup(extra: &[&str]) -> Option<Setup> {
    let up = Upstream::start()?;
    let (admin, hash) = admin_token();
    let client = client_flag();
    let mut args = vec![
        "--tokens",
        "--admin-token-sha256",
        &hash,
        "--token-client",
        &client,
    ];
    args.extend_from_slice(extra);
    let gw = Gateway::start(&up.url(), &args);
    Some(Setup { gw, _up: up, admin })
}

async fn post_json(url: &str, body: &Value, headers: &[(&str, &str)]) -> Reply {
    request(
        Method::POST,
        url,
        headers,
        Some(("application/json", body.to_string().into_bytes())),
    )
    .await
}

/// Signs in through the API; returns the token response.
async fn api_login(gw: &Gateway, client: Option<&str>) -> Value {
    let mut body = serde_json::json!({"username": USER, "password": PASSWORD});
    if let Some(c) = client {
        body["client_id"] = Value::from(c);
    }
    let r = post_json(&gw.url("/.signoff/api/login"), &body, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_no_store(&r);
    let pair = r.json();
    assert_eq!(pair["token_type"], "Bearer");
    assert_eq!(pair["expires_in"], 300);
    pair
}

fn s(v: &Value) -> String {
    v.as_str().unwrap().to_owned()
}

fn assert_no_store(r: &Reply) {
    assert_eq!(r.header("cache-control"), Some("no-store"), "{r:?}");
}

async fn refresh(gw: &Gateway, rt: &str) -> Reply {
    let r = post_form(
        &gw.url("/.signoff/token"),
        &[("grant_type", "refresh_token"), ("refresh_token", rt)],
        &[],
    )
    .await;
    assert_no_store(&r);
    r
}

async fn call(gw: &Gateway, access: &str) -> Reply {
    get(
        &gw.url("/echo"),
        &[("authorization", &format!("Bearer {access}"))],
    )
    .await
}

fn upstream_header(r: &Reply, name: &str) -> Option<String> {
    r.json()["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0] == name)
        .map(|h| s(&h[1]))
}

async fn introspect(gw: &Gateway, token: &str, auth: &str) -> Reply {
    post_form(
        &gw.url("/.signoff/introspect"),
        &[("token", token)],
        &[("authorization", auth)],
    )
    .await
}

#[tokio::test]
async fn access_tokens_reach_the_app_until_logout_then_are_refused_at_once() {
    let Some(t) = setup(&[]) else { return };
    let pair = api_login(&t.gw, Some("mobile")).await;
    let access = s(&pair["access_token"]);

    // The upstream sees who it is, but not the token (its logs must not
    // hold a replayable credential); a spoofed identity header is replaced.
    let r = get(
        &t.gw.url("/echo"),
        &[
            ("authorization", &format!("Bearer {access}")),
            ("x-signoff-user", "mallory"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(upstream_header(&r, "x-signoff-user").as_deref(), Some(USER));
    assert!(
        upstream_header(&r, "authorization").is_none(),
        "{}",
        r.text()
    );
    assert!(upstream_header(&r, "x-signoff-csrf").is_none());
    assert_no_store(&r);

    // Logout with the access token ends the session...
    let out = request(
        Method::POST,
        &t.gw.url("/.signoff/api/logout"),
        &[("authorization", &format!("Bearer {access}"))],
        None,
    )
    .await;
    assert_eq!(out.status, 200, "{}", out.text());
    assert_no_store(&out);
    // ...so the same unexpired token is refused on the next request.
    let r = call(&t.gw, &access).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"], "invalid_token");
    assert!(r
        .header("www-authenticate")
        .is_some_and(|v| v.starts_with("Bearer") && v.contains("invalid_token")));
    assert!(r.header("set-cookie").is_none());
    // And its refresh token too.
    let r = refresh(&t.gw, &s(&pair["refresh_token"])).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_grant");
}

#[tokio::test]
async fn refresh_rotates_and_a_replayed_refresh_token_ends_the_session() {
    let Some(t) = setup(&[]) else { return };
    let pair = api_login(&t.gw, None).await;
    let rt1 = s(&pair["refresh_token"]);
    let r = refresh(&t.gw, &rt1).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let second = r.json();
    let rt2 = s(&second["refresh_token"]);
    let access2 = s(&second["access_token"]);
    assert_ne!(rt1, rt2);
    assert_eq!(call(&t.gw, &access2).await.status, 200);

    // RT1 again: theft is assumed, the whole family and the session end.
    let r = refresh(&t.gw, &rt1).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_grant");
    assert!(r.text().contains("reused"), "{}", r.text());
    assert_eq!(refresh(&t.gw, &rt2).await.status, 400, "RT2 is dead too");
    assert_eq!(
        call(&t.gw, &access2).await.status,
        401,
        "and so is the session"
    );
}

#[tokio::test]
async fn token_endpoint_errors_follow_rfc_6749() {
    let Some(t) = setup(&[]) else { return };
    let url = t.gw.url("/.signoff/token");
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[("refresh_token", "x")], "invalid_request"),
        (&[("grant_type", "password")], "unsupported_grant_type"),
        (&[("grant_type", "refresh_token")], "invalid_request"),
        (
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", "garbage"),
            ],
            "invalid_grant",
        ),
        (
            &[
                ("grant_type", "refresh_token"),
                ("grant_type", "refresh_token"),
            ],
            "invalid_request",
        ),
    ];
    for (form, error) in cases {
        let r = post_form(&url, form, &[]).await;
        assert_eq!(r.status, 400, "{form:?}: {}", r.text());
        assert_eq!(r.json()["error"], error, "{form:?}");
        assert_no_store(&r);
    }
    // A JSON body is not a form.
    let r = post_json(
        &url,
        &serde_json::json!({"grant_type": "refresh_token"}),
        &[],
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_request");
}

#[tokio::test]
async fn api_login_is_as_hard_to_abuse_as_the_form() {
    let Some(t) = setup(&[]) else { return };
    let url = t.gw.url("/.signoff/api/login");
    let wrong = serde_json::json!({"username": USER, "password": "nope"});
    let r = post_json(&url, &wrong, &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_grant");
    assert_no_store(&r);
    // A browser on another site.
    let right = serde_json::json!({"username": USER, "password": PASSWORD});
    let r = post_json(&url, &right, &[("sec-fetch-site", "cross-site")]).await;
    assert_eq!(r.status, 403);
    // A form (what a cross-site page can send without CORS) is refused.
    let r = post_form(&url, &[("username", USER), ("password", PASSWORD)], &[]).await;
    assert_eq!(r.status, 400);
    // Oversized and malformed bodies.
    let big = serde_json::json!({"username": USER, "password": "x".repeat(20_000)});
    assert_eq!(post_json(&url, &big, &[]).await.status, 413);
    let r = request(
        Method::POST,
        &url,
        &[],
        Some(("application/json", b"{not json".to_vec())),
    )
    .await;
    assert_eq!(r.status, 400);
    let bad_client =
        serde_json::json!({"username": USER, "password": PASSWORD, "client_id": "a b"});
    assert_eq!(post_json(&url, &bad_client, &[]).await.status, 400);
    // Repeated failures are slowed down like the form's.
    let mut limited = false;
    for _ in 0..8 {
        let r = post_json(&url, &wrong, &[]).await;
        if r.status == 429 {
            assert_eq!(r.json()["error"], "slow_down");
            assert!(r.header("retry-after").is_some());
            limited = true;
            break;
        }
    }
    assert!(limited, "eight failures in a row were never slowed down");
}

#[tokio::test]
async fn api_sessions_are_listed_and_ended_with_the_others() {
    let Some(t) = setup(&[]) else { return };
    let pair = api_login(&t.gw, Some("mobile")).await;
    let access = s(&pair["access_token"]);
    let browser = t.gw.login(USER, PASSWORD).await;
    let page = sessions_page(&t.gw.origin, &browser).await;
    assert_eq!(page.matches("data-handle=").count(), 2, "{page}");
    // "Sign out everywhere else" from the browser ends the API session.
    let r = sessions_action(&t.gw.origin, &browser, "end-others", &[]).await;
    assert!(r.status == 303 || r.status == 200, "{}", r.text());
    assert_eq!(call(&t.gw, &access).await.status, 401);
    assert_eq!(refresh(&t.gw, &s(&pair["refresh_token"])).await.status, 400);
}

#[tokio::test]
async fn opaque_session_tokens_work_as_bearer_tokens_and_are_not_passed_on() {
    let Some(t) = setup(&[]) else { return };
    let token = t.gw.login(USER, PASSWORD).await;
    let r = call(&t.gw, &token).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(upstream_header(&r, "x-signoff-user").as_deref(), Some(USER));
    assert!(
        upstream_header(&r, "authorization").is_none(),
        "{}",
        r.text()
    );
    // Logout with it, then it is refused.
    let out = request(
        Method::POST,
        &t.gw.url("/.signoff/api/logout"),
        &[("authorization", &format!("Bearer {token}"))],
        None,
    )
    .await;
    assert_eq!(out.status, 200);
    assert_eq!(call(&t.gw, &token).await.status, 401);
    assert_eq!(
        get(&t.gw.url("/echo"), &[("cookie", &cookie(&token))])
            .await
            .status,
        401
    );
    // Junk and refresh tokens are not access tokens.
    let pair = api_login(&t.gw, None).await;
    for junk in ["junk", "a.b.c", &s(&pair["refresh_token"])] {
        let r = call(&t.gw, junk).await;
        assert_eq!(r.status, 401, "{junk}");
        assert_eq!(r.json()["error"], "invalid_token");
    }
}

#[tokio::test]
async fn introspection_needs_credentials_and_says_exactly_inactive() {
    let Some(t) = setup(&[]) else { return };
    let pair = api_login(&t.gw, Some("mobile")).await;
    let access = s(&pair["access_token"]);
    let rt = s(&pair["refresh_token"]);
    let url = t.gw.url("/.signoff/introspect");

    // No credentials, wrong ones, a user's own token: 401 invalid_client.
    for auth in [
        None,
        Some(basic("api", "wrong")),
        Some(basic("nobody", CLIENT_SECRET)),
        Some("Bearer not-the-admin-token".to_owned()),
        Some(format!("Bearer {access}")),
    ] {
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let r = post_form(&url, &[("token", &access)], &headers).await;
        assert_eq!(r.status, 401, "{auth:?}: {}", r.text());
        assert_eq!(r.json()["error"], "invalid_client");
        assert!(r.header("www-authenticate").is_some());
    }

    let admin = format!("Bearer {}", t.admin);
    let client = basic("api", CLIENT_SECRET);
    for auth in [&admin, &client] {
        let info = introspect(&t.gw, &access, auth).await;
        assert_eq!(info.status, 200, "{}", info.text());
        assert_no_store(&info);
        let info = info.json();
        assert_eq!(info["active"], true);
        assert_eq!(info["token_type"], "access_token");
        assert_eq!(info["client_id"], "mobile");
        assert!(info["sid"].is_string() && info["exp"].is_i64());
        let info = introspect(&t.gw, &rt, auth).await.json();
        assert_eq!(info["active"], true);
        assert_eq!(info["token_type"], "refresh_token");
    }
    // Unknown, used and revoked: exactly {"active":false}.
    assert_eq!(
        introspect(&t.gw, "junk", &admin).await.text(),
        r#"{"active":false}"#
    );
    let next = refresh(&t.gw, &rt).await.json();
    assert_eq!(
        introspect(&t.gw, &rt, &admin).await.text(),
        r#"{"active":false}"#,
        "a used refresh token"
    );
    let access2 = s(&next["access_token"]);
    let out = request(
        Method::POST,
        &t.gw.url("/.signoff/api/logout"),
        &[("authorization", &format!("Bearer {access2}"))],
        None,
    )
    .await;
    assert_eq!(out.status, 200);
    for token in [&access, &access2, &s(&next["refresh_token"])] {
        assert_eq!(
            introspect(&t.gw, token, &client).await.text(),
            r#"{"active":false}"#
        );
    }
}

#[tokio::test]
async fn revocation_follows_rfc_7009() {
    let Some(t) = setup(&[]) else { return };
    let url = t.gw.url("/.signoff/revoke");
    let pair = api_login(&t.gw, Some("mobile")).await;
    let access = s(&pair["access_token"]);
    let rt = s(&pair["refresh_token"]);

    // Unknown tokens: 200, nothing happens.
    let r = post_form(&url, &[("token", "junk"), ("client_id", "mobile")], &[]).await;
    assert_eq!(r.status, 200);
    // Missing token: invalid_request.
    let r = post_form(&url, &[("client_id", "mobile")], &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_request");
    // Wrong client credentials: invalid_client.
    let r = post_form(
        &url,
        &[("token", &rt)],
        &[("authorization", &basic("api", "wrong"))],
    )
    .await;
    assert_eq!(r.status, 401);
    // Another client (public, or the confidential "api"): 200, no effect.
    let r = post_form(
        &url,
        &[
            ("token", &rt),
            ("token_type_hint", "refresh_token"),
            ("client_id", "web"),
        ],
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
    let r = post_form(
        &url,
        &[("token", &access)],
        &[("authorization", &basic("api", CLIENT_SECRET))],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        call(&t.gw, &access).await.status,
        200,
        "another client's revoke did nothing"
    );
    // The client it was issued to: the session ends, with every token.
    let r = post_form(
        &url,
        &[
            ("token", &rt),
            ("token_type_hint", "refresh_token"),
            ("client_id", "mobile"),
        ],
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_no_store(&r);
    assert_eq!(call(&t.gw, &access).await.status, 401);
    assert_eq!(refresh(&t.gw, &rt).await.status, 400);

    // An access token revoked by the admin ends its session too.
    let pair = api_login(&t.gw, None).await;
    let access = s(&pair["access_token"]);
    let r = post_form(
        &url,
        &[("token", &access)],
        &[("authorization", &format!("Bearer {}", t.admin))],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(call(&t.gw, &access).await.status, 401);
}

#[tokio::test]
async fn jwks_lists_the_keys_and_rotation_keeps_old_tokens_working() {
    let Some(t) = setup(&[]) else { return };
    let jwks = get(&t.gw.url("/.signoff/jwks.json"), &[]).await;
    assert_eq!(jwks.status, 200);
    let keys = jwks.json()["keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kty"], "OKP");
    assert_eq!(keys[0]["alg"], "EdDSA");
    assert!(keys[0].get("d").is_none(), "no private part");
    let pair = api_login(&t.gw, None).await;
    let old = s(&pair["access_token"]);

    let out = Command::new(signoff_bin())
        .args(["keys", "rotate", "--db", &t.gw.db])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = Command::new(signoff_bin())
        .args(["keys", "list", "--db", &t.gw.db])
        .output()
        .unwrap();
    let list = String::from_utf8(list.stdout).unwrap();
    assert!(
        list.contains("current") && list.contains("previous"),
        "{list}"
    );

    // A restarted node signs with the new key; the old token still works.
    let gw = t.gw.restart();
    let keys = get(&gw.url("/.signoff/jwks.json"), &[]).await.json()["keys"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(keys.len(), 2);
    assert_eq!(call(&gw, &old).await.status, 200);
    let new = s(&api_login(&gw, None).await["access_token"]);
    assert_eq!(call(&gw, &new).await.status, 200);
    let kid = |jwt: &str| -> String {
        let header = jwt.split('.').next().unwrap();
        let header: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(header)
                .unwrap(),
        )
        .unwrap();
        s(&header["kid"])
    };
    assert_ne!(kid(&old), kid(&new));
    assert_eq!(kid(&new), s(&keys[0]["kid"]));
}

#[tokio::test]
async fn token_mode_is_off_unless_asked_for() {
    let Some(up) = Upstream::start() else { return };
    let gw = Gateway::start(&up.url(), &[]);
    for path in [
        "/.signoff/api/login",
        "/.signoff/token",
        "/.signoff/introspect",
    ] {
        let r = post_form(&gw.url(path), &[("x", "y")], &[]).await;
        assert_eq!(r.status, 404, "{path}");
    }
    assert_eq!(get(&gw.url("/.signoff/jwks.json"), &[]).await.status, 404);
    // Without token mode an Authorization header is the app's business:
    // it lets nothing through by itself.
    let r = get(&gw.url("/echo"), &[("authorization", "Bearer a.b.c")]).await;
    assert_eq!(r.status, 401);
    assert!(r
        .header("www-authenticate")
        .is_some_and(|v| v.starts_with("Signoff")));
}

/// `examples/token-client.sh` against `signoff demo`: the documented walk
/// (login, call, refresh, logout, refused) really happens.
#[tokio::test]
async fn the_example_client_walks_login_refresh_logout_refused() {
    if Command::new("curl").arg("--version").output().is_err() {
        support::missing::<()>("curl (for the example client)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("demo.db").display());
    let mut cmd = Command::new(signoff_bin());
    cmd.args(["demo", "--listen", "127.0.0.1:0", "--db", &db]);
    let (_demo, lines) = support::spawn_reading_lines(cmd, dir.path().join("demo.log"), 3);
    let (origin, password) = support::demo_banner(&lines);
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/token-client.sh");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .arg(script)
            .args([&origin, "demo", &password])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("401"), "{stdout}");
    assert!(stdout.contains("signed out means out."), "{stdout}");
}

#[tokio::test]
async fn a_confidential_client_must_authenticate_to_act_as_itself() {
    let Some(t) = setup(&[]) else { return };
    let login = serde_json::json!({"username": USER, "password": PASSWORD, "client_id": "api"});
    let url = t.gw.url("/.signoff/api/login");
    // Naming the configured client without its secret, or with a wrong one.
    let r = post_json(&url, &login, &[]).await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"], "invalid_client");
    let wrong = basic("api", "wrong");
    assert_eq!(
        post_json(&url, &login, &[("authorization", &wrong)])
            .await
            .status,
        401
    );
    // With it: tokens issued to "api".
    let right = basic("api", CLIENT_SECRET);
    let r = post_json(&url, &login, &[("authorization", &right)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let rt = s(&r.json()["refresh_token"]);
    // A thief with the refresh token but not the secret gets nothing, and
    // ends nothing.
    let token_url = t.gw.url("/.signoff/token");
    for (form, auth) in [
        (
            vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", rt.as_str()),
            ],
            None,
        ),
        (
            vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", rt.as_str()),
                ("client_id", "api"),
            ],
            None,
        ),
        (
            vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", rt.as_str()),
            ],
            Some(&wrong),
        ),
    ] {
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let r = post_form(&token_url, &form, &headers).await;
        assert!(r.status == 400 || r.status == 401, "{form:?}: {}", r.text());
        assert_no_store(&r);
    }
    // The client itself still can: nothing was ended.
    let r = post_form(
        &token_url,
        &[("grant_type", "refresh_token"), ("refresh_token", &rt)],
        &[("authorization", &right)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Revoking in its name without the secret is refused.
    let r = post_form(
        &t.gw.url("/.signoff/revoke"),
        &[
            ("token", &s(&r.json()["refresh_token"])),
            ("client_id", "api"),
        ],
        &[],
    )
    .await;
    assert_eq!(r.status, 401);
}

//! WebSockets and streams through a real `signoff serve` in front of a real
//! WebSocket upstream: what may open one, what the upstream sees, and that
//! each ends when its session does, whatever ended it (docs/security.md,
//! invariant 10).

mod support;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http::Method;
use support::websocket::{connect, echo, next_close, Socket, WsUpstream};
use support::*;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// The bound of docs/security.md, invariant 10, for an end on this node.
const CLOSE_BOUND: Duration = Duration::from_secs(1);

async fn start(extra: &[&str]) -> (WsUpstream, Gateway) {
    let up = WsUpstream::start().await;
    let gw = Gateway::start(&up.url(), extra);
    (up, gw)
}

/// Opens a WebSocket at `path` with these extra headers.
async fn open_with(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Result<Socket, WsError> {
    connect(&gw.origin, path, headers).await
}

/// Opens a WebSocket as a browser on the gateway's own page would.
async fn open(gw: &Gateway, token: &str) -> Socket {
    open_with(
        gw,
        "/ws/app",
        &[("cookie", &cookie(token)), ("origin", &gw.origin)],
    )
    .await
    .expect("the socket opens")
}

/// The status of a refused upgrade.
async fn refused(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> (u16, http::HeaderMap) {
    match open_with(gw, path, headers).await {
        Err(WsError::Http(response)) => (response.status().as_u16(), response.headers().clone()),
        Ok(_) => panic!("the upgrade was accepted with {headers:?}"),
        Err(e) => panic!("unexpected error {e}"),
    }
}

/// Asserts the socket was closed for a session end, within the bound.
async fn assert_cut(socket: &mut Socket, what: &str, bound: Duration) {
    let (code, reason, took) = next_close(socket, bound).await;
    assert_eq!(code, 1008, "{what}: close code");
    assert_eq!(reason, "signed out", "{what}: close reason");
    assert!(
        took <= bound,
        "{what}: closed after {took:?}, over {bound:?}"
    );
}

/// Asserts the socket still carries messages.
async fn assert_open(socket: &mut Socket, what: &str) {
    assert_eq!(echo(socket, "still here").await, "still here", "{what}");
}

/// Signs out as the browser's form would.
async fn logout(gw: &Gateway, token: &str) {
    let csrf = csrf_in(&sessions_page(&gw.origin, token).await);
    let r = post_form(
        &gw.url("/.signoff/logout"),
        &[("csrf", &csrf)],
        &[("cookie", &cookie(token)), ("origin", &gw.origin)],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text());
}

fn upgrade_headers(up: &WsUpstream, n: usize) -> std::collections::BTreeMap<String, String> {
    up.seen().upgrades[n].clone()
}

#[tokio::test]
async fn a_socket_carries_messages_with_the_identity_and_without_the_cookie() {
    let (up, gw) = start(&[]).await;
    let token = gw.login(USER, PASSWORD).await;
    let mut socket = open_with(
        &gw,
        "/ws/app?x=1",
        &[
            ("cookie", &format!("theme=dark; {}", cookie(&token))),
            ("origin", &gw.origin),
            ("x-signoff-user", "mallory"),
            ("x-forwarded-for", "203.0.113.9"),
            ("sec-websocket-protocol", "chat.v2, chat.v1"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(echo(&mut socket, "hello").await, "hello");
    // Binary and large messages both ways, with back-pressure on a 4 KiB
    // copy buffer.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    socket.send(Message::binary(big.clone())).await.unwrap();
    match socket.next().await {
        Some(Ok(Message::Binary(data))) => assert_eq!(data.as_ref(), big.as_slice()),
        other => panic!("no binary echo: {other:?}"),
    }
    let seen = upgrade_headers(&up, 0);
    assert_eq!(seen["x-signoff-user"], USER, "the identity is signoff's");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1", "no spoofed address");
    assert_eq!(
        seen["cookie"], "theme=dark",
        "the session cookie is not passed on"
    );
    assert!(!seen.values().any(|v| v.contains(&token)), "{seen:?}");
    assert_eq!(seen["upgrade"].to_ascii_lowercase(), "websocket");
    assert!(seen.contains_key("sec-websocket-key"));
    assert_eq!(seen["sec-websocket-protocol"], "chat.v2, chat.v1");
    assert!(seen.contains_key("x-signoff-session") && seen.contains_key("x-signoff-csrf"));
    // The reply's headers come back: the chosen subprotocol.
    let echoed: serde_json::Value =
        serde_json::from_str(&echo(&mut socket, "headers").await).unwrap();
    assert_eq!(echoed["x-signoff-user"], USER);
    socket.close(None).await.unwrap();
}

#[tokio::test]
async fn upgrades_need_a_live_session_and_the_public_origin() {
    let (up, gw) = start(&["--public-path", "/ws/public"]).await;
    let token = gw.login(USER, PASSWORD).await;
    let me = gw.origin.clone();
    let browser = [("accept", "text/html"), ("origin", me.as_str())];
    // No session: 401, never a redirect to the login page.
    let (status, headers) = refused(&gw, "/ws/app", &browser).await;
    assert_eq!(status, 401);
    assert!(headers.get("location").is_none());
    assert!(headers.get("www-authenticate").is_some());
    // An ended session: 401, and the stale cookie is expired.
    let ended = gw.login(USER, PASSWORD).await;
    logout(&gw, &ended).await;
    let (status, headers) = refused(
        &gw,
        "/ws/app",
        &[("cookie", &cookie(&ended)), ("origin", &me)],
    )
    .await;
    assert_eq!(status, 401);
    assert!(headers
        .get_all("set-cookie")
        .iter()
        .any(|v| v.to_str().unwrap().contains("Max-Age=0")));
    // A forged or garbage token: 401.
    for junk in ["x", &"A".repeat(5000), "signoff.v1.abc"] {
        let (status, _) = refused(
            &gw,
            "/ws/app",
            &[("cookie", &cookie(junk)), ("origin", &me)],
        )
        .await;
        assert_eq!(status, 401, "{junk:.20}");
    }
    // Another site's page, even with the cookie: 403 (cross-site
    // WebSocket hijacking).
    for (name, value) in [
        ("origin", "http://evil.example"),
        ("origin", "null"),
        ("origin", &me.replace("127.0.0.1", "localhost")),
        ("origin", &format!("{me}.evil.example")),
    ] {
        let (status, _) = refused(
            &gw,
            "/ws/app",
            &[("cookie", &cookie(&token)), (name, value)],
        )
        .await;
        assert_eq!(status, 403, "{name}: {value}");
    }
    let (status, _) = refused(
        &gw,
        "/ws/app",
        &[
            ("cookie", &cookie(&token)),
            ("origin", &me),
            ("sec-fetch-site", "cross-site"),
        ],
    )
    .await;
    assert_eq!(status, 403);
    assert!(gw.proc.log_text().contains("refused a WebSocket"));
    // HTTP inside a tunnel (h2c smuggling) would pass every per-request
    // check by: refused before the upstream sees it, whatever the path.
    for (path, protocol) in [
        ("/ws/app", "h2c"),
        ("/ws/public", "h2c"),
        ("/ws/app", " H2C "),
        ("/ws/app", "h2c-14"),
        ("/ws/app", "h2c;q=1"),
        ("/ws/app", "websocket h2c"),
        ("/ws/app", "websocket, h2c"),
        ("/ws/app", "HTTP/2.0"),
        ("/ws/app", "TLS/1.0"),
        ("/ws/app", "SPDY/3.1"),
    ] {
        let reply = request(
            Method::GET,
            &gw.url(path),
            &[
                ("cookie", &cookie(&token)),
                ("origin", &me),
                ("connection", "upgrade, http2-settings"),
                ("upgrade", protocol),
                ("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"),
            ],
            None,
        )
        .await;
        assert_eq!(reply.status, 400, "{path} {protocol}");
        assert!(reply.text().contains("only WebSocket"), "{}", reply.text());
    }
    assert!(
        up.seen().upgrades.is_empty(),
        "nothing refused reached the upstream"
    );
    // A client that is not a browser sends no Origin: it may.
    let mut socket = open_with(&gw, "/ws/app", &[("cookie", &cookie(&token))])
        .await
        .unwrap();
    assert_open(&mut socket, "no Origin").await;
    // A public path needs no session (and gets no identity).
    let mut public = open_with(&gw, "/ws/public", &[("origin", &me)])
        .await
        .unwrap();
    assert_open(&mut public, "public path").await;
    assert!(!upgrade_headers(&up, 1).contains_key("x-signoff-user"));
    // An upstream that switches to something else than asked: 502.
    let (status, _) = refused(
        &gw,
        "/switch-elsewhere",
        &[("cookie", &cookie(&token)), ("origin", &me)],
    )
    .await;
    assert_eq!(status, 502);
}

#[tokio::test]
async fn plain_requests_still_work_beside_sockets() {
    let (_up, gw) = start(&[]).await;
    let token = gw.login(USER, PASSWORD).await;
    let mut socket = open(&gw, &token).await;
    let r = support::get(&gw.url("/plain"), &[("cookie", &cookie(&token))]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
    assert_open(&mut socket, "beside plain requests").await;
}

/// One way to end sessions: `target` is the session to end, `other` one
/// more of the same user; says which of the two must close.
async fn each_way_to_end(gw: &Gateway, up: &WsUpstream, admin: &str) {
    struct Case {
        name: &'static str,
        other_closes: bool,
    }
    let cases = [
        Case {
            name: "logout",
            other_closes: false,
        },
        Case {
            name: "sign out one row",
            other_closes: false,
        },
        Case {
            name: "sign out everywhere else",
            other_closes: false,
        },
        Case {
            name: "sign out everywhere",
            other_closes: true,
        },
        Case {
            name: "password change",
            other_closes: false,
        },
        Case {
            name: "admin ends the session",
            other_closes: false,
        },
        Case {
            name: "admin disables the user",
            other_closes: true,
        },
        Case {
            name: "CLI ends the session",
            other_closes: false,
        },
        Case {
            name: "CLI disables the user",
            other_closes: true,
        },
    ];
    let mut password = PASSWORD.to_owned();
    for case in cases {
        let target = gw.login(USER, &password).await;
        let other = gw.login(USER, &password).await;
        let before = up.seen().upgrades.len();
        let mut target_socket = open(gw, &target).await;
        let mut other_socket = open(gw, &other).await;
        let handle = upgrade_headers(up, before)["x-signoff-session"].clone();
        let auth = format!("Bearer {admin}");
        match case.name {
            "logout" => logout(gw, &target).await,
            "sign out one row" => {
                let r = sessions_action(&gw.origin, &other, "end", &[("handle", &handle)]).await;
                assert_eq!(r.status, 303);
            }
            "sign out everywhere else" => {
                let r = sessions_action(&gw.origin, &other, "end-others", &[]).await;
                assert_eq!(r.status, 303);
            }
            "sign out everywhere" => {
                let r = sessions_action(&gw.origin, &other, "end-all", &[]).await;
                assert_eq!(r.status, 303);
            }
            "password change" => {
                let csrf = csrf_in(
                    &get(
                        &gw.url("/.signoff/password"),
                        &[("cookie", &cookie(&other))],
                    )
                    .await
                    .text(),
                );
                let new_password = format!("{PASSWORD} and more");
                let r = post_form(
                    &gw.url("/.signoff/password"),
                    &[
                        ("csrf", &csrf),
                        ("current", &password),
                        ("new", &new_password),
                        ("confirm", &new_password),
                    ],
                    &[("cookie", &cookie(&other)), ("origin", &gw.origin)],
                )
                .await;
                assert_eq!(r.status, 303, "{}", r.text());
                password = new_password;
            }
            "admin ends the session" => {
                let r = request(
                    Method::DELETE,
                    &gw.url(&format!("/.signoff/admin/sessions/{handle}")),
                    &[("authorization", &auth)],
                    None,
                )
                .await;
                assert_eq!(r.status, 200, "{}", r.text());
            }
            "admin disables the user" => {
                let r = request(
                    Method::PATCH,
                    &gw.url(&format!("/.signoff/admin/users/{USER}")),
                    &[("authorization", &auth)],
                    Some(("application/json", br#"{"disabled":true}"#.to_vec())),
                )
                .await;
                assert_eq!(r.status, 200, "{}", r.text());
            }
            "CLI ends the session" => {
                cli(&["sessions", "end", &handle], &gw.db);
            }
            "CLI disables the user" => {
                cli(&["user", "disable", USER], &gw.db);
            }
            _ => unreachable!(),
        }
        // The CLI is another process: its end reaches the gateway through
        // the store's change log (the SQLite bus), within its delivery.
        let bound = if case.name.starts_with("CLI") {
            CLOSE_BOUND + Duration::from_secs(1)
        } else {
            CLOSE_BOUND
        };
        assert_cut(&mut target_socket, case.name, bound).await;
        if case.other_closes {
            assert_cut(&mut other_socket, case.name, bound).await;
        } else {
            assert_open(&mut other_socket, case.name).await;
            other_socket.close(None).await.unwrap();
        }
        // The upstream was told too.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !up.seen().close_codes.contains(&1008) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(up.seen().close_codes.contains(&1008), "{}", case.name);
        if case.name.contains("disables") {
            if case.name.starts_with("admin") {
                let r = request(
                    Method::PATCH,
                    &gw.url(&format!("/.signoff/admin/users/{USER}")),
                    &[("authorization", &auth)],
                    Some(("application/json", br#"{"disabled":false}"#.to_vec())),
                )
                .await;
                assert_eq!(r.status, 200);
            } else {
                cli(&["user", "enable", USER], &gw.db);
            }
        }
    }
}

#[tokio::test]
async fn a_socket_closes_with_1008_whatever_ends_its_session() {
    let (admin, hash) = admin_token();
    let (up, gw) = start(&["--admin-token-sha256", &hash]).await;
    each_way_to_end(&gw, &up, &admin).await;
}

#[tokio::test]
async fn a_socket_closes_at_the_idle_timeout_unless_the_client_is_active() {
    let (_up, gw) = start(&["--idle-timeout", "3s", "--absolute-timeout", "8s"]).await;
    let quiet = gw.login(USER, PASSWORD).await;
    let busy = gw.login(USER, PASSWORD).await;
    let mut quiet_socket = open(&gw, &quiet).await;
    let mut busy_socket = open(&gw, &busy).await;
    // The upstream pushing to the quiet one is not activity, nor are the
    // pongs its client answers the upstream's pings with.
    quiet_socket.send(Message::text("ticks")).await.unwrap();
    let started = Instant::now();
    let quiet_task = tokio::spawn(async move {
        let (code, _, _) = next_close(&mut quiet_socket, Duration::from_secs(6)).await;
        code
    });
    // The busy one sends a message each 500 ms: its session stays alive
    // past the idle timeout (the touch is written each 300 ms here).
    let mut busy_closed_at = None;
    while started.elapsed() < Duration::from_secs(12) {
        busy_socket.send(Message::text("ping")).await.ok();
        match tokio::time::timeout(Duration::from_millis(500), busy_socket.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                assert_eq!(u16::from(frame.code), 1008);
                busy_closed_at = Some(started.elapsed());
                break;
            }
            Ok(Some(Ok(_))) | Err(_) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        quiet_task.await.unwrap(),
        1008,
        "the quiet socket idled out"
    );
    let busy_closed_at = busy_closed_at.expect("the absolute timeout ends even a busy socket");
    assert!(
        busy_closed_at > Duration::from_secs(5),
        "activity kept the busy session alive past the idle timeout ({busy_closed_at:?})"
    );
    assert!(
        busy_closed_at < Duration::from_secs(8) + CLOSE_BOUND + Duration::from_millis(500),
        "the absolute timeout holds ({busy_closed_at:?})"
    );
}

#[tokio::test]
async fn tokens_sockets_end_at_api_logout_and_at_refresh_token_reuse() {
    let (up, gw) = start(&["--tokens"]).await;
    let login = |gw: &Gateway| {
        let url = gw.url("/.signoff/api/login");
        async move {
            let body = serde_json::json!({"username": USER, "password": PASSWORD});
            let r = request(
                Method::POST,
                &url,
                &[],
                Some(("application/json", body.to_string().into_bytes())),
            )
            .await;
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()
        }
    };
    let bearer =
        |pair: &serde_json::Value| format!("Bearer {}", pair["access_token"].as_str().unwrap());
    // API logout.
    let pair = login(&gw).await;
    let keep = login(&gw).await;
    let mut socket = open_with(&gw, "/ws/api", &[("authorization", &bearer(&pair))])
        .await
        .unwrap();
    let mut kept = open_with(&gw, "/ws/api", &[("authorization", &bearer(&keep))])
        .await
        .unwrap();
    assert!(
        !upgrade_headers(&up, 0).contains_key("authorization"),
        "the token is not passed on"
    );
    let r = request(
        Method::POST,
        &gw.url("/.signoff/api/logout"),
        &[("authorization", &bearer(&pair))],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_cut(&mut socket, "API logout", CLOSE_BOUND).await;
    assert_open(&mut kept, "another token session").await;
    // A refresh token used twice ends its session.
    let rt1 = keep["refresh_token"].as_str().unwrap().to_owned();
    let refresh = |rt: String| {
        let url = gw.url("/.signoff/token");
        async move {
            post_form(
                &url,
                &[("grant_type", "refresh_token"), ("refresh_token", &rt)],
                &[],
            )
            .await
        }
    };
    assert_eq!(refresh(rt1.clone()).await.status, 200);
    assert_eq!(refresh(rt1).await.status, 400);
    assert_cut(&mut kept, "refresh token reuse", CLOSE_BOUND).await;
}

#[tokio::test]
async fn an_event_stream_arrives_as_sent_and_ends_at_logout() {
    let (_up, gw) = start(&[]).await;
    let token = gw.login(USER, PASSWORD).await;
    let mut stream = support::stream(
        &gw.url("/events"),
        &[("cookie", &cookie(&token)), ("accept", "text/event-stream")],
    )
    .await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.header("cache-control"), Some("no-store"));
    // Each event as it is sent (every 100 ms), not at the end.
    let mut arrivals = Vec::new();
    let started = Instant::now();
    while arrivals.len() < 6 {
        let chunk = tokio::time::timeout(Duration::from_secs(2), stream.next_chunk())
            .await
            .expect("an event within 2 s")
            .expect("the stream goes on");
        let text = String::from_utf8_lossy(&chunk).into_owned();
        for _ in text.matches("data: ") {
            arrivals.push(started.elapsed());
        }
    }
    let spread = arrivals[5] - arrivals[1];
    assert!(
        spread >= Duration::from_millis(300),
        "events came in a burst, not as sent: {arrivals:?}"
    );
    // Logout ends the stream.
    logout_cuts(&gw, &token, &mut stream, "stream").await;
}

/// Signs `token` out and checks that `stream` (the `what` the message names)
/// is cut off within [`CLOSE_BOUND`], not ended as if complete. One
/// deadline for the whole drain: a body that keeps coming fails.
async fn logout_cuts(gw: &Gateway, token: &str, stream: &mut support::Streaming, what: &str) {
    logout(gw, token).await;
    let ended_at = Instant::now();
    let deadline = ended_at + CLOSE_BOUND + Duration::from_secs(1);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.next_chunk()).await {
            Ok(Some(_)) => continue,
            Ok(None) => break,
            Err(_) => panic!("the {what} went on after logout"),
        }
    }
    let took = ended_at.elapsed();
    assert!(
        took <= CLOSE_BOUND,
        "the {what} ended {took:?} after logout"
    );
    assert!(stream.broken(), "cut off, not ended as if complete");
}

/// Invariant 10 for a page that streams (not an event stream): it gets the
/// guard, its lines arrive as sent, and logout cuts it off within the
/// bound, counted from the logout (the gateway's wait for a page's first
/// bytes does not put the watch off).
#[tokio::test]
async fn a_streaming_private_page_gets_the_guard_and_ends_at_logout() {
    let (_up, gw) = start(&[]).await;
    let token = gw.login(USER, PASSWORD).await;
    let mut stream =
        support::stream(&gw.url("/streaming-page"), &[("cookie", &cookie(&token))]).await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.header("cache-control"), Some("no-store"));
    let mut seen = String::new();
    while !seen.contains("line 3") {
        let chunk = tokio::time::timeout(Duration::from_secs(2), stream.next_chunk())
            .await
            .expect("a line within 2 s")
            .expect("the page goes on");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_eq!(seen.matches("pageshow").count(), 1, "{seen}");
    assert!(
        seen.starts_with("<!doctype html><html><head><script>"),
        "{seen}"
    );
    logout_cuts(&gw, &token, &mut stream, "page").await;
}

/// In Chromium: a page's WebSocket through the gateway works, and signing
/// out in another tab closes it with 1008 (what the page's `onclose` sees).
#[tokio::test]
async fn in_chromium_signing_out_in_another_tab_closes_the_pages_socket() {
    use support::browser::{Browser, Engine};
    let Some(browser) = Browser::open(Engine::Chromium).await else {
        return;
    };
    let (_up, gw) = start(&[]).await;
    let result = async {
        browser.goto(&gw.url("/page")).await?;
        browser.submit_login(USER, PASSWORD).await?;
        browser
            .wait_for_path("/page", Duration::from_secs(10))
            .await?;
        browser
            .wait_for_js(
                "window.socketLog && window.socketLog.indexOf('message:hello') >= 0",
                Duration::from_secs(10),
            )
            .await?;
        // Another tab of the same browser signs out.
        let client = browser.client();
        let driver = |e: fantoccini::error::CmdError| support::browser::Error::new(e.to_string());
        let first = client.window().await.map_err(driver)?;
        let tab = client.new_window(true).await.map_err(driver)?;
        client.switch_to_window(tab.handle).await.map_err(driver)?;
        browser.goto(&gw.url("/.signoff/logout")).await?;
        browser.click_and_wait("form button[type=submit]").await?;
        let signed_out = Instant::now();
        client.close_window().await.map_err(driver)?;
        client.switch_to_window(first).await.map_err(driver)?;
        browser
            .wait_for_js(
                "window.socketLog.some(function (e) { return e.indexOf('close:') === 0; })",
                Duration::from_secs(5),
            )
            .await?;
        let took = signed_out.elapsed();
        let log = browser.eval("window.socketLog").await?;
        Ok::<_, support::browser::Error>((log, took))
    }
    .await;
    let artifact = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("../browser-artifacts/websocket-signed-out.png");
    let _ = browser.screenshot(&artifact).await;
    let (log, took) =
        result.unwrap_or_else(|e| panic!("{e}; gateway log:\n{}", gw.proc.log_text()));
    let closes: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.as_str())
        .filter(|e| e.starts_with("close:"))
        .collect();
    assert_eq!(closes, ["close:1008:signed out"], "{log}");
    // Measured from when the click's page load finished, so generous.
    assert!(
        took <= Duration::from_secs(2),
        "closed {took:?} after signing out"
    );
    browser.close().await.unwrap();
}

/// Forward-auth refuses what `serve` refuses: an upgrade from another
/// site's page (the proxy passes `Upgrade` and `Origin` to `/auth`).
#[tokio::test]
async fn forward_auth_refuses_upgrades_from_another_site() {
    // The public URL is the proxy's; signoff listens elsewhere.
    let listen = format!("127.0.0.1:{}", support::services::free_port());
    let public = "http://127.0.0.1:8000";
    let _gw = Gateway::start_forward_auth(&["--listen", &listen, "--public-url", public]);
    let signoff = format!("http://{listen}");
    let login = post_form(
        &format!("{signoff}/.signoff/login"),
        &[("username", USER), ("password", PASSWORD)],
        &[("origin", public)],
    )
    .await;
    assert_eq!(login.status, 303, "{}", login.text());
    let token = login.new_cookie("signoff").unwrap();
    let auth = format!("{signoff}/.signoff/auth");
    let ask = |origin: &'static str, site: Option<&'static str>| {
        let auth = auth.clone();
        let token = token.clone();
        async move {
            let cookie = cookie(&token);
            let mut headers = vec![
                ("cookie", cookie.as_str()),
                ("upgrade", "websocket"),
                ("x-forwarded-uri", "/ws/app"),
                ("origin", origin),
            ];
            if let Some(site) = site {
                headers.push(("sec-fetch-site", site));
            }
            get(&auth, &headers).await.status
        }
    };
    assert_eq!(ask("http://127.0.0.1:8000", None).await, 200);
    assert_eq!(ask("http://evil.example", None).await, 403);
    assert_eq!(ask("null", None).await, 403);
    assert_eq!(ask("http://127.0.0.1:8000", Some("cross-site")).await, 403);
    // nginx's auth_request drops `Upgrade` but passes the WebSocket's own
    // headers: those are enough.
    for marker in [
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-fetch-mode", "websocket"),
    ] {
        let reply = get(
            &auth,
            &[
                ("cookie", &cookie(&token)),
                ("origin", "http://evil.example"),
                marker,
            ],
        )
        .await;
        assert_eq!(reply.status, 403, "{marker:?}");
    }
    // Not an upgrade: the Origin is the proxy's business (forms have their
    // own check at signoff's endpoints).
    let plain = get(
        &auth,
        &[
            ("cookie", &cookie(&token)),
            ("origin", "http://evil.example"),
        ],
    )
    .await;
    assert_eq!(plain.status, 200);
}

async fn request_or_log(gw: &Gateway, url: &str) -> Reply {
    let url = url.to_owned();
    match tokio::spawn(async move { get(&url, &[]).await }).await {
        Ok(reply) => reply,
        Err(e) => panic!("{e}; gateway log:\n{}", gw.proc.log_text()),
    }
}

/// One account's sockets cannot fill the connection cap: at the cap, a
/// tunnel of the address holding the most is closed (1001) to make room,
/// and sign-in still answers.
#[tokio::test]
async fn sockets_cannot_lock_others_out_at_the_connection_cap() {
    let (_up, gw) = start(&["--max-connections", "20"]).await;
    let token = gw.login(USER, PASSWORD).await;
    let mut sockets = Vec::new();
    for _ in 0..20 {
        match open_with(
            &gw,
            "/ws/app",
            &[("cookie", &cookie(&token)), ("origin", &gw.origin)],
        )
        .await
        {
            Ok(socket) => sockets.push(socket),
            Err(_) => break,
        }
    }
    assert!(sockets.len() >= 15, "opened {}", sockets.len());
    for _ in 0..3 {
        let page = request_or_log(&gw, &gw.url("/.signoff/login")).await;
        assert_eq!(page.status, 200);
    }
    // Some of the sockets were closed to make room, with "going away".
    let mut shed = 0;
    for socket in &mut sockets {
        if let Ok(Some(Ok(Message::Close(Some(frame))))) =
            tokio::time::timeout(Duration::from_millis(200), socket.next()).await
        {
            assert_eq!(u16::from(frame.code), 1001);
            shed += 1;
        }
    }
    assert!(shed >= 1, "no socket made room");
}

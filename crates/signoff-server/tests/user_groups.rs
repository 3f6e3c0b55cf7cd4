//! Managing a user's groups from the command line and the admin API,
//! against real `signoff serve` processes: removing a group the user is in
//! ends all of their sessions on every node (sessions carry the groups they
//! signed in with); adding one ends nothing and applies at the next
//! sign-in; bad input is refused and changes nothing.

mod support;

use std::process::Output;
use std::time::{Duration, Instant};

use http::Method;
use support::{
    add_user, cli, cookie, get, request, signoff_bin, Admin, Gateway, Reply, Upstream, PASSWORD,
    USER,
};

/// Whether `token` still opens a private upstream page on `gw`.
async fn alive(gw: &Gateway, token: &str) -> bool {
    let reply = get(&gw.url("/private"), &[("cookie", &cookie(token))]).await;
    match reply.status {
        200 => true,
        401 | 303 => false,
        other => panic!("unexpected {other}: {}", reply.text()),
    }
}

/// Polls until `token` is refused on `gw`; panics after 2 s (the nodes
/// hear of an end within milliseconds).
async fn refused_soon(gw: &Gateway, token: &str) {
    let start = Instant::now();
    while alive(gw, token).await {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "still alive after 2 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `signoff ARGS --db DB`, which must fail; returns its stderr.
fn cli_fails(args: &[&str], db: &str) -> String {
    let out = std::process::Command::new(signoff_bin())
        .args(args)
        .args(["--db", db])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "signoff {args:?} succeeded");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// The audit trail's events of `kind`, as JSON objects.
fn audit_of(db: &str, kind: &str) -> Vec<serde_json::Value> {
    let out = cli(&["audit", "--json", "--kind", kind], db);
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn cli_group_removal_ends_sessions_on_every_node_and_adding_ends_none() {
    let Some(up) = Upstream::start() else { return };
    let a = Gateway::start(&up.url(), &[]);
    let db = a.db.clone();
    let b = Gateway::start_on(tempfile::tempdir().unwrap(), &db, Some(&up.url()), &[]);
    let groups = |args: &[&str]| {
        let all: Vec<&str> = ["user", "groups", USER]
            .iter()
            .chain(args)
            .copied()
            .collect();
        stdout(&cli(&all, &db))
    };
    assert_eq!(groups(&[]), "", "in no group yet");

    let on_a = a.login(USER, PASSWORD).await;
    let on_b = b.login(USER, PASSWORD).await;
    let out = groups(&["add", "admins", "ops"]);
    assert!(out.contains("added alice to admins, ops"), "{out}");
    assert!(out.contains("next sign-in"), "{out}");
    assert!(
        out.contains("signoff sessions end --user alice"),
        "how to apply it now: {out}"
    );
    assert_eq!(groups(&[]), "admins\nops\n");
    let list = stdout(&cli(&["user", "list"], &db));
    assert!(list.contains("admins,ops"), "{list}");
    // Adding ended nothing.
    assert!(alive(&a, &on_a).await && alive(&b, &on_b).await);
    let out = groups(&["add", "ops"]);
    assert!(out.contains("already in ops; nothing changed"), "{out}");

    // Removing ends every session of the user, on both nodes.
    let out = groups(&["remove", "admins"]);
    assert!(
        out.contains("removed alice from admins")
            && out.contains("ended 2 sessions (they carried the old groups)"),
        "{out}"
    );
    refused_soon(&a, &on_a).await;
    refused_soon(&b, &on_b).await;
    refused_soon(&a, &on_b).await;
    assert_eq!(groups(&[]), "ops\n");

    // Removing a group the user is not in ends nothing.
    let fresh = a.login(USER, PASSWORD).await;
    let out = groups(&["remove", "admins"]);
    assert!(
        out.contains("alice is not in admins; nothing changed, no session ended"),
        "{out}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(alive(&a, &fresh).await && alive(&b, &fresh).await);

    // The trail: two changes by the operator, the removal's ended sessions.
    let changes = audit_of(&db, "groups_changed");
    assert_eq!(changes.len(), 2, "{changes:#?}");
    assert!(changes.iter().all(|e| e["by"] == "operator"));
    assert_eq!(changes[0]["reason"], "groups_removed");
    assert_eq!(changes[1]["reason"], "groups_added");
    let ended = audit_of(&db, "session_ended");
    assert!(
        ended
            .iter()
            .any(|e| e["reason"] == "groups_removed" && e["count"] == 2),
        "{ended:#?}"
    );
}

#[test]
fn cli_group_commands_refuse_bad_input_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("sqlite://{}", dir.path().join("missing.db").display());
    let stderr = cli_fails(&["user", "groups", USER], &missing);
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(!dir.path().join("missing.db").exists());

    let db = format!("sqlite://{}", dir.path().join("signoff.db").display());
    add_user(&db, USER, PASSWORD);
    for args in [
        vec!["user", "groups", "nobody"],
        vec!["user", "groups", "nobody", "add", "admins"],
        vec!["user", "groups", "nobody", "remove", "admins"],
    ] {
        let stderr = cli_fails(&args, &db);
        assert!(
            stderr.contains("no such user: \"nobody\""),
            "{args:?}: {stderr}"
        );
    }
    for bad in ["bad group", "", "a,b", "ä"] {
        for change in ["add", "remove"] {
            let stderr = cli_fails(&["user", "groups", USER, change, bad], &db);
            assert!(
                stderr.contains("groups are 1 to 64 characters"),
                "{change} {bad:?}: {stderr}"
            );
        }
    }
    // With no session live, removing says so.
    cli(&["user", "groups", USER, "add", "admins"], &db);
    let out = stdout(&cli(&["user", "groups", USER, "remove", "admins"], &db));
    assert!(
        out.contains("removed alice from admins")
            && out.contains("no session was live, none ended"),
        "{out}"
    );
    // Neither a group without add/remove nor add/remove without a group.
    let stderr = cli_fails(&["user", "groups", USER, "admins"], &db);
    assert!(stderr.contains("possible values: add, remove"), "{stderr}");
    let stderr = cli_fails(&["user", "groups", USER, "add"], &db);
    assert!(stderr.contains("<GROUP>"), "{stderr}");
    // None of that changed alice.
    assert_eq!(stdout(&cli(&["user", "groups", USER], &db)), "");
    assert_eq!(
        audit_of(&db, "groups_changed").len(),
        2,
        "the add and the remove"
    );
}

// ---------------------------------------------------------------- admin API

fn admin() -> Option<Admin> {
    Admin::start()
}

impl Admin {
    async fn change(&self, body: &str) -> Reply {
        self.call(Method::POST, "/users/alice/groups", Some(body))
            .await
    }
}

#[tokio::test]
async fn admin_api_group_removal_ends_sessions_and_adding_ends_none() {
    let Some(admin) = admin() else { return };
    let gw = &admin.gw;
    let shown = admin.call(Method::GET, "/users/alice/groups", None).await;
    assert_eq!(shown.status, 200, "{}", shown.text());
    assert_eq!(shown.header("content-type"), Some("application/json"));
    assert_eq!(
        shown.json(),
        serde_json::json!({"name": "alice", "groups": []})
    );

    let token = gw.login(USER, PASSWORD).await;
    let added = admin.change(r#"{"add":["ops","admins","ops"]}"#).await;
    assert_eq!(added.status, 200, "{}", added.text());
    assert_eq!(
        added.json(),
        serde_json::json!({
            "name": "alice",
            "groups": ["admins", "ops"],
            "added": ["admins", "ops"],
            "removed": [],
            "ended": 0,
        })
    );
    assert!(alive(gw, &token).await, "adding ended the session");
    let user = admin.call(Method::GET, "/users/alice", None).await.json();
    assert_eq!(user["groups"], serde_json::json!(["admins", "ops"]));
    let listed = admin.call(Method::GET, "/users", None).await.json();
    assert_eq!(listed[0]["groups"], serde_json::json!(["admins", "ops"]));

    // Both at once: the removal ends the session at once.
    let second = gw.login(USER, PASSWORD).await;
    let changed = admin
        .change(r#"{"add":["staff"],"remove":["admins","never"]}"#)
        .await;
    assert_eq!(changed.status, 200, "{}", changed.text());
    assert_eq!(
        changed.json(),
        serde_json::json!({
            "name": "alice",
            "groups": ["ops", "staff"],
            "added": ["staff"],
            "removed": ["admins"],
            "ended": 2,
        })
    );
    assert!(!alive(gw, &token).await, "the old cookie was refused");
    assert!(!alive(gw, &second).await);

    // Removing a group not held, or an empty change: nothing ends.
    let fresh = gw.login(USER, PASSWORD).await;
    for body in [r#"{"remove":["admins"]}"#, "{}"] {
        let reply = admin.change(body).await;
        assert_eq!(reply.status, 200, "{body}: {}", reply.text());
        assert_eq!(reply.json()["ended"], 0, "{body}");
        assert_eq!(reply.json()["removed"], serde_json::json!([]), "{body}");
        assert_eq!(
            reply.json()["groups"],
            serde_json::json!(["ops", "staff"]),
            "{body}"
        );
    }
    assert!(alive(gw, &fresh).await);

    // The trail: two changes by the admin.
    let events = admin
        .call(Method::GET, "/audit?user=alice&kind=groups_changed", None)
        .await;
    assert_eq!(events.status, 200, "{}", events.text());
    let events = events.json();
    let events = events.as_array().unwrap();
    assert_eq!(events.len(), 2, "{events:#?}");
    assert!(events.iter().all(|e| e["by"] == "admin"));
    assert_eq!(events[0]["reason"], "groups_removed");
    assert_eq!(events[1]["reason"], "groups_added");
}

#[tokio::test]
async fn admin_api_group_changes_refuse_bad_input_and_change_nothing() {
    let Some(admin) = admin() else { return };
    let gw = &admin.gw;
    let token = gw.login(USER, PASSWORD).await;
    assert_eq!(
        admin.change(r#"{"add":["admins"]}"#).await.status,
        200,
        "the starting group"
    );
    let cases: [(Method, &str, Option<&str>, u16, &str); 10] = [
        (
            Method::GET,
            "/users/nobody/groups",
            None,
            404,
            "unknown_user",
        ),
        (
            Method::POST,
            "/users/nobody/groups",
            Some(r#"{"remove":["admins"]}"#),
            404,
            "unknown_user",
        ),
        (
            Method::POST,
            "/users/alice/groups",
            Some(r#"{"add":["bad group"]}"#),
            400,
            "invalid_groups",
        ),
        (
            Method::POST,
            "/users/alice/groups",
            Some(r#"{"remove":["admins",""]}"#),
            400,
            "invalid_groups",
        ),
        (
            Method::POST,
            "/users/alice/groups",
            Some(r#"{"add":["ops"],"remove":["ops","admins"]}"#),
            400,
            "invalid_groups",
        ),
        (
            Method::POST,
            "/users/alice/groups",
            Some(r#"{"remove":"admins"}"#),
            400,
            "invalid_json",
        ),
        (
            Method::POST,
            "/users/alice/groups",
            Some(r#"{"remove":["admins"],"groups":[]}"#),
            400,
            "invalid_json",
        ),
        (
            Method::POST,
            "/users/alice/groups",
            Some("{not json"),
            400,
            "invalid_json",
        ),
        (
            Method::POST,
            "/users/alice/groups",
            Some(r#"{"remove":["admins"]"#),
            400,
            "invalid_json",
        ),
        (
            Method::PUT,
            "/users/alice/groups",
            Some(r#"{"remove":["admins"]}"#),
            405,
            "method_not_allowed",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let reply = admin.call(method.clone(), path, body).await;
        assert_eq!(
            reply.status,
            status,
            "{method} {path} {body:?}: {}",
            reply.text()
        );
        assert_eq!(reply.json()["error"], code, "{method} {path} {body:?}");
    }
    // Too many groups in the end.
    let many: Vec<String> = (0..64).map(|i| format!("g{i}")).collect();
    let body = serde_json::json!({ "add": many }).to_string();
    let reply = admin.change(&body).await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert_eq!(reply.json()["error"], "invalid_groups");
    // Not JSON, too large, no token.
    let auth = format!("Bearer {}", admin.token);
    let url = gw.url("/.signoff/admin/users/alice/groups");
    let reply = request(
        Method::POST,
        &url,
        &[("authorization", &auth)],
        Some(("text/plain", br#"{"remove":["admins"]}"#.to_vec())),
    )
    .await;
    assert_eq!(reply.status, 415);
    let big = format!(r#"{{"remove":["admins"],"pad":"{}"}}"#, "x".repeat(20_000));
    let reply = admin.change(&big).await;
    assert_eq!(reply.status, 413);
    assert_eq!(reply.json()["error"], "too_large");
    for method in [Method::GET, Method::POST] {
        let reply = request(
            method.clone(),
            &url,
            &[("cookie", &cookie(&token))],
            Some(("application/json", br#"{"remove":["admins"]}"#.to_vec())),
        )
        .await;
        assert_eq!(reply.status, 401, "{method}");
        assert_eq!(reply.json()["error"], "unauthorized", "{method}");
    }
    // None of that changed alice or ended her session.
    let shown = admin.call(Method::GET, "/users/alice/groups", None).await;
    assert_eq!(shown.json()["groups"], serde_json::json!(["admins"]));
    assert!(alive(gw, &token).await);
}

//! The `signoff` binary as a user runs it, against a real SQLite file.

mod support;

use support::signoff_in;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use signoff::{NewSession, Policy, SessionError, Sessions, SqliteStore, UserStore};

fn signoff(args: &[&str], stdin: &str) -> Output {
    signoff_in(Path::new("."), &[], args, stdin)
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// Runs signoff, asserts it succeeded, and returns what it printed.
fn succeeds(args: &[&str], stdin: &str) -> String {
    let out = signoff(args, stdin);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// Runs signoff, asserts it failed with an error containing `needle`.
fn fails_saying(args: &[&str], stdin: &str, needle: &str) {
    let out = signoff(args, stdin);
    assert!(!out.status.success(), "{args:?} succeeded");
    let stderr = text(&out.stderr);
    assert!(stderr.contains(needle), "{args:?}: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_managed_and_disable_ends_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("signoff.db").display());
    let add = |name| ["user", "add", name, "--password-stdin", "--db", &db];

    let out = succeeds(&add("alice"), "correct horse battery\n");
    assert!(!out.contains("correct horse"));
    fails_saying(&add("alice"), "another password\n", "exists already");
    fails_saying(&add("bob"), "short\n", "at least 8");

    let list = succeeds(&["user", "list", "--db", &db], "");
    assert!(list.contains("alice"));
    assert!(list.contains("active"));

    // A session opened by another process on the same file (the gateway).
    let store = SqliteStore::open(dir.path().join("signoff.db"))
        .await
        .unwrap();
    let alice = store.user_by_name("alice").await.unwrap().unwrap();
    let sessions = Sessions::new(Arc::new(store), Policy::default());
    let login = || sessions.login(None, NewSession::for_user(alice.id.clone()));
    let issued = login().await.unwrap();
    sessions.validate(issued.token.expose()).await.unwrap();

    // A password change ends the user's sessions unless told otherwise.
    let passwd = ["user", "passwd", "alice", "--password-stdin", "--db", &db];
    let keep = [&passwd[..], &["--keep-sessions"]].concat();
    succeeds(&keep, "a second passphrase\n");
    sessions.validate(issued.token.expose()).await.unwrap();
    let out = succeeds(&passwd, "a third passphrase\n");
    assert!(out.contains("ended 1 session"), "{out}");
    assert!(matches!(
        sessions.validate(issued.token.expose()).await,
        Err(SessionError::NotFound)
    ));

    let issued = login().await.unwrap();
    let out = succeeds(&["user", "disable", "alice", "--db", &db], "");
    assert!(out.contains("ended 1 session"), "{out}");
    assert!(matches!(
        sessions.validate(issued.token.expose()).await,
        Err(SessionError::NotFound)
    ));
    assert!(succeeds(&["user", "list", "--db", &db], "").contains("disabled"));
}

#[test]
fn bad_input_gets_a_clear_error() {
    let list = |db| ["user", "list", "--db", db];
    fails_saying(&list("mysql://nowhere"), "", "expected sqlite://PATH");
    fails_saying(
        &list("sqlite:///nonexistent-dir/x/y.db"),
        "",
        "does not exist",
    );

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let db = db.to_str().unwrap();
    // Commands that change someone or something that must exist refuse a
    // database that is not there (a mistyped path), and create none.
    for args in [
        vec!["user", "disable", "nobody"],
        vec!["user", "enable", "nobody"],
        vec!["user", "passwd", "nobody", "--password-stdin"],
        vec!["sessions", "end", "--user", "nobody"],
        vec!["keys", "rotate"],
        vec!["keys", "rotate-session-key"],
    ] {
        let args: Vec<&str> = args.into_iter().chain(["--db", db]).collect();
        fails_saying(&args, "new password 123\n", "does not exist");
        assert!(!std::path::Path::new(db).exists(), "{args:?} created {db}");
    }
    fails_saying(
        &["user", "add", "alice", "--db", db],
        "",
        "--password-stdin",
    );
    succeeds(
        &["user", "add", "bob", "--password-stdin", "--db", db],
        "bob's password 123\n",
    );
    fails_saying(
        &["user", "disable", "nobody", "--db", db],
        "",
        "no such user",
    );
    // One handle in 64 starts with `-`: it is a handle, not a flag.
    fails_saying(
        &["sessions", "end", "-cErkjih6u-Y", "--db", db],
        "",
        "no live session has the handle -cErkjih6u-Y",
    );
}

#[test]
fn help_is_there_for_every_subcommand() {
    for args in [
        vec!["--help"],
        vec!["user", "--help"],
        vec!["user", "add", "--help"],
        vec!["user", "passwd", "--help"],
        vec!["user", "disable", "--help"],
        vec!["user", "enable", "--help"],
        vec!["user", "list", "--help"],
        vec!["user", "groups", "--help"],
    ] {
        assert!(succeeds(&args, "").contains("Usage"), "{args:?}");
    }
}

/// `signoff serve` refuses to start with a clear message, fast.
fn serve_fails_saying(args: &[&str], envs: &[(&str, &str)], needle: &str) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_signoff"));
    cmd.arg("serve").args(args).env_remove("SIGNOFF_DB");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run signoff");
    assert!(!out.status.success(), "{args:?} started");
    let stderr = text(&out.stderr);
    assert!(stderr.contains(needle), "{args:?}: {stderr}");
}

/// Bad branding stops the start, naming the setting and the file.
#[test]
fn serve_refuses_bad_branding_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("s.db").display());
    let base = ["--db", db.as_str()];
    fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        [base, extra].concat()
    }
    serve_fails_saying(
        &with(&base, &["--brand-accent", "red"]),
        &[],
        "--brand-accent \"red\": expected a colour as #rgb or #rrggbb",
    );
    serve_fails_saying(
        &base,
        &[("SIGNOFF_BRAND_ACCENT", "#12345")],
        "--brand-accent \"#12345\"",
    );
    let gif = dir.path().join("logo.gif");
    std::fs::write(&gif, b"GIF89a......").unwrap();
    serve_fails_saying(
        &with(&base, &["--brand-logo", gif.to_str().unwrap()]),
        &[],
        "is not a PNG, JPEG, WebP or SVG image",
    );
    let big = dir.path().join("big.png");
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.resize(256 * 1024 + 1, 0);
    std::fs::write(&big, bytes).unwrap();
    serve_fails_saying(
        &with(&base, &["--brand-logo", big.to_str().unwrap()]),
        &[],
        "at most 256 KiB",
    );
    serve_fails_saying(
        &with(&base, &["--brand-logo", "/nonexistent/logo.png"]),
        &[],
        "--brand-logo: cannot read /nonexistent/logo.png",
    );
    serve_fails_saying(
        &with(&base, &["--template-dir", "/nonexistent/brand"]),
        &[],
        "--template-dir: cannot read the directory /nonexistent/brand",
    );
    let templates = dir.path().join("templates");
    std::fs::create_dir(&templates).unwrap();
    std::fs::write(templates.join("index.html"), "<p>mine</p>").unwrap();
    serve_fails_saying(
        &with(&base, &["--template-dir", templates.to_str().unwrap()]),
        &[],
        "index.html is not a page signoff has",
    );
    std::fs::remove_file(templates.join("index.html")).unwrap();
    // A page override is tried at start: a misspelt variable stops it.
    std::fs::write(templates.join("login.html"), "<p>mine</p>\n{{ usrname }}").unwrap();
    serve_fails_saying(
        &with(&base, &["--template-dir", templates.to_str().unwrap()]),
        &[],
        "login.html line 2: undefined value",
    );
    // Fixed, it is taken, and `--check` names it.
    std::fs::write(templates.join("login.html"), "<p>mine</p>\n{{ username }}").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_signoff"))
        .arg("serve")
        .args(with(
            &base,
            &["--check", "--template-dir", templates.to_str().unwrap()],
        ))
        .env_remove("SIGNOFF_DB")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("branding      name \"signoff\", own pages login\n"),
        "{}",
        text(&out.stdout)
    );
    // `serve --check` shows what it read, and checks the same way.
    let svg = dir.path().join("logo.svg");
    std::fs::write(&svg, "<svg xmlns=\"http://www.w3.org/2000/svg\"/>").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_signoff"))
        .arg("serve")
        .args(with(
            &base,
            &["--check", "--brand-name", "Acme", "--brand-accent", "#ABC"],
        ))
        .args(["--brand-logo", svg.to_str().unwrap()])
        .env_remove("SIGNOFF_DB")
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout
            .contains("branding      name \"Acme\", logo image/svg+xml (41 bytes), accent #aabbcc"),
        "{stdout}"
    );
    serve_fails_saying(
        &with(&base, &["--check", "--brand-name", ""]),
        &[],
        "--brand-name",
    );
}

#[test]
fn serve_explains_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("s.db").display());
    let up = ["--upstream", "http://127.0.0.1:9"];
    // Without --upstream it serves forward-auth only (tests/forward_auth.rs),
    // but a bad upstream is still an error.
    serve_fails_saying(
        &["--db", &db, "--upstream", "ftp://x"],
        &[],
        "expected http://HOST:PORT",
    );
    serve_fails_saying(
        &[&up[..], &["--idle-timeout", "soon", "--db", &db]].concat(),
        &[],
        "not a duration",
    );
    // A port in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    serve_fails_saying(
        &[&up[..], &["--listen", &addr, "--db", &db]].concat(),
        &[],
        "already in use",
    );
    // A database that cannot be written.
    serve_fails_saying(
        &[
            &up[..],
            &[
                "--db",
                "sqlite:///proc/signoff/none.db",
                "--listen",
                "127.0.0.1:0",
            ],
        ]
        .concat(),
        &[],
        "cannot open the database",
    );
    // A config file with a typo.
    let file = dir.path().join("signoff.toml");
    std::fs::write(
        &file,
        "upstream = \"http://127.0.0.1:9\"\nidle_timeot = \"5m\"\n",
    )
    .unwrap();
    serve_fails_saying(&["--config", file.to_str().unwrap()], &[], "idle_timeot");
    // Plain HTTP off loopback needs a flag.
    serve_fails_saying(
        &[
            &up[..],
            &["--public-url", "http://app.example.com", "--db", &db],
        ]
        .concat(),
        &[],
        "--allow-insecure-http",
    );
    // Environment variables are read, and a flag beats them.
    serve_fails_saying(
        &["--db", &db],
        &[("SIGNOFF_UPSTREAM", "ftp://x")],
        "expected http://",
    );
    serve_fails_saying(
        &[&up[..], &["--db", &db]].concat(),
        &[
            ("SIGNOFF_IDLE_TIMEOUT", "1h"),
            ("SIGNOFF_ABSOLUTE_TIMEOUT", "never"),
        ],
        "--absolute-timeout",
    );
    serve_fails_saying(
        &[&up[..], &["--db", &db, "--listen", "nonsense"]].concat(),
        &[("SIGNOFF_LISTEN", "127.0.0.1:0")],
        "nonsense",
    );
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["demo", "--help"],
        &["user", "--help"],
        &["user", "add", "--help"],
        &["user", "passwd", "--help"],
        &["user", "disable", "--help"],
        &["user", "enable", "--help"],
        &["user", "list", "--help"],
    ] {
        let out = succeeds(args, "");
        assert!(out.contains("Usage"), "{args:?}: {out}");
    }
    let serve = succeeds(&["serve", "--help"], "");
    for flag in [
        "--upstream",
        "--listen",
        "--public-url",
        "--db",
        "--idle-timeout",
        "--absolute-timeout",
        "--config",
        "--tls-cert",
        "--tls-key",
        "SIGNOFF_UPSTREAM",
    ] {
        assert!(serve.contains(flag), "serve --help lacks {flag}");
    }
}

/// `signoff ARGS` in `dir` with `env`: what it printed, asserting success.
fn succeeds_in(dir: &Path, env: &[(&str, &str)], args: &[&str], stdin: &str) -> String {
    let out = signoff_in(dir, env, args, stdin);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// Every command finds the store as `serve` does: `--db`, `SIGNOFF_DB`, the
/// file of `--config` or `SIGNOFF_CONFIG`, the default. A user added with
/// the file signs in to `serve` with the file, and nothing is written to
/// `./signoff.db` on the way.
#[tokio::test]
async fn every_command_opens_the_database_serve_opens() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let db = dir.path().join("from-file.db");
    let config = dir.path().join("signoff.toml");
    std::fs::write(&config, format!("db = \"sqlite://{}\"\n", db.display())).unwrap();
    let config = config.to_str().unwrap();

    let out = succeeds_in(
        &work,
        &[],
        &["user", "add", "bob", "--password-stdin", "--config", config],
        "correct horse battery\n",
    );
    assert!(
        out.contains(&db.display().to_string()),
        "names the store: {out}"
    );
    assert!(db.exists(), "the file's database");
    assert!(!work.join("signoff.db").exists(), "not ./signoff.db");

    // The variable names the file too.
    let env = [("SIGNOFF_CONFIG", config)];
    succeeds_in(
        &work,
        &env,
        &["user", "add", "carol", "--password-stdin"],
        "another passphrase\n",
    );
    let list = succeeds_in(&work, &env, &["user", "list"], "");
    assert!(list.contains("bob") && list.contains("carol"), "{list}");
    assert!(!work.join("signoff.db").exists(), "not ./signoff.db");
    // A flag and SIGNOFF_DB beat the file.
    let other = dir.path().join("other.db");
    let other_url = format!("sqlite://{}", other.display());
    let by_variable = signoff_in(
        &work,
        &[("SIGNOFF_CONFIG", config), ("SIGNOFF_DB", &other_url)],
        &["user", "list"],
        "",
    );
    let by_flag = signoff_in(&work, &env, &["user", "list", "--db", &other_url], "");
    for out in [by_variable, by_flag] {
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains("other.db"), "{stderr}");
    }
    assert!(!other.exists());

    // `serve` with the same file signs bob in.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_signoff"));
    cmd.args(["serve", "--config", config, "--listen", "127.0.0.1:0"])
        .current_dir(&work)
        .env_remove("SIGNOFF_DB")
        .env_remove("SIGNOFF_CONFIG")
        .env("SIGNOFF_LOG", "info");
    let (gw, lines) = support::spawn_reading_lines(cmd, dir.path().join("serve.log"), 1);
    let origin = lines[0]
        .strip_prefix("signoff listening on ")
        .unwrap()
        .trim_end_matches('/');
    support::login_at(origin, "bob", "correct horse battery").await;
    let db = db.canonicalize().unwrap();
    assert!(
        gw.log_text()
            .contains(&format!("db=sqlite://{}", db.display())),
        "serve names the store it opened: {}",
        gw.log_text()
    );
    assert!(!work.join("signoff.db").exists(), "not ./signoff.db");
}

/// A command that only reads does not answer from a new, empty database
/// when the one named is not there: it says which and how to make one,
/// and leaves no file behind.
#[test]
fn reading_a_database_that_is_not_there_says_so_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("misspelt.db");
    let shown = missing.display().to_string();
    let url = format!("sqlite://{shown}");
    for db in [url.as_str(), shown.as_str()] {
        for command in [
            &["user", "list"][..],
            &["sessions", "list"],
            &["audit"],
            &["keys", "list"],
        ] {
            let args = [command, &["--db", db]].concat();
            let out = signoff(&args, "");
            assert!(!out.status.success(), "{args:?} succeeded");
            let stderr = text(&out.stderr);
            for needle in [
                "does not exist",
                shown.as_str(),
                "--db or SIGNOFF_DB",
                "signoff user add",
            ] {
                assert!(stderr.contains(needle), "{args:?}: {needle}: {stderr}");
            }
            assert!(!missing.exists(), "{args:?} created {shown}");
        }
    }
    // Named by a config file: the message says so.
    let config = dir.path().join("signoff.toml");
    std::fs::write(&config, format!("db = \"{url}\"\n")).unwrap();
    let out = signoff(&["user", "list", "--config", config.to_str().unwrap()], "");
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("the `db` key of") && stderr.contains("signoff.toml"),
        "{stderr}"
    );
    assert!(!missing.exists());
    // Adding a user creates it.
    let out = succeeds(
        &["user", "add", "alice", "--password-stdin", "--db", &url],
        "correct horse battery\n",
    );
    assert!(out.contains("added user alice"), "{out}");
    assert!(succeeds(&["user", "list", "--db", &url], "").contains("alice"));
}

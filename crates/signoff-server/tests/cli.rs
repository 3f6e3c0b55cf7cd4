//! The `signoff` binary as a user runs it, against a real SQLite file.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use signoff::{NewSession, Policy, SessionError, Sessions, SqliteStore, UserStore};

fn signoff(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_signoff"))
        .args(args)
        .env_remove("SIGNOFF_DB")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run signoff");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_managed_and_disable_ends_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("signoff.db").display());

    let out = signoff(
        &["user", "add", "alice", "--password-stdin", "--db", &db],
        "correct horse battery\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("correct horse"));

    let again = signoff(
        &["user", "add", "alice", "--password-stdin", "--db", &db],
        "another password\n",
    );
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("exists already"),
        "{}",
        text(&again.stderr)
    );

    let weak = signoff(
        &["user", "add", "bob", "--password-stdin", "--db", &db],
        "short\n",
    );
    assert!(!weak.status.success());
    assert!(
        text(&weak.stderr).contains("at least 8"),
        "{}",
        text(&weak.stderr)
    );

    let list = signoff(&["user", "list", "--db", &db], "");
    assert!(text(&list.stdout).contains("alice"));
    assert!(text(&list.stdout).contains("active"));

    // A session opened by another process on the same file (the gateway).
    let store = SqliteStore::open(dir.path().join("signoff.db"))
        .await
        .unwrap();
    let alice = store.user_by_name("alice").await.unwrap().unwrap();
    let sessions = Sessions::new(Arc::new(store), Policy::default());
    let issued = sessions
        .login(None, NewSession::for_user(alice.id.clone()))
        .await
        .unwrap();
    sessions.validate(issued.token.expose()).await.unwrap();

    // A password change ends the user's sessions unless told otherwise.
    let out = signoff(
        &[
            "user",
            "passwd",
            "alice",
            "--password-stdin",
            "--keep-sessions",
            "--db",
            &db,
        ],
        "a second passphrase\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    sessions.validate(issued.token.expose()).await.unwrap();
    let out = signoff(
        &["user", "passwd", "alice", "--password-stdin", "--db", &db],
        "a third passphrase\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("ended 1 session"),
        "{}",
        text(&out.stdout)
    );
    assert!(matches!(
        sessions.validate(issued.token.expose()).await,
        Err(SessionError::NotFound)
    ));
    let issued = sessions
        .login(None, NewSession::for_user(alice.id.clone()))
        .await
        .unwrap();

    let out = signoff(&["user", "disable", "alice", "--db", &db], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("ended 1 session"),
        "{}",
        text(&out.stdout)
    );
    assert!(matches!(
        sessions.validate(issued.token.expose()).await,
        Err(SessionError::NotFound)
    ));
    assert!(text(&signoff(&["user", "list", "--db", &db], "").stdout).contains("disabled"));
}

#[test]
fn bad_input_gets_a_clear_error() {
    let out = signoff(&["user", "list", "--db", "mysql://nowhere"], "");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("expected sqlite://PATH"),
        "{}",
        text(&out.stderr)
    );

    let out = signoff(
        &["user", "list", "--db", "sqlite:///nonexistent-dir/x/y.db"],
        "",
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cannot open the database"),
        "{}",
        text(&out.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let out = signoff(&["user", "add", "alice", "--db", db.to_str().unwrap()], "");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--password-stdin"),
        "{}",
        text(&out.stderr)
    );

    let out = signoff(
        &["user", "disable", "nobody", "--db", db.to_str().unwrap()],
        "",
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no such user"),
        "{}",
        text(&out.stderr)
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
    ] {
        let out = signoff(&args, "");
        assert!(out.status.success(), "{args:?}");
        assert!(text(&out.stdout).contains("Usage"), "{args:?}");
    }
}

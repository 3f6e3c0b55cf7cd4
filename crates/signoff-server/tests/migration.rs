//! docs/migrate-from-flask-login.md, done for real with the apps in
//! `examples/flask-login/`: a Flask-Login app's users (Werkzeug hashes)
//! leave with `export_users.py`, arrive with `signoff user import`, and
//! sign in with their old passwords through signoff in front of the
//! migrated app, whose fresh-login check, logout and own tests work.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

const ALICE_PASSWORD: &str = "alice's old password";
const BOB_PASSWORD: &str = "bob's old password";

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/flask-login")
}

fn python(args: &[&str], dir: &Path) -> Command {
    let mut cmd = Command::new("python3");
    cmd.args(args)
        .current_dir(dir)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    cmd
}

/// `before.py adduser`, as the old app made its users.
fn add_old_user(db: &Path, name: &str, password: &str, flags: &[&str]) {
    let script = example_dir().join("before.py");
    let mut child = python(
        &[
            script.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
            "adduser",
            name,
        ],
        db.parent().unwrap(),
    )
    .args(flags)
    .stdin(Stdio::piped())
    .spawn()
    .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    assert!(child.wait().unwrap().success(), "before.py adduser {name}");
}

/// Starts one of the example apps on a free port; returns it and its URL.
fn start_app(script: &str, args: &[&str], env: &[(&str, &str)], log: PathBuf) -> (Proc, String) {
    let dir = log.parent().unwrap().to_owned();
    let mut cmd = python(&[example_dir().join(script).to_str().unwrap()], &dir);
    cmd.args(args).args(["--port", "0"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let (proc, lines) = spawn_reading_lines(cmd, log, 1);
    let url = lines[0]
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {:?}", lines[0]))
        .to_owned();
    (proc, url)
}

fn stored_hash(db: &Path, name: &str) -> String {
    let out = python(
        &[
            "-c",
            "import sqlite3, sys\n\
             row = sqlite3.connect(sys.argv[1]).execute(\
             'SELECT password_hash FROM users WHERE name = ?', (sys.argv[2],)).fetchone()\n\
             print(row[0] if row else '')",
            db.to_str().unwrap(),
            name,
        ],
        db.parent().unwrap(),
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn a_flask_login_app_moves_to_signoff_with_its_users_and_passwords() {
    let Some(()) = python_with("flask, flask_login", "pip install flask-login") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let old_db = dir.path().join("users.db");
    add_old_user(&old_db, "alice", ALICE_PASSWORD, &["--admin"]);
    add_old_user(&old_db, "bob", BOB_PASSWORD, &["--inactive"]);
    let old_hash = stored_hash(&old_db, "alice");
    assert!(
        old_hash.starts_with("scrypt:") || old_hash.starts_with("pbkdf2:"),
        "Werkzeug's own format"
    );

    // Before: the classic failure the guide starts from. A cookie
    // captured before the GET logout still signs in afterwards.
    {
        let (_app, url) = start_app(
            "before.py",
            &["--db", old_db.to_str().unwrap(), "serve"],
            &[],
            dir.path().join("before.log"),
        );
        let r = post_form(
            &format!("{url}/login"),
            &[("username", "alice"), ("password", ALICE_PASSWORD)],
            &[],
        )
        .await;
        assert_eq!(r.status, 302, "before.py sign-in: {}", r.text());
        let captured = r.new_cookie("session").expect("Flask's session cookie");
        let jar = format!("session={captured}");
        let home = get(&format!("{url}/"), &[("cookie", &jar)]).await;
        assert!(
            home.text().contains(r#"<b id="user">alice</b>"#),
            "{}",
            home.text()
        );
        let out = get(&format!("{url}/logout"), &[("cookie", &jar)]).await;
        assert_eq!(out.status, 302);
        let replay = get(&format!("{url}/"), &[("cookie", &jar)]).await;
        assert_eq!(
            replay.status, 200,
            "the old app honours a cookie from before its logout (the guide's premise)"
        );
    }

    // Export and import.
    let export = python(
        &[
            example_dir().join("export_users.py").to_str().unwrap(),
            old_db.to_str().unwrap(),
        ],
        dir.path(),
    )
    .output()
    .unwrap();
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let jsonl = dir.path().join("users.jsonl");
    std::fs::write(&jsonl, &export.stdout).unwrap();
    let exported = String::from_utf8_lossy(&export.stdout);
    assert_eq!(exported.lines().count(), 2, "{exported}");
    let db_path = dir.path().join("signoff.db");
    let db = format!("sqlite://{}", db_path.display());
    let import = cli(&["user", "import", jsonl.to_str().unwrap()], &db);
    let said = String::from_utf8_lossy(&import.stdout).into_owned()
        + &String::from_utf8_lossy(&import.stderr);
    assert!(
        said.contains("imported 2 user(s)"),
        "the import reports what it did: {said}"
    );
    assert!(!said.contains(&old_hash), "no hash is printed");
    let imported_hash = stored_hash(&db_path, "alice");
    assert_eq!(imported_hash, old_hash, "kept as it was until sign-in");

    // After: signoff in front of the migrated app.
    let (_app, app_url) = start_app(
        "after.py",
        &[],
        &[("FRESH_SECONDS", "2")],
        dir.path().join("after.log"),
    );
    let gw_dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_on(gw_dir, &db, Some(&app_url), &[]);

    // A wrong password, and a user who was inactive, do not sign in.
    for (name, password) in [("alice", "not the password"), ("bob", BOB_PASSWORD)] {
        let r = post_form(
            &gw.url("/.signoff/login"),
            &[("username", name), ("password", password)],
            &[("origin", &gw.origin)],
        )
        .await;
        assert_eq!(r.status, 401, "{name}: {}", r.text());
        assert!(r.new_cookie("signoff").is_none(), "{name} signed in");
    }
    let users = String::from_utf8_lossy(&cli(&["user", "list"], &db).stdout).into_owned();
    let bob = users
        .lines()
        .find(|l| l.contains("bob"))
        .unwrap_or_default();
    assert!(bob.contains("disabled"), "bob came over disabled: {users}");
    assert_eq!(
        stored_hash(&db_path, "alice"),
        imported_hash,
        "a failed sign-in rehashes nothing"
    );

    // The old password works, and the hash becomes signoff's own.
    let token = gw.login("alice", ALICE_PASSWORD).await;
    let c = cookie(&token);
    let home = get(&gw.url("/"), &[("cookie", &c)]).await;
    assert_eq!(home.status, 200);
    assert!(
        home.text().contains(r#"<b id="user">alice</b>"#),
        "{}",
        home.text()
    );
    let rehashed = stored_hash(&db_path, "alice");
    assert!(
        rehashed.starts_with("$argon2id$"),
        "{}",
        &rehashed[..12.min(rehashed.len())]
    );
    let again = gw.login("alice", ALICE_PASSWORD).await;
    assert_ne!(again, token);

    // Fresh sign-in: right after it the settings page opens; later the app
    // sends the browser to re-enter the password, and then it opens again.
    let settings = get(&gw.url("/settings"), &[("cookie", &c)]).await;
    assert_eq!(settings.status, 200, "{}", settings.text());
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let stale = get(&gw.url("/settings?tab=2"), &[("cookie", &c)]).await;
    assert_eq!(stale.status, 302);
    let reauth = stale.header("location").unwrap().to_owned();
    assert_eq!(reauth, "/.signoff/reauth?next=%2Fsettings%3Ftab%3D2");
    let page = get(&gw.url(&reauth), &[("cookie", &c)]).await;
    assert_eq!(page.status, 200);
    let done = support::reauth(&gw.origin, &token, ALICE_PASSWORD, "/settings?tab=2").await;
    assert_eq!(done.status, 303, "{}", done.text());
    assert_eq!(done.header("location"), Some("/settings?tab=2"));
    let token = done
        .new_cookie("signoff")
        .expect("re-entry rotates the session");
    let c = cookie(&token);
    let settings = get(&gw.url("/settings?tab=2"), &[("cookie", &c)]).await;
    assert_eq!(settings.status, 200, "{}", settings.text());
    assert!(settings.text().contains("Settings of alice"));

    // The app's logout button is signoff's logout; the cookie is dead after.
    let csrf = csrf_in(&settings.text());
    let out = post_form(
        &gw.url("/.signoff/logout"),
        &[("csrf", &csrf)],
        &[("cookie", &c), ("origin", &gw.origin)],
    )
    .await;
    assert_eq!(out.status, 303);
    let replay = get(&gw.url("/"), &[("cookie", &c)]).await;
    // Not a browser (no Accept: text/html): 401 rather than the login page.
    assert_eq!(
        replay.status,
        401,
        "a cookie from before logout signs no one in: {}",
        replay.text()
    );
    assert!(!replay.text().contains("alice"));
}

#[test]
fn the_migrated_apps_own_tests_pass_with_a_fake_identity_header() {
    let Some(()) = python_with("flask, flask_login", "pip install flask-login") else {
        return;
    };
    let out = python(&["-m", "unittest", "-v", "test_after.py"], &example_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("Ran 4 tests") && said.contains("OK"),
        "{said}"
    );
}

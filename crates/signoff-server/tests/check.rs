//! `signoff check` against real apps (docs/check.md): the classic Flask
//! login, the same with no-store, Flask-Login, a careless server-side
//! session app, and signoff in front of the Flask example, each with the
//! verdicts it must get, in Chromium where the check needs a browser; and
//! apps that misbehave towards the checker.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use support::*;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Starts a Python app that prints `listening on URL`; the process and URL.
fn start_py(script: &Path, args: &[&str], dir: &Path) -> (Proc, String) {
    let mut cmd = Command::new("python3");
    cmd.arg(script)
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let name = script.file_stem().unwrap().to_string_lossy().into_owned();
    let (proc, lines) = spawn_reading_lines(cmd, dir.join(format!("{name}.log")), 1);
    let url = lines[0]
        .split_once("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {:?}", lines[0]))
        .1
        .to_owned();
    (proc, url)
}

/// What one `signoff check` run gave.
struct Checked {
    passed: bool,
    report: serde_json::Value,
    stderr: String,
}

impl Checked {
    fn verdicts(&self) -> BTreeMap<String, String> {
        self.report["checks"]
            .as_array()
            .unwrap_or_else(|| panic!("no checks in {}; stderr: {}", self.report, self.stderr))
            .iter()
            .map(|c| {
                (
                    c["id"].as_str().unwrap().to_owned(),
                    c["verdict"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// Asserts each named check got its verdict, and that a failed check
    /// comes with evidence and a fix.
    fn expect(&self, expected: &[(&str, &str)]) {
        let got = self.verdicts();
        for (id, verdict) in expected {
            assert_eq!(
                got.get(*id).map(String::as_str),
                Some(*verdict),
                "check {id}: {}",
                serde_json::to_string_pretty(&self.report).unwrap()
            );
        }
        for c in self.report["checks"].as_array().unwrap() {
            if c["verdict"] == "fail" {
                assert!(c["fix"].as_str().is_some_and(|f| !f.is_empty()), "{c}");
                assert!(!c["evidence"].as_array().unwrap().is_empty(), "{c}");
            }
        }
        assert_eq!(
            self.passed,
            !got.values().any(|v| v == "fail"),
            "the exit status says whether a check failed"
        );
    }

    fn seen(&self, id: &str) -> String {
        self.report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .map(|c| format!("{} {}", c["seen"], c["evidence"]))
            .unwrap_or_default()
    }
}

/// `signoff check URL --json` with `password` on stdin (when `user`).
fn check(url: &str, user: Option<(&str, &str)>, args: &[&str]) -> Checked {
    let mut cmd = Command::new(signoff_bin());
    cmd.args(["check", url, "--json"]).args(args);
    if let Some((name, _)) = user {
        cmd.args(["--user", name, "--password-stdin"]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    if let Some((_, password)) = user {
        writeln!(stdin, "{password}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    Checked {
        passed: out.status.success(),
        report: serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

const PLAIN_USER: (&str, &str) = ("alice", "alice-password-1");

/// `--browser chromium` when Chromium and chromedriver are here (one
/// browser test at a time: the guard is held while it runs), else
/// `--browser none` after reporting the skip (a failure under
/// SIGNOFF_REQUIRE_SERVICES=1).
fn chromium() -> (
    Option<std::sync::MutexGuard<'static, ()>>,
    &'static [&'static str],
) {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let found = |name: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
    };
    if found("chromedriver") && found("chromium") {
        let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        (Some(guard), &["--browser", "chromium"])
    } else {
        let _: Option<()> = missing("chromium and chromedriver (for the back-button checks)");
        (None, &["--browser", "none"])
    }
}

/// What the classic Flask login gets wrong, whatever else it does.
const CLASSIC_FAILURES: &[(&str, &str)] = &[
    ("replay", "fail"),
    ("forged-logout", "fail"),
    ("open-redirect", "fail"),
    ("clear-site-data", "fail"),
    ("cookie-flags", "fail"),
    ("fixation", "pass"),
    ("other-sessions", "could-not-tell"),
];

#[tokio::test]
async fn the_classic_flask_login_fails_what_it_gets_wrong() {
    let Some(()) = python_with("flask", "pip install flask") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = repo_root().join("examples/flask-classic/app.py");
    let (_app, url) = start_py(&script, &["--port", "0"], dir.path());
    let md = dir.path().join("report.md");
    let (browser, browser_args) = chromium();
    let mut args = vec!["--idle", "1", "--markdown", md.to_str().unwrap()];
    args.extend(browser_args);
    let run = check(&format!("{url}/"), Some(PLAIN_USER), &args);
    run.expect(CLASSIC_FAILURES);
    if browser.is_some() {
        run.expect(&[("back-button", "fail"), ("server-ended-back", "not-run")]);
    }
    run.expect(&[
        ("no-store", "fail"),
        ("idle-timeout", "fail"),
        ("token-after-logout", "not-run"),
        // session.pop() empties the session, so Flask deletes the cookie.
        ("logout-cookie", "pass"),
    ]);
    assert!(!run.passed);
    assert_eq!(run.report["framework"], "Flask", "{}", run.report);
    assert!(run.stderr.contains("checks failed"), "{}", run.stderr);
    // The evidence names the forgery and the off-site redirect.
    assert!(
        run.seen("forged-logout").contains("GET /logout"),
        "{}",
        run.seen("forged-logout")
    );
    assert!(run.seen("open-redirect").contains("evil.example"));
    // At most a few hundred requests, and never the session token.
    let requests = run.report["requests"].as_u64().unwrap();
    assert!((20..=500).contains(&requests), "{requests} requests");
    let markdown = std::fs::read_to_string(&md).unwrap();
    assert!(markdown.contains("❌ **fail**") && markdown.contains("What to fix first"));
    let whole = format!("{}{markdown}", run.report);
    assert!(
        !whole.contains("eyJ"),
        "a Flask session cookie's value was printed"
    );
}

#[tokio::test]
async fn no_store_alone_fixes_only_no_store() {
    let Some(()) = python_with("flask", "pip install flask") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = repo_root().join("examples/flask-classic/app.py");
    let (_app, url) = start_py(&script, &["--port", "0", "--no-store"], dir.path());
    let (browser, browser_args) = chromium();
    let run = check(&format!("{url}/"), Some(PLAIN_USER), browser_args);
    run.expect(CLASSIC_FAILURES);
    run.expect(&[("no-store", "pass"), ("idle-timeout", "not-run")]);
    // Chromium 156 drops a no-store page from its back/forward cache when
    // the page's HttpOnly cookie changes, as Flask's sign-out deletes it:
    // Back asks the server again. (Without no-store it restores the page:
    // the test above.)
    if browser.is_some() {
        run.expect(&[("back-button", "pass")]);
        assert!(
            run.seen("back-button").contains("back/forward cache on"),
            "{}",
            run.seen("back-button")
        );
    }
}

#[tokio::test]
async fn flask_login_with_logout_user_still_lets_a_copied_cookie_in() {
    let Some(()) = python_with("flask, flask_login", "pip install flask-login") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = repo_root().join("examples/flask-login/before.py");
    let db = dir.path().join("users.db");
    let mut add = Command::new("python3")
        .arg(&script)
        .args(["--db", db.to_str().unwrap(), "adduser", "alice"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(add.stdin.take().unwrap(), "alice-old-password").unwrap();
    assert!(add.wait().unwrap().success());
    let (_app, url) = start_py(
        &script,
        &["--db", db.to_str().unwrap(), "serve", "--port", "0"],
        dir.path(),
    );
    let run = check(
        &format!("{url}/"),
        Some(("alice", "alice-old-password")),
        &["--browser", "none"],
    );
    run.expect(&[
        ("replay", "fail"),
        ("forged-logout", "fail"),
        ("open-redirect", "fail"),
        ("no-store", "fail"),
        ("fixation", "pass"),
    ]);
    assert_eq!(
        run.report["framework"], "Flask with Flask-Login",
        "{}",
        run.report
    );
}

/// The python of the Flask-Security-Too virtualenv .ci/run makes
/// (`SIGNOFF_FLASK_SECURITY_VENV`, else
/// `~/.cache/signoff-ci/flask-security-venv`), or `None` (a reported
/// skip, or a failure under SIGNOFF_REQUIRE_SERVICES=1).
fn flask_security_python() -> Option<PathBuf> {
    let venv = std::env::var_os("SIGNOFF_FLASK_SECURITY_VENV")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/signoff-ci/flask-security-venv"))
        })?;
    let python = venv.join("bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import flask_security, flask_sqlalchemy"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Some(python)
    } else {
        missing(&format!(
            "Flask-Security-Too in {} (.ci/run installs .ci/flask-security-requirements.txt there)",
            venv.display()
        ))
    }
}

#[tokio::test]
async fn flask_security_with_its_defaults_still_lets_a_copied_cookie_in() {
    let Some(python) = flask_security_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = repo_root().join("crates/signoff-server/tests/check_apps/security_app.py");
    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .args(["--port", "0"])
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let (_app, lines) = spawn_reading_lines(cmd, dir.path().join("security_app.log"), 1);
    let url = lines[0].split_once("listening on ").unwrap().1.to_owned();
    let run = check(
        &format!("{url}/"),
        Some(("alice@example.com", "alice-password-1")),
        &["--browser", "none"],
    );
    run.expect(&[
        // Flask's signed cookie again: sign-out cannot revoke a copy.
        ("replay", "fail"),
        // Its sign-out POST checks no token and no Origin.
        ("forged-logout", "fail"),
        ("no-store", "fail"),
        ("cookie-flags", "fail"),
        ("fixation", "pass"),
        // A bad `next` makes the sign-in fail: it never leaves the site.
        ("open-redirect", "pass"),
    ]);
    assert_eq!(
        run.report["framework"], "Flask with Flask-Security",
        "{}",
        run.report
    );
}

#[tokio::test]
async fn signoff_in_front_of_the_flask_example_passes_every_check() {
    let Some(()) = python_with("flask", "pip install flask") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_app, upstream) = start_py(
        &repo_root().join("examples/flask/app.py"),
        &["--port", "0"],
        dir.path(),
    );
    let gw = Gateway::start(&upstream, &["--idle-timeout", "2s", "--tokens"]);
    let (browser, browser_args) = chromium();
    let end = format!(
        "{} sessions end --user {USER} --db {}",
        signoff_bin(),
        gw.db
    );
    let token_login = gw.url("/.signoff/api/login");
    let mut args = vec![
        "--idle",
        "2",
        "--end-session-command",
        end.as_str(),
        // The refresh and logout endpoints are found next to it.
        "--token-login",
        token_login.as_str(),
    ];
    args.extend(browser_args);
    let run = check(&gw.url("/"), Some((USER, PASSWORD)), &args);
    if browser.is_some() {
        run.expect(&[("back-button", "pass"), ("server-ended-back", "pass")]);
    }
    run.expect(&[
        ("replay", "pass"),
        ("logout-cookie", "pass"),
        ("clear-site-data", "pass"),
        ("fixation", "pass"),
        ("forged-logout", "pass"),
        ("no-store", "pass"),
        ("cookie-flags", "pass"),
        ("open-redirect", "pass"),
        ("idle-timeout", "pass"),
        ("other-sessions", "pass"),
        ("token-after-logout", "pass"),
        ("refresh-reuse", "pass"),
    ]);
    assert!(
        run.seen("refresh-reuse").contains("issued in its place"),
        "{}",
        run.seen("refresh-reuse")
    );
    assert!(run.passed, "{}", run.stderr);
    assert_eq!(run.report["framework"], "signoff");
}

#[tokio::test]
async fn a_careless_server_side_session_is_caught_where_it_is_careless() {
    let Some(()) = python_with("flask", "pip install flask") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = repo_root().join("crates/signoff-server/tests/check_apps/careless.py");
    let (_app, url) = start_py(&script, &[], dir.path());
    let token_login = format!("{url}/api/login");
    let run = check(
        &format!("{url}/"),
        Some(PLAIN_USER),
        &[
            "--browser",
            "none",
            "--token-login",
            &token_login,
            "--token-refresh",
            "/api/token",
            "--token-logout",
            "/api/logout",
        ],
    );
    run.expect(&[
        // Its tokens are stateless: logout forgets nothing.
        ("token-after-logout", "fail"),
        ("refresh-reuse", "fail"),
        // The record is deleted, so a copy is refused...
        ("replay", "pass"),
        // ...but the cookie stays, an id brought by the browser is kept,
        // the token-less sign-out form can be posted from anywhere, and
        // ReturnUrl is followed by a meta refresh.
        ("logout-cookie", "fail"),
        ("fixation", "fail"),
        ("forged-logout", "fail"),
        ("open-redirect", "fail"),
        ("cookie-flags", "fail"),
    ]);
    assert!(
        run.seen("fixation").contains("planted"),
        "{}",
        run.seen("fixation")
    );
    assert!(run.seen("open-redirect").contains("ReturnUrl"));
    assert!(run.seen("forged-logout").contains("POST"));
}

#[tokio::test]
async fn a_limit_on_sign_ins_gives_could_not_tell_and_the_password_is_never_shown() {
    let Some(()) = python_with("flask", "pip install flask") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = repo_root().join("crates/signoff-server/tests/check_apps/careless.py");
    // The password travels in the login URL here, and the app starts
    // refusing sign-ins after the fourth.
    let (_app, url) = start_py(&script, &["--get-login", "--rate-limit", "4"], dir.path());
    let md = dir.path().join("report.md");
    let run = check(
        &format!("{url}/"),
        Some(PLAIN_USER),
        &["--browser", "none", "--markdown", md.to_str().unwrap()],
    );
    let got = run.verdicts();
    for id in ["forged-logout", "open-redirect"] {
        assert_eq!(got[id], "could-not-tell", "{}", run.report);
        assert!(run.seen(id).contains("429"), "{}", run.seen(id));
    }
    let everything = format!(
        "{}{}{}",
        run.report,
        run.stderr,
        std::fs::read_to_string(&md).unwrap()
    );
    assert!(everything.contains("password=…"), "{everything}");
    assert!(
        !everything.contains(PLAIN_USER.1),
        "the password was printed"
    );
    // A wrong password, also sent in the URL, is not printed either.
    let run = check(
        &format!("{url}/"),
        Some(("alice", "wrong-pass-7")),
        &["--browser", "none"],
    );
    assert!(!run.passed);
    assert!(
        !format!("{}{}", run.report, run.stderr).contains("wrong-pass-7"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn what_stops_a_run_is_said_plainly() {
    let Some(()) = python_with("flask", "pip install flask") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = repo_root().join("examples/flask-classic/app.py");
    let (_app, url) = start_py(&script, &["--port", "0"], dir.path());
    for (args, user, said) in [
        (vec![], Some(("alice", "wrong")), "did not open"),
        (
            vec!["--logout", "#nothing-here"],
            Some(PLAIN_USER),
            "matches no form or link",
        ),
        (
            vec!["--logout", "a:has(b)"],
            Some(PLAIN_USER),
            "not a CSS selector",
        ),
        (
            vec!["--protected", "/login"],
            Some(PLAIN_USER),
            "did not open",
        ),
    ] {
        let run = check(&format!("{url}/"), user, &args);
        assert!(!run.passed);
        assert!(run.stderr.contains(said), "{args:?}: {}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    }
    // Without an account, every check says what would run it.
    let run = check(&format!("{url}/"), None, &[]);
    assert!(run.passed, "{}", run.stderr);
    assert!(run.verdicts().values().all(|v| v == "not-run"));
    assert!(run.seen("replay").contains("--user"));
    // Nothing listening.
    let run = check("http://127.0.0.1:9/", Some(PLAIN_USER), &[]);
    assert!(
        !run.passed && run.stderr.contains("cannot reach"),
        "{}",
        run.stderr
    );
    let run = check("ftp://127.0.0.1/", Some(PLAIN_USER), &[]);
    assert!(
        !run.passed && run.stderr.contains("http://"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn a_hostile_app_gets_no_password_and_cannot_hold_the_checker() {
    let Some(()) = python_with("http.server", "any python3") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = repo_root().join("crates/signoff-server/tests/check_apps/hostile.py");
    // Where the hostile login form posts the password: nothing may arrive.
    let thief = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    thief.set_nonblocking(true).unwrap();
    let thief_port = thief.local_addr().unwrap().port().to_string();
    let (_app, url) = start_py(&script, &["--steal-port", &thief_port], dir.path());
    let started = std::time::Instant::now();
    for (path, args, said) in [
        ("/loop", vec![], "redirects"),
        ("/elsewhere", vec![], "another origin"),
        ("/huge", vec![], "no login form"),
        ("/silent", vec!["--timeout", "1"], "no answer in"),
    ] {
        let run = check(&format!("{url}{path}"), Some(PLAIN_USER), &args);
        assert!(!run.passed, "{path}");
        assert!(run.stderr.contains(said), "{path}: {}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    }
    assert!(started.elapsed().as_secs() < 30, "{:?}", started.elapsed());
    assert!(
        thief.accept().is_err(),
        "check connected to the origin the hostile form names"
    );
}

//! The first hour with signoff (issue 24): a set-up mistake is named where
//! it shows, with the setting that fixes it. Real `signoff serve`
//! processes, forward-auth only (no upstream needed).

mod support;

use std::process::Command;
use std::time::Duration;

use support::{add_user, get, signoff_bin, PASSWORD, USER};

/// `signoff serve ARGS` on a fresh database with `alice`: the process and
/// the first `n` lines it printed.
fn serve(dir: &tempfile::TempDir, args: &[&str], n: usize) -> (support::Proc, Vec<String>) {
    let db = format!("sqlite://{}", dir.path().join("signoff.db").display());
    add_user(&db, USER, PASSWORD);
    let mut cmd = Command::new(signoff_bin());
    cmd.args(["serve", "--db", &db, "--listen", "127.0.0.1:0"])
        .args(args)
        .env("SIGNOFF_LOG", "info")
        .env_remove("SIGNOFF_CONFIG");
    support::spawn_reading_lines(cmd, dir.path().join("serve.log"), n)
}

/// `http://127.0.0.1:PORT` from `signoff listening on http://127.0.0.1:PORT/`.
fn bound(line: &str) -> String {
    line.strip_prefix("signoff listening on http://127.0.0.1:")
        .unwrap_or_else(|| panic!("{line:?}"))
        .trim_end_matches('/')
        .parse::<u16>()
        .map(|port| format!("http://127.0.0.1:{port}"))
        .unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

#[tokio::test]
async fn the_start_up_line_names_what_is_bound_and_the_public_url_apart() {
    let dir = tempfile::tempdir().unwrap();
    let (proc, lines) = serve(&dir, &["--public-url", "https://app.example.com"], 2);
    let at = bound(&lines[0]);
    assert_eq!(lines[1], "public URL: https://app.example.com/");
    let r = get(&format!("{at}/.signoff/login"), &[]).await;
    assert_eq!(r.status, 200, "what is printed is what answers");
    let log = proc.log_text();
    let warning = log
        .lines()
        .find(|l| l.contains("the public URL is https, but signoff serves plain HTTP"))
        .unwrap_or_else(|| panic!("no warning:\n{log}"));
    assert!(warning.contains("WARN"), "{warning}");
    for needle in [
        "public_url=https://app.example.com",
        &format!("listening={at}"),
        "--trusted-proxy",
        "--tls-cert",
    ] {
        assert!(warning.contains(needle), "{needle}: {warning}");
    }
    // The store it opened, by its full path.
    let db = dir.path().join("signoff.db").canonicalize().unwrap();
    assert!(
        log.lines().any(|l| l.contains("session store ready")
            && l.contains(&format!("db=sqlite://{}", db.display()))),
        "{log}"
    );
    drop(proc);

    // A TLS proxy in front, named: no warning.
    let dir = tempfile::tempdir().unwrap();
    let (proc, lines) = serve(
        &dir,
        &[
            "--public-url",
            "https://app.example.com",
            "--trusted-proxy",
            "127.0.0.1",
        ],
        2,
    );
    bound(&lines[0]);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !proc.log_text().contains("serves plain HTTP here"),
        "{}",
        proc.log_text()
    );
    drop(proc);

    // Forward-auth behind a proxy on another port: the proxy's port is the
    // public URL's, not what signoff listens on.
    let dir = tempfile::tempdir().unwrap();
    let (proc, lines) = serve(&dir, &["--public-url", "http://127.0.0.1:8000"], 2);
    let at = bound(&lines[0]);
    assert_ne!(at, "http://127.0.0.1:8000");
    assert_eq!(lines[1], "public URL: http://127.0.0.1:8000/");
    assert_eq!(get(&format!("{at}/.signoff/login"), &[]).await.status, 200);
    drop(proc);

    // Without --public-url: one line, the bound address.
    let dir = tempfile::tempdir().unwrap();
    let (proc, lines) = serve(&dir, &[], 1);
    let at = bound(&lines[0]);
    assert_eq!(get(&format!("{at}/.signoff/login"), &[]).await.status, 200);
    drop(proc);
}

//! What README.md's "Installing" hands an operator: `examples/signoff.toml`
//! passes `signoff serve --check`, `examples/systemd/signoff.service` runs
//! exactly that command line and passes `systemd-analyze verify` and
//! `systemd-analyze security`, and `--check` itself opens nothing and says
//! what is wrong.

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::signoff_bin;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `signoff ARGS` with no `SIGNOFF_*` variable of the caller's.
fn signoff(args: &[&str]) -> Output {
    let mut cmd = Command::new(signoff_bin());
    cmd.args(args).current_dir(repo_root());
    for (key, _) in std::env::vars() {
        if key.starts_with("SIGNOFF_") {
            cmd.env_remove(key);
        }
    }
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The value of `key=` in the unit (the last one, as systemd reads it).
fn unit_value<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .next_back()
}

#[test]
fn example_config_passes_serve_check() {
    let out = signoff(&["serve", "--config", "examples/signoff.toml", "--check"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    for expected in [
        "listen        127.0.0.1:8080 (plain HTTP)",
        "public URL    https://app.example.com (session cookie Secure)",
        "upstream      http://127.0.0.1:5000/",
        "store         sqlite:///var/lib/signoff/signoff.db",
        "public paths  /static/, /healthz",
        "remember      off",
        "the settings are good",
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in:\n{stdout}");
    }
}

#[test]
fn check_opens_no_port_and_no_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("signoff.db");
    // A port that is taken: serve would fail to bind it, --check does not try.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let db_url = format!("sqlite://{}", db.display());
    let out = signoff(&[
        "serve",
        "--check",
        "--listen",
        &listen,
        "--db",
        &db_url,
        "--upstream",
        "http://127.0.0.1:9",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!db.exists(), "--check created the database");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // The same settings really serve only when the port is free.
    let out = signoff(&["serve", "--listen", &listen, "--db", &db_url]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("already in use"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_shows_remember_device_and_refuses_a_nonsense_one() {
    let out = signoff(&[
        "serve",
        "--config",
        "examples/signoff.toml",
        "--check",
        "--remember-device",
        "30d",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("remember      30days, idle 7days"),
        "{stdout}"
    );
    let out = signoff(&[
        "serve",
        "--config",
        "examples/signoff.toml",
        "--check",
        "--remember-device",
        "1h",
    ]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("--remember-device 1h: must be longer than --absolute-timeout (12h)"),
        "{stderr}"
    );
}

#[test]
fn check_refuses_bad_settings_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("signoff.toml");
    std::fs::write(
        &file,
        "upstream = \"http://127.0.0.1:5000\"\nidle_timout = \"5m\"\n",
    )
    .unwrap();
    let config = file.to_str().unwrap();
    let cert = dir.path().join("missing.pem");
    let cert = cert.to_str().unwrap();
    for (args, needle) in [
        (vec!["--config", config], "unknown field `idle_timout`"),
        (
            vec!["--db", "mysql://db.example.com/signoff"],
            "expected sqlite://PATH",
        ),
        (
            vec!["--db", "redis://127.0.0.1?prefix=a&prefix=b"],
            "prefix is given twice",
        ),
        (
            vec!["--tls-cert", cert, "--tls-key", cert],
            "cannot read the certificate",
        ),
        (
            vec!["--public-url", "http://app.example.com"],
            "--allow-insecure-http",
        ),
    ] {
        let mut all = vec!["serve", "--check"];
        all.extend(&args);
        let out = signoff(&all);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: no {needle:?} in {stderr}"
        );
        assert!(!text(&out.stdout).contains("good"), "{args:?}");
    }
}

/// `--check` finds what opening the SQLite file would refuse, without
/// opening or creating it: files other users can read, a directory they
/// can write (errors unless allowed), a directory that does not exist yet
/// (a warning: systemd's StateDirectory= may make it).
#[test]
fn check_finds_a_database_open_to_others() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mode = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    mode(dir.path(), 0o700);
    let db = dir.path().join("signoff.db");
    std::fs::write(&db, b"").unwrap();
    let url = format!("sqlite://{}", db.display());
    let check = |extra: &[&str]| {
        let mut args = vec!["serve", "--check", "--db", &url];
        args.extend(extra);
        signoff(&args)
    };

    mode(&db, 0o600);
    let out = check(&[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stdout).contains("warning"),
        "{}",
        text(&out.stdout)
    );

    mode(&db, 0o644);
    let out = check(&[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("other users can read") && stderr.contains("chmod 600"),
        "{stderr}"
    );
    let out = check(&["--allow-readable-db"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("warning") && stdout.contains("allowed by --allow-readable-db"),
        "{stdout}"
    );
    mode(&db, 0o600);

    mode(dir.path(), 0o777);
    let out = check(&[]);
    mode(dir.path(), 0o700);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("chmod go-w"),
        "{}",
        text(&out.stderr)
    );

    let missing = dir.path().join("not-yet/signoff.db");
    let url = format!("sqlite://{}", missing.display());
    let out = signoff(&["serve", "--check", "--db", &url]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("does not exist") && stdout.contains("mkdir -p"),
        "{stdout}"
    );
    assert!(
        !missing.parent().unwrap().exists(),
        "--check made the directory"
    );
}

/// The unit's command line is the one checked, on the file it names (the
/// example, installed as /etc/signoff/signoff.toml), and the database lies
/// in the unit's state directory.
#[test]
fn systemd_unit_runs_the_checked_command() {
    let root = repo_root();
    let unit = std::fs::read_to_string(root.join("examples/systemd/signoff.service")).unwrap();
    let exec = unit_value(&unit, "ExecStart").expect("ExecStart=");
    let argv: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(
        argv,
        [
            "/usr/local/bin/signoff",
            "serve",
            "--config",
            "/etc/signoff/signoff.toml"
        ]
    );
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        readme.contains("examples/signoff.toml /etc/signoff/signoff.toml"),
        "README.md's steps install the example as the file the unit names"
    );
    let mut args: Vec<&str> = argv[1..].to_vec();
    args[2] = "examples/signoff.toml";
    args.push("--check");
    let out = signoff(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let state = unit_value(&unit, "StateDirectory").expect("StateDirectory=");
    assert!(
        text(&out.stdout).contains(&format!("store         sqlite:///var/lib/{state}/")),
        "the database is outside StateDirectory={state}:\n{}",
        text(&out.stdout)
    );
    for hardening in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "UMask=0077",
    ] {
        assert!(unit.lines().any(|l| l == hardening), "no {hardening}");
    }
}

/// `systemd-analyze verify` finds nothing to say (it exits 0 on unknown
/// keys, so any output fails), and `security` rates the unit's exposure at
/// most 2.0 ("OK"; 1.2 today). The executable must exist for `verify`, so
/// a copy of the unit runs the suite's binary.
#[test]
fn systemd_unit_passes_systemd_analyze() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        support::missing::<()>("systemd-analyze (Debian's systemd)");
        return;
    }
    let unit = std::fs::read_to_string(repo_root().join("examples/systemd/signoff.service"))
        .unwrap()
        .replace(
            "ExecStart=/usr/local/bin/signoff ",
            &format!("ExecStart={} ", signoff_bin()),
        );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signoff.service");
    std::fs::write(&path, unit).unwrap();
    let path = path.to_str().unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", path])
        .output()
        .unwrap();
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify:\n{said}"
    );
    let out = Command::new("systemd-analyze")
        .args([
            "security",
            "--offline=yes",
            "--threshold=20",
            "--no-pager",
            path,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "systemd-analyze security rates the unit above 2.0:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

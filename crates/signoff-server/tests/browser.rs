//! The back button after logout, in real browsers with the back/forward
//! cache on: `signoff demo` (gateway + built-in app) driven over WebDriver
//! in Chromium, Firefox and WebKit, over plain HTTP on 127.0.0.1 and over
//! HTTPS with a self-signed certificate. One scenario list; each engine is
//! one driver in `support::browser`.
//!
//! Screenshots of what each scenario ends on go to
//! `target/browser-artifacts/`; every test's outcome goes into
//! `target/browser-matrix.md`, and into the tracked `docs/browser-matrix.md`
//! with `SIGNOFF_WRITE_BROWSER_MATRIX=1` (see `matrix`).

#[path = "browser/matrix.rs"]
mod matrix;
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use matrix::Outcome;
use support::browser::{Engine, Result};
use support::scenarios::{self, Site};
use support::{signoff_bin, spawn_reading_lines, Proc};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Http,
    Https,
}

/// A running `signoff demo`.
struct Demo {
    _proc: Proc,
    origin: String,
    password: String,
    db: String,
    _dir: tempfile::TempDir,
}

impl Demo {
    fn start(transport: Transport) -> Demo {
        Demo::start_with(transport, &[])
    }

    fn start_with(transport: Transport, extra: &[&str]) -> Demo {
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}", dir.path().join("demo.db").display());
        let mut cmd = Command::new(signoff_bin());
        cmd.args(["demo", "--listen", "127.0.0.1:0", "--db", &db])
            .args(extra)
            .env("SIGNOFF_LOG", "info");
        if transport == Transport::Https {
            let cert = rcgen::generate_simple_self_signed(vec![
                "127.0.0.1".to_owned(),
                "localhost".to_owned(),
            ])
            .unwrap();
            let cert_path = dir.path().join("cert.pem");
            let key_path = dir.path().join("key.pem");
            std::fs::write(&cert_path, cert.cert.pem()).unwrap();
            std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
            cmd.arg("--tls-cert")
                .arg(&cert_path)
                .arg("--tls-key")
                .arg(&key_path);
        }
        let (proc, lines) = spawn_reading_lines(cmd, dir.path().join("demo.log"), 3);
        let (origin, password) = support::demo_banner(&lines);
        let scheme = if transport == Transport::Https {
            "https://"
        } else {
            "http://"
        };
        assert!(origin.starts_with(scheme), "{origin}");
        Demo {
            _proc: proc,
            origin,
            password,
            db,
            _dir: dir,
        }
    }
}

impl Demo {
    fn site(&self, transport: Transport) -> Site {
        Site {
            origin: self.origin.clone(),
            user: "demo".to_owned(),
            password: self.password.clone(),
            db: self.db.clone(),
            label: format!("{transport:?}"),
        }
    }
}

/// The idle timeout for scenario 3: short, but far above the few
/// milliseconds between the requests of a sign-in.
const IDLE: Duration = Duration::from_secs(4);

#[derive(Clone, Copy, Debug)]
enum Scenario {
    LogoutThenBack,
    ServerSideEndThenBack,
    SignedOutFromAnotherDevice,
    IdleTimeoutThenBack,
    BfcacheIsOn,
}

impl Scenario {
    /// Its row in the matrix.
    fn id(self) -> &'static str {
        match self {
            Scenario::LogoutThenBack => "logout_then_back",
            Scenario::ServerSideEndThenBack => "server_side_end_then_back",
            Scenario::SignedOutFromAnotherDevice => "signed_out_from_another_device",
            Scenario::IdleTimeoutThenBack => "idle_timeout_then_back",
            Scenario::BfcacheIsOn => "bfcache_is_on",
        }
    }
}

/// Runs one scenario against a fresh `signoff demo` and records the outcome
/// in the matrix, also when the scenario panics.
async fn run(scenario: Scenario, engine: Engine, transport: Transport) -> Result<()> {
    let mut pending = Pending {
        scenario,
        engine,
        transport,
        started: Instant::now(),
        findings: Vec::new(),
        done: false,
    };
    let (result, findings) = scenarios::with_findings(async {
        let demo = match scenario {
            Scenario::IdleTimeoutThenBack => Demo::start_with(
                transport,
                &["--idle-timeout", &format!("{}s", IDLE.as_secs())],
            ),
            _ => Demo::start(transport),
        };
        let site = demo.site(transport);
        match scenario {
            Scenario::LogoutThenBack => scenarios::logout_then_back(engine, &site).await,
            Scenario::ServerSideEndThenBack => {
                scenarios::server_side_end_then_back(engine, &site).await
            }
            Scenario::SignedOutFromAnotherDevice => {
                scenarios::server_side_end_then_back_by(
                    engine,
                    &site,
                    scenarios::ServerEnd::OtherDevice,
                )
                .await
            }
            Scenario::IdleTimeoutThenBack => {
                scenarios::idle_timeout_then_back(engine, &site, IDLE).await
            }
            Scenario::BfcacheIsOn => scenarios::bfcache_is_on(engine, &site).await,
        }
    })
    .await;
    pending.findings = findings;
    let outcome = match (&result, engine.availability()) {
        // `Browser::open` said "skipped" (it panics instead when required).
        (Ok(()), Err(why)) => Outcome::Skipped(why),
        (Ok(()), Ok(())) => Outcome::Passed,
        (Err(e), _) => Outcome::Failed(e.to_string()),
    };
    pending.finish(&outcome);
    result
}

/// A test still running; dropped unfinished (a panic), it records "failed".
struct Pending {
    scenario: Scenario,
    engine: Engine,
    transport: Transport,
    started: Instant,
    findings: Vec<String>,
    done: bool,
}

impl Pending {
    fn finish(&mut self, outcome: &Outcome) {
        self.done = true;
        matrix::record(
            self.scenario.id(),
            self.engine,
            self.transport,
            outcome,
            &self.findings,
            self.started.elapsed(),
        );
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            self.finish(&Outcome::Failed(
                "panicked (see the test output)".to_owned(),
            ));
        }
    }
}

async fn logout_then_back_http(e: Engine) -> Result<()> {
    run(Scenario::LogoutThenBack, e, Transport::Http).await
}
async fn logout_then_back_https(e: Engine) -> Result<()> {
    run(Scenario::LogoutThenBack, e, Transport::Https).await
}
async fn server_side_end_then_back_http(e: Engine) -> Result<()> {
    run(Scenario::ServerSideEndThenBack, e, Transport::Http).await
}
async fn server_side_end_then_back_https(e: Engine) -> Result<()> {
    run(Scenario::ServerSideEndThenBack, e, Transport::Https).await
}
/// The session is ended by the same user on another device, from the
/// sessions page ("Sign out everywhere else"), while this browser has a
/// private page in its history. Plain HTTP only: the other device is the
/// tests' HTTP client, which has no TLS.
async fn signed_out_from_another_device_http(e: Engine) -> Result<()> {
    run(Scenario::SignedOutFromAnotherDevice, e, Transport::Http).await
}
async fn idle_timeout_then_back_http(e: Engine) -> Result<()> {
    run(Scenario::IdleTimeoutThenBack, e, Transport::Http).await
}
async fn idle_timeout_then_back_https(e: Engine) -> Result<()> {
    run(Scenario::IdleTimeoutThenBack, e, Transport::Https).await
}
async fn bfcache_is_on_http(e: Engine) -> Result<()> {
    run(Scenario::BfcacheIsOn, e, Transport::Http).await
}
async fn bfcache_is_on_https(e: Engine) -> Result<()> {
    run(Scenario::BfcacheIsOn, e, Transport::Https).await
}

engine_tests!(
    every engine:
    logout_then_back_http,
    logout_then_back_https,
    server_side_end_then_back_http,
    server_side_end_then_back_https,
    signed_out_from_another_device_http,
    idle_timeout_then_back_http,
    idle_timeout_then_back_https,
    bfcache_is_on_http,
    bfcache_is_on_https,
);

//! The back button after logout, in a real browser with the back/forward
//! cache on: `signoff demo` (gateway + built-in app) driven over WebDriver,
//! over plain HTTP on 127.0.0.1 and over HTTPS with a self-signed
//! certificate. One scenario list; each engine is one more driver in
//! `support::browser` (Chromium today).
//!
//! Screenshots of what each scenario ends on go to
//! `target/browser-artifacts/`.

mod support;

use std::process::Command;

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
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}", dir.path().join("demo.db").display());
        let mut cmd = Command::new(signoff_bin());
        cmd.args(["demo", "--listen", "127.0.0.1:0", "--db", &db])
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
        let origin = lines[0]
            .strip_prefix("signoff demo is running at ")
            .unwrap_or_else(|| panic!("unexpected {lines:?}"))
            .trim_end_matches('/')
            .to_owned();
        let password = lines[2]
            .trim()
            .strip_prefix("password:")
            .unwrap_or_else(|| panic!("unexpected {lines:?}"))
            .trim()
            .to_owned();
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

async fn logout_then_back(engine: Engine, transport: Transport) -> Result<()> {
    let demo = Demo::start(transport);
    scenarios::logout_then_back(engine, &demo.site(transport)).await
}

async fn server_side_end_then_back(engine: Engine, transport: Transport) -> Result<()> {
    let demo = Demo::start(transport);
    scenarios::server_side_end_then_back(engine, &demo.site(transport)).await
}

/// The session is ended by the same user on another device, from the
/// sessions page ("Sign out everywhere else"), while this browser has a
/// private page in its history.
async fn signed_out_from_another_device_http(engine: Engine) -> Result<()> {
    let demo = Demo::start(Transport::Http);
    scenarios::server_side_end_then_back_by(
        engine,
        &demo.site(Transport::Http),
        scenarios::ServerEnd::OtherDevice,
    )
    .await
}

async fn bfcache_is_on(engine: Engine, transport: Transport) -> Result<()> {
    let demo = Demo::start(transport);
    scenarios::bfcache_is_on(engine, &demo.site(transport)).await
}

async fn logout_then_back_http(e: Engine) -> Result<()> {
    logout_then_back(e, Transport::Http).await
}
async fn logout_then_back_https(e: Engine) -> Result<()> {
    logout_then_back(e, Transport::Https).await
}
async fn server_side_end_then_back_http(e: Engine) -> Result<()> {
    server_side_end_then_back(e, Transport::Http).await
}
async fn server_side_end_then_back_https(e: Engine) -> Result<()> {
    server_side_end_then_back(e, Transport::Https).await
}
async fn bfcache_is_on_http(e: Engine) -> Result<()> {
    bfcache_is_on(e, Transport::Http).await
}
async fn bfcache_is_on_https(e: Engine) -> Result<()> {
    bfcache_is_on(e, Transport::Https).await
}

engine_tests!(
    logout_then_back_http,
    logout_then_back_https,
    server_side_end_then_back_http,
    server_side_end_then_back_https,
    signed_out_from_another_device_http,
    bfcache_is_on_http,
    bfcache_is_on_https,
);

//! Real-browser harness: drives a real browser through its W3C WebDriver
//! server: chromedriver for Chromium, geckodriver for Firefox, WebKitWebDriver
//! for WebKitGTK's MiniBrowser (on a private Xvfb display). Each engine is one
//! [`Engine`] variant; the scenarios are the same for all.
//!
//! Every [`Browser`] gets its own driver process on a free port and its own
//! empty profile directory, so tests are independent. Browsers are expensive
//! on a 2-core machine, so by default only one test at a time holds browsers
//! (one, or two with [`Browser::open_another`]), whichever test process of the
//! suite it runs in (see [`SLOTS_ENV`] and [`Slot`]): `cargo test` runs one
//! test binary at a time, but `cargo nextest` (`.ci/run`) runs each test in a
//! process of its own, several at once.
//!
//! Availability: when the driver or the browser binary is missing,
//! [`Browser::open`] returns `None` after writing `skipped: …` to the real
//! stderr (not the captured one, so it shows in `cargo test` output), unless
//! [`REQUIRE_ENV`]`=1`, in which case it panics. A test therefore starts with
//! `let Some(browser) = Browser::open(engine).await else { return Ok(()) };`.
//!
//! Pages that want their `pageshow` observed include [`PAGESHOW_RECORDER`].
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// Set to `1` to turn "browser missing, skipped" into a test failure (CI).
pub const REQUIRE_ENV: &str = "SIGNOFF_REQUIRE_SERVICES";
/// How many tests may hold browsers at once (default 1).
pub const SLOTS_ENV: &str = "SIGNOFF_BROWSER_SLOTS";
/// How long starting a browser session may take.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(45);
/// Default for every wait in this module.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Run on a page (`Browser::exec`): records its Content-Security-Policy
/// violations in `window.__csp`, to say why a form or a redirect went
/// nowhere ([`Browser::csp_violations`]).
pub const CSP_RECORDER: &str = "window.__csp = []; \
     document.addEventListener('securitypolicyviolation', function (e) { \
     window.__csp.push(e.violatedDirective + ' blocked ' + e.blockedURI); });";

/// Include this in a page (anywhere, before it finishes loading) to let
/// [`Browser::last_pageshow`] see its `pageshow` events. It only adds a
/// `pageshow` listener, which does not make a page ineligible for the
/// back/forward cache (an `unload` listener would).
pub const PAGESHOW_RECORDER: &str = r#"<script>
window.__pageshowRecorder = true;
window.addEventListener("pageshow", function (e) {
  var prev = window.__pageshow;
  window.__pageshow = { count: (prev ? prev.count : 0) + 1, persisted: e.persisted, at: Date.now() };
});
</script>"#;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A harness error: one message with the step that failed. Its `Debug` is the
/// message, so a test returning `Result<(), Error>` fails readably.
pub struct Error(String);

impl Error {
    pub fn new(msg: impl Into<String>) -> Self {
        Error(msg.into())
    }
}
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Error {}

/// Every WebDriver command gets a deadline: a browser that stops answering
/// fails the test instead of hanging it.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(40);

trait Within<T>: Future<Output = std::result::Result<T, fantoccini::error::CmdError>> + Sized {
    async fn within(self, what: impl fmt::Display) -> Result<T> {
        match tokio::time::timeout(COMMAND_TIMEOUT, self).await {
            Ok(r) => r.map_err(|e| Error(format!("{what}: {e}"))),
            Err(_) => Err(Error(format!(
                "{what}: no answer after {COMMAND_TIMEOUT:?}"
            ))),
        }
    }
}
impl<T, F> Within<T> for F where
    F: Future<Output = std::result::Result<T, fantoccini::error::CmdError>>
{
}

trait Context<T> {
    fn context(self, what: impl fmt::Display) -> Result<T>;
}
impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error(format!("{what}: {e}")))
    }
}

/// A browser engine and its WebDriver server. Adding one means: a variant,
/// its binaries, its driver command line and its capabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Engine {
    /// Debian's Chromium through Debian's chromedriver.
    Chromium,
    /// Debian's Firefox ESR through geckodriver (`cargo install geckodriver`).
    Firefox,
    /// WebKitGTK's MiniBrowser through Debian's WebKitWebDriver, on an Xvfb
    /// display of its own (MiniBrowser's headless mode hangs).
    WebKit,
}

impl Engine {
    /// Every engine the suite runs against.
    pub const ALL: &'static [Engine] = &[Engine::Chromium, Engine::Firefox, Engine::WebKit];

    pub fn name(self) -> &'static str {
        match self {
            Engine::Chromium => "chromium",
            Engine::Firefox => "firefox",
            Engine::WebKit => "webkit",
        }
    }

    /// For people: "Chromium", "Firefox", "WebKit".
    pub fn title(self) -> &'static str {
        match self {
            Engine::Chromium => "Chromium",
            Engine::Firefox => "Firefox",
            Engine::WebKit => "WebKit",
        }
    }

    /// The WebDriver server binary (`SIGNOFF_CHROMEDRIVER`,
    /// `SIGNOFF_GECKODRIVER`, `SIGNOFF_WEBKITWEBDRIVER` override).
    pub fn driver_binary(self) -> PathBuf {
        match self {
            Engine::Chromium => env_path("SIGNOFF_CHROMEDRIVER", "/usr/bin/chromedriver"),
            Engine::Firefox => std::env::var_os("SIGNOFF_GECKODRIVER")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(geckodriver),
            Engine::WebKit => env_path("SIGNOFF_WEBKITWEBDRIVER", "/usr/bin/WebKitWebDriver"),
        }
    }

    /// The browser binary (`SIGNOFF_CHROMIUM`, `SIGNOFF_FIREFOX`,
    /// `SIGNOFF_MINIBROWSER` override).
    pub fn browser_binary(self) -> PathBuf {
        match self {
            Engine::Chromium => env_path("SIGNOFF_CHROMIUM", "/usr/bin/chromium"),
            Engine::Firefox => env_path("SIGNOFF_FIREFOX", "/usr/bin/firefox-esr"),
            Engine::WebKit => std::env::var_os("SIGNOFF_MINIBROWSER")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(minibrowser),
        }
    }

    /// Everything this engine needs on disk.
    fn binaries(self) -> Vec<PathBuf> {
        let mut all = vec![self.driver_binary(), self.browser_binary()];
        if self == Engine::WebKit {
            all.push(xvfb_binary());
        }
        all
    }

    /// `Err(why)` when this engine cannot run on this machine.
    pub fn availability(self) -> std::result::Result<(), String> {
        let missing: Vec<String> = self
            .binaries()
            .into_iter()
            .filter(|p| !p.is_file())
            .map(|p| p.display().to_string())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let install = match self {
            Engine::Chromium => "apt-get install -y chromium chromium-driver",
            Engine::Firefox => "apt-get install -y firefox-esr; cargo install geckodriver --locked",
            Engine::WebKit => "apt-get install -y webkit2gtk-driver xvfb",
        };
        Err(format!(
            "{} not found (Debian: {install})",
            missing.join(" and ")
        ))
    }

    fn driver_command(self, port: u16, log: &Path, display: Option<&str>) -> Result<Command> {
        let mut cmd = Command::new(self.driver_binary());
        match self {
            Engine::Chromium => {
                cmd.arg(format!("--port={port}"))
                    .arg(format!("--log-path={}", log.display()));
                cmd.stderr(Stdio::null());
            }
            Engine::Firefox => {
                // Anything it creates goes under the browser's temp dir, so
                // it goes with it. Marionette's port is system-allocated by
                // default; BiDi's is not (9222), so parallel drivers need 0.
                let root = log.parent().unwrap_or(Path::new("."));
                cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
                    .args(["--websocket-port", "0"])
                    .arg("--profile-root")
                    .arg(root)
                    .args(["--log", "info"]);
                cmd.stderr(log_file(log)?);
            }
            Engine::WebKit => {
                cmd.arg(format!("--port={port}"));
                cmd.env("DISPLAY", display.unwrap_or(":0"));
                cmd.stderr(log_file(log)?);
            }
        }
        Ok(cmd)
    }

    /// `extra_args` go on the browser's command line after the harness's own.
    fn capabilities(self, profile: &Path, extra_args: &[String]) -> Capabilities {
        let mut caps = match self {
            Engine::Chromium => json!({
                "browserName": "chrome",
                // Self-signed HTTPS in tests. chromedriver turns this into
                // --ignore-certificate-errors.
                "acceptInsecureCerts": true,
                "pageLoadStrategy": "normal",
                "timeouts": { "pageLoad": 30_000, "script": 10_000, "implicit": 0 },
                "goog:chromeOptions": {
                    "binary": self.browser_binary(),
                    "args": [
                        "--headless=new",
                        "--no-sandbox",
                        "--disable-gpu",
                        "--disable-quic",
                        "--no-first-run",
                        // Without these Chromium calls out to Google hosts.
                        "--disable-background-networking",
                        "--disable-component-update",
                        "--disable-sync",
                        "--window-size=1280,900",
                        format!("--user-data-dir={}", profile.display()),
                    ],
                    // chromedriver 156 adds no switch that touches the
                    // back/forward cache (checked in `check_bfcache_allowed`);
                    // if a future one does, list it here.
                    "excludeSwitches": [],
                },
            }),
            Engine::Firefox => json!({
                "browserName": "firefox",
                "acceptInsecureCerts": true,
                "pageLoadStrategy": "normal",
                "timeouts": { "pageLoad": 30_000, "script": 10_000, "implicit": 0 },
                "moz:firefoxOptions": {
                    "binary": self.browser_binary(),
                    "args": [
                        "-headless", "-width", "1280", "-height", "900",
                        "-profile", profile,
                    ],
                    "prefs": {
                        // The back/forward cache: on, with room for the few
                        // pages a scenario visits (the default depends on RAM).
                        "browser.sessionhistory.max_total_viewers": 8,
                        // http://127.0.0.1 as asked, never upgraded.
                        "dom.security.https_first": false,
                        "dom.security.https_first_pbm": false,
                        "dom.security.https_only_mode": false,
                        // No calls to outside hosts (refused here, and slow).
                        "network.captive-portal-service.enabled": false,
                        "network.connectivity-service.enabled": false,
                        "network.dns.disablePrefetch": true,
                        "network.prefetch-next": false,
                        "browser.safebrowsing.downloads.remote.enabled": false,
                        "browser.region.network.url": "",
                        "browser.region.update.enabled": false,
                        "app.update.disabledForTesting": true,
                        "datareporting.policy.dataSubmissionEnabled": false,
                        "toolkit.telemetry.enabled": false,
                        "extensions.update.enabled": false,
                        "media.gmp-manager.url": "",
                    },
                },
            }),
            Engine::WebKit => json!({
                // No browserName: WebKitWebDriver matches it against the
                // name the binary reports, which is not "MiniBrowser".
                "acceptInsecureCerts": true,
                "pageLoadStrategy": "normal",
                "timeouts": { "pageLoad": 30_000, "script": 10_000, "implicit": 0 },
                "webkitgtk:browserOptions": {
                    "binary": self.browser_binary(),
                    // Without --automation MiniBrowser never answers the
                    // driver (session creation hangs). The page cache
                    // (WebKit's back/forward cache) is on by default; say
                    // so, so a changed default cannot turn it off.
                    "args": ["--automation", "--enable-page-cache=true"],
                },
            }),
        };
        let args = match self {
            Engine::Chromium => "/goog:chromeOptions/args",
            Engine::Firefox => "/moz:firefoxOptions/args",
            Engine::WebKit => "/webkitgtk:browserOptions/args",
        };
        if let Some(args) = caps.pointer_mut(args).and_then(Value::as_array_mut) {
            args.extend(extra_args.iter().map(|a| json!(a)));
        }
        match caps {
            Value::Object(map) => map,
            _ => unreachable!("capabilities are an object"),
        }
    }

    /// After the session starts: make sure nothing turned the back/forward
    /// cache off, since the whole point of these tests is to run with it on.
    fn check_bfcache_allowed(self, browser_pid: Option<u64>) -> Result<Vec<String>> {
        let Some(pid) = browser_pid else {
            return Ok(Vec::new());
        };
        let raw = match std::fs::read(format!("/proc/{pid}/cmdline")) {
            Ok(raw) => raw,
            Err(_) => return Ok(Vec::new()), // not Linux, or not visible
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let offending: Vec<&String> = args
            .iter()
            .filter(|a| {
                a.starts_with("--disable-back-forward-cache")
                    || (a.starts_with("--disable-features=") && a.contains("BackForwardCache"))
            })
            .collect();
        if offending.is_empty() {
            Ok(args)
        } else {
            Err(Error(format!(
                "{}: the browser was started with the back/forward cache off ({offending:?}); \
                 add the switch to excludeSwitches",
                self.name()
            )))
        }
    }
}

fn env_path(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default))
}

/// `geckodriver` on `PATH`, else where `cargo install` puts it.
fn geckodriver() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("geckodriver"))
        .find(|p| p.is_file());
    on_path.unwrap_or_else(|| {
        let cargo_home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
            .unwrap_or_else(|| PathBuf::from("/root/.cargo"));
        cargo_home.join("bin/geckodriver")
    })
}

/// WebKitGTK's MiniBrowser: `/usr/lib/<triplet>/webkit2gtk-4.*/MiniBrowser`
/// (Debian's libwebkit2gtk-4.1-0 or -4.0-37), newest API first.
fn minibrowser() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|lib| {
            std::fs::read_dir(lib.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .filter(|d| d.file_name().to_string_lossy().starts_with("webkit2gtk-4."))
        .map(|d| d.path().join("MiniBrowser"))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found
        .pop()
        .unwrap_or_else(|| PathBuf::from("/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser"))
}

fn xvfb_binary() -> PathBuf {
    env_path("SIGNOFF_XVFB", "/usr/bin/Xvfb")
}

fn log_file(path: &Path) -> Result<std::fs::File> {
    std::fs::File::create(path).context(format!("create {}", path.display()))
}

fn services_required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1")
}

/// Writes to the process's stderr directly: libtest captures `eprintln!` of
/// passing tests, which would hide a skip.
pub fn report_skip(what: &str, why: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("?");
    let _ = writeln!(std::io::stderr(), "skipped: {test}: {what}: {why}");
}

/// The right to hold browsers: an exclusive `flock` on one of [`SLOTS_ENV`]
/// files in the build's temporary directory (`target/tmp`), so the limit
/// holds across the suite's test processes. The kernel drops the lock when
/// the file closes, also when the process is killed, so a crashed test never
/// keeps a slot.
struct Slot {
    _file: std::fs::File,
}

impl Slot {
    async fn acquire() -> Slot {
        let n: usize = std::env::var(SLOTS_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|n| *n > 0)
            .unwrap_or(1);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-slots");
        let waiting = Instant::now();
        let mut told = false;
        loop {
            for i in 0..n {
                if let Some(slot) = Self::try_take(&dir, i) {
                    return slot;
                }
            }
            if !told && waiting.elapsed() > Duration::from_secs(120) {
                // Not a failure: a long browser test may hold the slot this
                // long. Said once (on the real stderr, like a skip), so a test
                // stuck behind a hung one shows why.
                let _ = writeln!(
                    std::io::stderr(),
                    "waiting: {}: no free browser slot in {} after 120 s",
                    std::thread::current().name().unwrap_or("?"),
                    dir.display()
                );
                told = true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn try_take(dir: &Path, i: usize) -> Option<Slot> {
        let path = dir.join(format!("{i}.lock"));
        match lock_file(&path, false) {
            Ok(file) => Some(Slot { _file: file }),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
            Err(e) => panic!("lock {}: {e}", path.display()),
        }
    }
}

/// Opens `path` (made, with its directory, if missing) and takes an
/// exclusive `flock` on it, waiting for it when `wait`; otherwise an error
/// of kind `WouldBlock` says another holds it. The kernel lets go when the
/// file closes, also if the process dies. For the browser slots and the
/// browser matrix's results.
pub fn lock_file(path: &Path, wait: bool) -> std::io::Result<std::fs::File> {
    use rustix::fs::{flock, FlockOperation};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    let operation = if wait {
        FlockOperation::LockExclusive
    } else {
        FlockOperation::NonBlockingLockExclusive
    };
    flock(&file, operation)?;
    Ok(file)
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("bind a free port")?;
    Ok(l.local_addr().context("free port address")?.port())
}

/// A private X display (Xvfb) for engines that need one. Xvfb picks a free
/// display number itself (`-displayfd`), so parallel tests cannot collide.
struct Display {
    child: Child,
    name: String,
}

impl Display {
    async fn start(log: &Path) -> Result<Display> {
        let mut cmd = Command::new(xvfb_binary());
        cmd.args([
            "-displayfd",
            "1",
            "-screen",
            "0",
            "1280x900x24",
            "-nolisten",
            "tcp",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file(log)?);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd
            .spawn()
            .context(format!("spawn {}", xvfb_binary().display()))?;
        let mut stdout = child.stdout.take().expect("piped stdout");
        let mut display = Display {
            child,
            name: String::new(),
        };
        // Xvfb writes the display number once it accepts clients.
        let read = tokio::task::spawn_blocking(move || {
            let mut line = Vec::new();
            let mut byte = [0u8; 1];
            while stdout.read(&mut byte).map(|n| n == 1).unwrap_or(false) && byte[0] != b'\n' {
                line.push(byte[0]);
            }
            String::from_utf8_lossy(&line).trim().to_owned()
        });
        let number = match tokio::time::timeout(Duration::from_secs(15), read).await {
            Ok(Ok(n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => n,
            // Drop kills Xvfb, which also ends the blocked read.
            _ => {
                return Err(Error(format!(
                    "Xvfb gave no display number; log: {}",
                    log_tail(log)
                )))
            }
        };
        display.name = format!(":{number}");
        Ok(display)
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

/// Kills the process group `child` leads, then reaps `child`.
fn kill_group(child: &mut Child) {
    // Negative pid: the process group.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// A running WebDriver server process. Dropping it kills its whole process
/// group, i.e. the driver and every browser process it started, then the
/// engine's X display if it has one.
struct Driver {
    child: Child,
    port: u16,
    log: PathBuf,
    // Declared after `child`: fields drop in order, after `Drop::drop`.
    _display: Option<Display>,
}

impl Driver {
    async fn start(engine: Engine, dir: &Path) -> Result<Driver> {
        let log = dir.join(format!("{}-driver.log", engine.name()));
        let mut display = match engine {
            Engine::WebKit => Some(Display::start(&dir.join("xvfb.log")).await?),
            Engine::Chromium | Engine::Firefox => None,
        };
        let mut last = String::new();
        // The free port can be taken between probing and binding: retry.
        for _ in 0..3 {
            let port = free_port()?;
            let mut cmd =
                engine.driver_command(port, &log, display.as_ref().map(|d| d.name.as_str()))?;
            cmd.stdin(Stdio::null()).stdout(Stdio::null());
            // Own process group, so Drop can kill the browser too even when
            // the driver never got to close it.
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
            let child = cmd
                .spawn()
                .context(format!("spawn {}", engine.driver_binary().display()))?;
            let mut driver = Driver {
                child,
                port,
                log: log.clone(),
                _display: None,
            };
            match driver.wait_ready(Duration::from_secs(15)).await {
                Ok(()) => {
                    driver._display = display.take();
                    return Ok(driver);
                }
                Err(e) => last = e.0, // driver dropped (killed) here
            }
        }
        Err(Error(format!(
            "{} did not come up: {last}; log: {}",
            engine.driver_binary().display(),
            log_tail(&log)
        )))
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().context("driver status")? {
                return Err(Error(format!("driver exited early with {status}")));
            }
            let port = self.port;
            let answer = tokio::task::spawn_blocking(move || {
                http_request(port, "GET", "/status", Duration::from_secs(2))
            })
            .await
            .context("join")?;
            if let Ok(body) = answer {
                if body.contains("\"ready\":true") || body.contains("\"ready\": true") {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(Error(format!(
                    "no ready /status on port {port} after {timeout:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Minimal blocking HTTP/1.1 request to the local driver (status checks and
/// the last-resort session delete in `Drop`, where nothing async can run).
fn http_request(port: u16, method: &str, path: &str, timeout: Duration) -> std::io::Result<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    // chromedriver ignores `Connection: close`: read by Content-Length.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            match len {
                Some(len) if buf.len() >= end + 4 + len => break,
                Some(_) => {}
                None => break, // no body expected
            }
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Waits until `condition` yields `Some`, polling every 50 ms. An `Err` from
/// the condition counts as "not yet" (pages navigating away make scripts
/// fail); on timeout the last error is part of the message.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut condition: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match condition().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() >= deadline {
            let tail = last_err
                .map(|e| format!(" (last error: {e})"))
                .unwrap_or_default();
            return Err(Error(format!(
                "timed out after {timeout:?} waiting for {what}{tail}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the page's `pageshow` recorder saw last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageShow {
    /// How many `pageshow` events this document has had (1 on a fresh load,
    /// more after each restore from the back/forward cache).
    pub count: u64,
    /// `event.persisted` of the last one: true = restored from bfcache.
    pub persisted: bool,
}

/// Selectors for [`Browser::submit_login_with`].
#[derive(Clone, Copy, Debug)]
pub struct LoginForm<'a> {
    pub username: &'a str,
    pub password: &'a str,
    pub submit: &'a str,
}

impl Default for LoginForm<'_> {
    fn default() -> Self {
        LoginForm {
            username: "input[name=username]",
            password: "input[name=password]",
            submit: "form [type=submit]",
        }
    }
}

/// One real browser window, its own driver and its own empty profile.
pub struct Browser {
    engine: Engine,
    client: Client,
    session_id: String,
    version: String,
    browser_args: Vec<String>,
    /// What [`Browser::open_with_args`] added to the command line.
    extra_args: Vec<String>,
    startup: Duration,
    driver: Driver,
    closed: bool,
    // Dropped last, after the driver and the browser are gone.
    slot: Arc<Slot>,
    dir: tempfile::TempDir,
}

static NAV_TOKEN: AtomicU64 = AtomicU64::new(1);

fn versions() -> &'static Mutex<BTreeMap<Engine, String>> {
    static VERSIONS: OnceLock<Mutex<BTreeMap<Engine, String>>> = OnceLock::new();
    VERSIONS.get_or_init(Default::default)
}

/// The version of `engine` that this process has started, if any.
pub fn seen_version(engine: Engine) -> Option<String> {
    versions()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&engine)
        .cloned()
}

impl Browser {
    /// Starts `engine`. `None` means skipped (reported on stderr); panics if
    /// the engine is missing while [`REQUIRE_ENV`]`=1`, or if it is present
    /// but fails to start.
    pub async fn open(engine: Engine) -> Option<Browser> {
        Self::open_with_args(engine, &[]).await
    }

    /// [`Browser::open`], with `args` added to the browser's command line,
    /// e.g. Chromium's `--host-resolver-rules=MAP *.test 127.0.0.1` to
    /// give a test host names of its own.
    pub async fn open_with_args(engine: Engine, args: &[&str]) -> Option<Browser> {
        if let Err(why) = engine.availability() {
            if services_required() {
                panic!("{REQUIRE_ENV}=1 but {} cannot run: {why}", engine.name());
            }
            report_skip(
                engine.name(),
                &format!("{why}; set {REQUIRE_ENV}=1 to make this a failure"),
            );
            return None;
        }
        let slot = Arc::new(Slot::acquire().await);
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        match Self::start(engine, slot, args).await {
            Ok(b) => Some(b),
            Err(e) => panic!("{} failed to start: {e}", engine.name()),
        }
    }

    /// A second, independent browser (own profile: another user) in the same
    /// test. It shares this browser's slot, so a test holding two browsers
    /// cannot deadlock against the slot limit, and this browser's extra
    /// command-line arguments.
    pub async fn open_another(&self, engine: Engine) -> Result<Browser> {
        engine.availability().map_err(Error)?;
        Self::start(engine, self.slot.clone(), self.extra_args.clone()).await
    }

    async fn start(engine: Engine, slot: Arc<Slot>, extra_args: Vec<String>) -> Result<Browser> {
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix(&format!("signoff-{}-", engine.name()))
            .tempdir()
            .context("create browser temp dir")?;
        let profile = dir.path().join("profile");
        std::fs::create_dir(&profile).context("create profile dir")?;
        let driver = Driver::start(engine, dir.path()).await?;
        let mut builder =
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(engine.capabilities(&profile, &extra_args));
        let url = driver.url();
        let connect = builder.connect(&url);
        // A browser that never answers its driver would hang the test.
        let client = match tokio::time::timeout(SESSION_TIMEOUT, connect).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                return Err(Error(format!(
                    "new {} session: {e}; log: {}",
                    engine.name(),
                    log_tail(&driver.log)
                )))
            }
            Err(_) => {
                return Err(Error(format!(
                    "new {} session: no answer after {SESSION_TIMEOUT:?}; log: {}",
                    engine.name(),
                    log_tail(&driver.log)
                )))
            }
        };
        let response = client.session_creation_response().cloned();
        let session_id = response
            .as_ref()
            .map(|r| r.session_id().to_owned())
            .unwrap_or_default();
        let pid = response
            .as_ref()
            .and_then(|r| r.capabilities())
            .and_then(|c| c.get("goog:processID"))
            .and_then(Value::as_u64);
        let version = response
            .as_ref()
            .and_then(|r| r.capabilities())
            .and_then(|c| c.get("browserVersion"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if !version.is_empty() {
            versions()
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(engine, version.clone());
        }
        let mut browser = Browser {
            engine,
            client,
            session_id,
            version,
            browser_args: Vec::new(),
            extra_args,
            startup: started.elapsed(),
            driver,
            closed: false,
            slot,
            dir,
        };
        browser.browser_args = engine.check_bfcache_allowed(pid)?;
        Ok(browser)
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The browser's version, as its driver reported it.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// How long driver + browser + session took to start (not counting the
    /// wait for a free slot).
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The browser's command line as the OS saw it (empty if unknown).
    pub fn browser_args(&self) -> &[String] {
        &self.browser_args
    }

    /// The fantoccini client, for anything this wrapper lacks.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Runs `body` as a WebDriver script (a function body: use `return`).
    pub async fn exec(&self, body: &str) -> Result<Value> {
        self.client
            .execute(body, Vec::new())
            .within(format!("execute script {}", short(body)))
            .await
    }

    /// Runs `body` with `arguments[0..]` bound to `args`.
    pub async fn exec_with(&self, body: &str, args: Vec<Value>) -> Result<Value> {
        self.client
            .execute(body, args)
            .within(format!("execute script {}", short(body)))
            .await
    }

    /// Evaluates one JavaScript expression.
    pub async fn eval(&self, expr: &str) -> Result<Value> {
        self.exec(&format!("return ({expr});")).await
    }

    pub async fn current_url(&self) -> Result<String> {
        Ok(self
            .client
            .current_url()
            .within("current url")
            .await?
            .to_string())
    }

    /// The page's `document.body.innerText`, "" when it has no body.
    pub async fn visible_text(&self) -> Result<String> {
        let v = self
            .exec("return document.body ? document.body.innerText : '';")
            .await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// Marks the current document, so a later wait can tell it was left.
    async fn mark_leaving(&self) -> (u64, f64) {
        let token = NAV_TOKEN.fetch_add(1, Ordering::Relaxed);
        let t0 = self
            .exec_with(
                "window.__signoffLeaving = arguments[0]; return Date.now();",
                vec![json!(token)],
            )
            .await
            .ok()
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0);
        (token, t0)
    }

    /// Waits until the document marked with `token` is gone, the new one is
    /// `complete`, and, if it has a [`PAGESHOW_RECORDER`], its `pageshow`
    /// fired after `t0` (this also covers restores from the bfcache, where
    /// the document is old but the event is new).
    async fn settle(&self, token: u64, t0: f64, what: &str) -> Result<()> {
        const SETTLED: &str = r#"
            var token = arguments[0], t0 = arguments[1];
            if (document.readyState !== "complete") return false;
            if (window.__signoffLeaving === token) return false;
            if (!window.__pageshowRecorder) return true;
            var p = window.__pageshow;
            return !!p && p.at >= t0;"#;
        wait_until(DEFAULT_TIMEOUT, what, || async move {
            let v = self
                .exec_with(SETTLED, vec![json!(token), json!(t0)])
                .await?;
            Ok(v.as_bool().unwrap_or(false).then_some(()))
        })
        .await
    }

    pub async fn goto(&self, url: &str) -> Result<()> {
        let (token, t0) = self.mark_leaving().await;
        self.client.goto(url).within(format!("goto {url}")).await?;
        self.settle(token, t0, &format!("load of {url}")).await
    }

    pub async fn back(&self) -> Result<()> {
        let (token, t0) = self.mark_leaving().await;
        self.client.back().within("back").await?;
        self.settle(token, t0, "page after Back").await
    }

    pub async fn forward(&self) -> Result<()> {
        let (token, t0) = self.mark_leaving().await;
        self.client.forward().within("forward").await?;
        self.settle(token, t0, "page after Forward").await
    }

    pub async fn refresh(&self) -> Result<()> {
        let (token, t0) = self.mark_leaving().await;
        self.client.refresh().within("refresh").await?;
        self.settle(token, t0, "page after Refresh").await
    }

    /// What [`CSP_RECORDER`] recorded on the page (`null` if it did not run).
    pub async fn csp_violations(&self) -> Value {
        self.eval("window.__csp || null").await.unwrap_or_default()
    }

    /// Waits up to 10 s for a URL starting with `prefix` and a loaded page;
    /// the URL. On failure, says where the browser is and what the page's
    /// CSP refused.
    pub async fn wait_for_url(&self, prefix: &str) -> Result<String> {
        let reached = wait_until(Duration::from_secs(10), prefix, || async move {
            let url = self.current_url().await?;
            Ok(url.starts_with(prefix).then_some(url))
        })
        .await;
        match reached {
            Ok(url) => {
                self.wait_ready().await?;
                Ok(url)
            }
            Err(e) => Err(Error::new(format!(
                "{e}; the browser is at {}; CSP violations there: {}",
                self.current_url().await.unwrap_or_default(),
                self.csp_violations().await
            ))),
        }
    }

    /// Waits until the current URL's path (and query) is `path`.
    pub async fn wait_for_path(&self, path: &str, timeout: Duration) -> Result<()> {
        wait_until(
            timeout,
            &format!("the browser to reach {path}"),
            || async move {
                let url = self.client.current_url().within("current url").await?;
                let here = match url.query() {
                    Some(q) => format!("{}?{q}", url.path()),
                    None => url.path().to_owned(),
                };
                Ok((here == path).then_some(()))
            },
        )
        .await?;
        self.wait_ready().await
    }

    /// Waits for `document.readyState == "complete"`.
    pub async fn wait_ready(&self) -> Result<()> {
        wait_until(
            DEFAULT_TIMEOUT,
            "document.readyState complete",
            || async move {
                let v = self.eval("document.readyState").await?;
                Ok((v == "complete").then_some(()))
            },
        )
        .await
    }

    /// Waits until the JavaScript expression `expr` is truthy.
    pub async fn wait_for_js(&self, expr: &str, timeout: Duration) -> Result<()> {
        let body = format!("return !!({expr});");
        wait_until(timeout, expr, || {
            let body = body.clone();
            async move { Ok((self.exec(&body).await? == true).then_some(())) }
        })
        .await
    }

    /// The last `pageshow` the current page recorded; `None` when the page
    /// has no [`PAGESHOW_RECORDER`] or it has not fired yet.
    pub async fn last_pageshow(&self) -> Result<Option<PageShow>> {
        let v = self.eval("window.__pageshow || null").await?;
        Ok(v.as_object().map(|o| PageShow {
            count: o.get("count").and_then(Value::as_u64).unwrap_or(0),
            persisted: o.get("persisted").and_then(Value::as_bool).unwrap_or(false),
        }))
    }

    /// `event.persisted` of the current page's last `pageshow`.
    pub async fn last_pageshow_persisted(&self) -> Result<Option<bool>> {
        Ok(self.last_pageshow().await?.map(|p| p.persisted))
    }

    /// Chromium's own account of why the current page was not restored from
    /// the back/forward cache (`notRestoredReasons`), for diagnostics.
    pub async fn not_restored_reasons(&self) -> Result<Value> {
        self.eval(
            "(function () { var n = performance.getEntriesByType('navigation')[0]; \
             return n && n.notRestoredReasons ? JSON.parse(JSON.stringify(n.notRestoredReasons)) : null; })()",
        )
        .await
    }

    pub async fn click(&self, css: &str) -> Result<()> {
        let el = self
            .client
            .find(Locator::Css(css))
            .within(format!("find {css}"))
            .await?;
        el.click().within(format!("click {css}")).await
    }

    /// Clicks something that navigates, and waits for the new page.
    pub async fn click_and_wait(&self, css: &str) -> Result<()> {
        let (token, t0) = self.mark_leaving().await;
        self.click(css).await?;
        self.settle(token, t0, &format!("page after clicking {css}"))
            .await
    }

    pub async fn fill(&self, css: &str, text: &str) -> Result<()> {
        let el = self
            .client
            .find(Locator::Css(css))
            .within(format!("find {css}"))
            .await?;
        el.clear().within(format!("clear {css}")).await?;
        el.send_keys(text).within(format!("type into {css}")).await
    }

    /// Fills `input[name=username]` and `input[name=password]`, submits, and
    /// waits for the page the form leads to.
    pub async fn submit_login(&self, username: &str, password: &str) -> Result<()> {
        self.submit_login_with(&LoginForm::default(), username, password)
            .await
    }

    pub async fn submit_login_with(
        &self,
        form: &LoginForm<'_>,
        username: &str,
        password: &str,
    ) -> Result<()> {
        self.fill(form.username, username).await?;
        self.fill(form.password, password).await?;
        self.click_and_wait(form.submit).await
    }

    /// Puts the [`PAGESHOW_RECORDER`] into every document this browser
    /// loads from now on (Chromium only, through CDP), so Back waits for
    /// the page's `pageshow` and [`Browser::last_pageshow_persisted`] can
    /// tell a restore from the back/forward cache, in pages that do not
    /// include the recorder themselves.
    pub async fn record_every_pageshow(&self) -> Result<()> {
        let recorder = PAGESHOW_RECORDER
            .trim()
            .trim_start_matches("<script>")
            .trim_end_matches("</script>");
        self.cdp(
            "Page.addScriptToEvaluateOnNewDocument",
            serde_json::json!({ "source": recorder }),
        )
        .await
        .map(drop)
    }

    /// Runs a Chrome DevTools Protocol command through chromedriver's
    /// `goog/cdp/execute` endpoint and returns its result (Chromium only):
    /// what WebDriver cannot do, such as emulating a phone's viewport or
    /// `prefers-color-scheme`.
    pub async fn cdp(&self, cmd: &str, params: Value) -> Result<Value> {
        if self.engine != Engine::Chromium {
            return Err(Error(format!(
                "CDP {cmd}: only Chromium speaks CDP, not {}",
                self.engine.name()
            )));
        }
        self.client
            .issue_cmd(CdpCommand {
                cmd: cmd.to_owned(),
                params,
            })
            .within(format!("CDP {cmd}"))
            .await
    }

    /// Saves a PNG of the viewport (parent directories are created).
    pub async fn screenshot(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let png = self.client.screenshot().within("screenshot").await?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).context(format!("create {}", parent.display()))?;
        }
        std::fs::write(path, png).context(format!("write {}", path.display()))
    }

    /// Ends the browser by killing its driver's process group, as dropping
    /// it does. A WebDriver quit would be politer but costs Firefox over a
    /// second per test, and the profile is thrown away anyway.
    pub async fn close(mut self) -> Result<()> {
        self.closed = true;
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.closed && !self.session_id.is_empty() {
            // Dropped early (a failed step): ask the driver to quit the
            // browser, which leaves its logs complete; Driver::drop then
            // kills the whole process group anyway.
            let _ = http_request(
                self.driver.port,
                "DELETE",
                &format!("/session/{}", self.session_id),
                Duration::from_secs(5),
            );
        }
    }
}

/// chromedriver's extension command that forwards one CDP command to the
/// browser ([`Browser::cdp`]).
#[derive(Debug)]
struct CdpCommand {
    cmd: String,
    params: Value,
}

impl fantoccini::wd::WebDriverCompatibleCommand for CdpCommand {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> std::result::Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _url: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({ "cmd": self.cmd, "params": self.params });
        (http::Method::POST, Some(body.to_string()))
    }
}

fn short(s: &str) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s
    }
}

/// Generates one `#[tokio::test]` per engine for each scenario
/// `async fn NAME(engine: Engine) -> Result<()>` in the calling module.
/// `engine_tests!(every engine: positive_control, no_store);` makes
/// `chromium::positive_control`, `firefox::positive_control`,
/// `webkit::positive_control`, … (the browser suite: adding an engine adds
/// a line here). `engine_tests!(positive_control, no_store);` makes the
/// Chromium ones only: the tests behind nginx and Caddy check the proxies,
/// and the engines' differences are the browser suite's job.
#[macro_export]
macro_rules! engine_tests {
    (every engine: $($scenario:ident),+ $(,)?) => {
        $crate::engine_tests!(@engine chromium, Chromium, $($scenario),+);
        $crate::engine_tests!(@engine firefox, Firefox, $($scenario),+);
        $crate::engine_tests!(@engine webkit, WebKit, $($scenario),+);
    };
    (@engine $module:ident, $variant:ident, $($scenario:ident),+) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() -> $crate::support::browser::Result<()> {
                    super::$scenario($crate::support::browser::Engine::$variant).await
                }
            )+
        }
    };
    ($($scenario:ident),+ $(,)?) => {
        $crate::engine_tests!(@engine chromium, Chromium, $($scenario),+);
    };
}

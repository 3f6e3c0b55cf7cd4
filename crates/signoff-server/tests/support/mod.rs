//! Real processes for the gateway's tests: the `signoff` binary, a Python
//! upstream app, and a plain HTTP client that keeps no cookies of its own.
#![allow(dead_code)]

pub mod browser;
pub mod logout_checks;
pub mod oidc;
pub mod scenarios;
pub mod services;
pub mod websocket;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub const USER: &str = "alice";
pub const PASSWORD: &str = "correct horse battery";

/// Whether CI asked for every service to be present (then a missing one
/// fails the test instead of skipping it).
pub fn services_required() -> bool {
    std::env::var("SIGNOFF_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// Fails under `SIGNOFF_REQUIRE_SERVICES=1`, else says "skipped" and
/// returns `None`.
pub fn missing<T>(what: &str) -> Option<T> {
    if services_required() {
        panic!("{what} is required (SIGNOFF_REQUIRE_SERVICES=1) but not available");
    }
    eprintln!("skipped: {what} is not available");
    None
}

/// python3 that imports `modules` (`"flask, flask_login"`), or `None` (a
/// reported skip, or a failure under SIGNOFF_REQUIRE_SERVICES=1); `install`
/// says how to get them.
pub fn python_with(modules: &str, install: &str) -> Option<()> {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Some(())
    } else {
        missing(&format!("python3 with {modules} ({install})"))
    }
}

pub fn signoff_bin() -> &'static str {
    env!("CARGO_BIN_EXE_signoff")
}

/// A child process killed when dropped.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Spawns `cmd`, waits for its first stdout line, returns it.
fn spawn_reading_first_line(cmd: Command, log: PathBuf) -> (Proc, String) {
    let (proc, mut lines) = spawn_reading_lines(cmd, log, 1);
    (proc, lines.remove(0))
}

/// How long a started process may take to print its first lines: they come
/// within about 3 s on a loaded 2-core machine.
const FIRST_LINES_WITHIN: Duration = Duration::from_secs(30);

/// Spawns `cmd`, waits for its first `n` stdout lines, returns them. Panics,
/// saying whether the process ended (and how) or went quiet, with its log.
pub fn spawn_reading_lines(mut cmd: Command, log: PathBuf, n: usize) -> (Proc, Vec<String>) {
    let log_file = std::fs::File::create(&log).unwrap();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let first: Option<Vec<String>> =
            (0..n).map(|_| lines.next().and_then(Result::ok)).collect();
        let _ = tx.send(first);
        // Keep draining so the child never blocks on a full pipe.
        for _ in lines {}
    });
    let mut proc = Proc { child, log };
    let started = std::time::Instant::now();
    let outcome = rx.recv_timeout(FIRST_LINES_WITHIN);
    let waited = started.elapsed();
    match outcome {
        Ok(Some(lines)) => (proc, lines),
        outcome => {
            let what = if outcome.is_err() {
                format!("did not print {n} line(s) in {waited:?} and was killed")
            } else {
                // Its stdout closed: it ended, or is about to.
                let status = (0..50).find_map(|_| {
                    let status = proc.child.try_wait().ok().flatten();
                    if status.is_none() {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    status
                });
                match status {
                    Some(status) => {
                        format!("ended after {waited:?} ({status}) before printing {n} line(s)")
                    }
                    None => format!("closed its stdout before printing {n} line(s)"),
                }
            };
            panic!("{cmd:?} {what}; its log:\n{}", proc.log_text())
        }
    }
}

/// `signoff ARGS` run in `dir` with the variables `env` (and no other
/// `SIGNOFF_DB` or `SIGNOFF_CONFIG`).
pub fn signoff_in(dir: &Path, env: &[(&str, &str)], args: &[&str], stdin: &str) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_signoff"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("SIGNOFF_DB")
        .env_remove("SIGNOFF_CONFIG");
    for (name, value) in env {
        cmd.env(name, value);
    }
    let mut child = cmd
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

/// The origin and the demo user's password from the first three lines
/// `signoff demo` prints.
pub fn demo_banner(lines: &[String]) -> (String, String) {
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
    (origin, password)
}

/// The Python upstream app.
pub struct Upstream {
    pub proc: Proc,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Upstream {
    pub fn start() -> Option<Upstream> {
        if Command::new("python3").arg("--version").output().is_err() {
            return missing("python3 (for the upstream test app)");
        }
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/upstream/app.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script);
        let (proc, line) = spawn_reading_first_line(cmd, dir.path().join("upstream.log"));
        let port = line.trim().parse().expect("upstream port");
        Some(Upstream {
            proc,
            port,
            _dir: dir,
        })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// A `signoff serve` process with its own database and user `alice`.
pub struct Gateway {
    pub proc: Proc,
    /// e.g. `http://127.0.0.1:40123`
    pub origin: String,
    pub db: String,
    pub dir: tempfile::TempDir,
    args: Vec<String>,
}

pub fn add_user(db: &str, name: &str, password: &str) {
    add_user_in_groups(db, name, password, &[]);
}

/// `signoff user add NAME --group G…` on `db`.
pub fn add_user_in_groups(db: &str, name: &str, password: &str, groups: &[&str]) {
    let mut cmd = Command::new(signoff_bin());
    cmd.args(["user", "add", name, "--password-stdin", "--db", db]);
    for group in groups {
        cmd.args(["--group", group]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    assert!(child.wait().unwrap().success(), "user add {name}");
}

/// Runs `signoff ARGS --db DB` and asserts it succeeded.
pub fn cli(args: &[&str], db: &str) -> std::process::Output {
    let out = Command::new(signoff_bin())
        .args(args)
        .args(["--db", db])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "signoff {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Gateway {
    pub fn start(upstream: &str, extra: &[&str]) -> Gateway {
        Self::start_with(Some(upstream), extra)
    }

    /// `signoff serve` without an upstream: forward-auth only.
    pub fn start_forward_auth(extra: &[&str]) -> Gateway {
        Self::start_with(None, extra)
    }

    fn start_with(upstream: Option<&str>, extra: &[&str]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}", dir.path().join("signoff.db").display());
        add_user(&db, USER, PASSWORD);
        Self::start_on(dir, &db, upstream, extra)
    }

    /// `signoff serve` on a store that already exists (Redis, PostgreSQL,
    /// or another node's SQLite file); `dir` keeps its log.
    pub fn start_on(
        dir: tempfile::TempDir,
        db: &str,
        upstream: Option<&str>,
        extra: &[&str],
    ) -> Gateway {
        let db = db.to_owned();
        let mut args: Vec<String> = vec!["serve".into(), "--db".into(), db.clone()];
        if let Some(upstream) = upstream {
            args.extend(["--upstream".to_owned(), upstream.to_owned()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        if !extra.contains(&"--listen") {
            args.extend(["--listen".to_owned(), "127.0.0.1:0".to_owned()]);
        }
        Self::spawn(dir, db, args)
    }

    fn spawn(dir: tempfile::TempDir, db: String, args: Vec<String>) -> Gateway {
        let mut cmd = Command::new(signoff_bin());
        cmd.args(&args)
            .env("SIGNOFF_LOG", "info")
            .env_remove("SIGNOFF_CONFIG");
        let log = dir.path().join(format!("gateway-{}.log", args.len()));
        let (proc, line) = spawn_reading_first_line(cmd, log);
        let origin = line
            .strip_prefix("signoff listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .trim_end_matches('/')
            .to_owned();
        Gateway {
            proc,
            origin,
            db,
            dir,
            args,
        }
    }

    /// `signoff serve` in front of `upstream` with the config file `config`
    /// (`[[app]]`s on `*.test` hosts), on a free port that the public URL
    /// `http://login.test:PORT` shares: the gateway and the port. Tests
    /// name the hosts in `Host`, or map them in the browser.
    pub fn start_with_hosts(
        dir: tempfile::TempDir,
        db: &str,
        upstream: &Upstream,
        config: &str,
    ) -> (Gateway, u16) {
        let port = services::free_port();
        let file = dir.path().join("signoff.toml");
        std::fs::write(&file, config).unwrap();
        let listen = format!("127.0.0.1:{port}");
        let public = format!("http://login.test:{port}");
        let file = file.display().to_string();
        let gw = Self::start_on(
            dir,
            db,
            Some(&upstream.url()),
            &[
                "--config",
                &file,
                "--listen",
                &listen,
                "--public-url",
                &public,
                "--allow-insecure-http",
            ],
        );
        (gw, port)
    }

    /// How many times the gateway has told a page's guard that its session
    /// is over (`GET /.signoff/status` answered 401, in its access log):
    /// the mark of a private page restored from the back/forward cache.
    pub fn guard_refusals(&self) -> usize {
        self.proc
            .log_text()
            .lines()
            .filter(|l| l.contains("path=/.signoff/status status=401"))
            .count()
    }

    /// Stops the process and starts it again on the same database and port.
    pub fn restart(self) -> Gateway {
        let port = self.origin.rsplit(':').next().unwrap().to_owned();
        let Gateway {
            proc,
            dir,
            db,
            mut args,
            ..
        } = self;
        drop(proc);
        let at = args.iter().position(|a| a == "--listen").unwrap();
        args[at + 1] = format!("127.0.0.1:{port}");
        Self::spawn(dir, db, args)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin)
    }

    /// Signs in; returns the session token from the cookie.
    pub async fn login(&self, user: &str, password: &str) -> String {
        login_at(&self.origin, user, password).await
    }
}

/// Signs in at `origin` (signoff, or a proxy in front of it); returns the
/// session token from the cookie.
pub async fn login_at(origin: &str, user: &str, password: &str) -> String {
    let reply = post_form(
        &format!("{origin}/.signoff/login"),
        &[("username", user), ("password", password)],
        &[("origin", origin)],
    )
    .await;
    assert_eq!(reply.status, 303, "login failed: {}", reply.text());
    reply.new_cookie("signoff").expect("a session cookie")
}

/// A reply with its body read.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("").to_owned())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }

    /// The value a `Set-Cookie` gives `name`, if it sets it non-empty.
    pub fn new_cookie(&self, name: &str) -> Option<String> {
        self.all("set-cookie").iter().find_map(|c| {
            let (n, rest) = c.split_once('=')?;
            let value = rest.split(';').next()?.to_owned();
            (n == name && !value.is_empty()).then_some(value)
        })
    }
}

pub async fn request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, Vec<u8>)>,
) -> Reply {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut builder = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let body = match body {
        Some((content_type, bytes)) => {
            builder = builder.header("content-type", content_type);
            Full::new(Bytes::from(bytes))
        }
        None => Full::new(Bytes::new()),
    };
    let response = tokio::time::timeout(
        Duration::from_secs(30),
        client.request(builder.body(body).unwrap()),
    )
    .await
    .expect("no answer in 30 s")
    .expect("request failed");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

/// A response whose body is read as it comes.
pub struct Streaming {
    pub status: u16,
    pub headers: HeaderMap,
    body: hyper::body::Incoming,
    broken: bool,
}

impl Streaming {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The next piece of the body; `None` at its end (or when it broke).
    pub async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Some(data);
                    }
                }
                Some(Err(_)) => {
                    self.broken = true;
                    return None;
                }
                None => return None,
            }
        }
    }

    /// Whether the body ended with an error (a cut, not a clean end).
    pub fn broken(&self) -> bool {
        self.broken
    }
}

/// A GET whose body is read piece by piece.
pub async fn stream(url: &str, headers: &[(&str, &str)]) -> Streaming {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut builder = Request::builder().method(Method::GET).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = tokio::time::timeout(
        Duration::from_secs(30),
        client.request(builder.body(Full::new(Bytes::new())).unwrap()),
    )
    .await
    .expect("no answer in 30 s")
    .expect("request failed");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    Streaming {
        status,
        headers,
        body: response.into_body(),
        broken: false,
    }
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    request(Method::GET, url, headers, None).await
}

pub async fn post_form(url: &str, form: &[(&str, &str)], headers: &[(&str, &str)]) -> Reply {
    let body = serde_urlencoded::to_string(form).unwrap();
    request(
        Method::POST,
        url,
        headers,
        Some(("application/x-www-form-urlencoded", body.into_bytes())),
    )
    .await
}

/// The whole `Set-Cookie` value that sets the cookie `name`, if any.
pub fn cookie_named(reply: &Reply, name: &str) -> Option<String> {
    reply
        .all("set-cookie")
        .into_iter()
        .find(|c| c.split_once('=').is_some_and(|(n, _)| n == name))
}

/// The axum example app (examples/axum-app), started on `db` (whose users
/// `signoff user add` made), on a free port.
pub struct ExampleApp {
    pub proc: Proc,
    /// e.g. `http://127.0.0.1:40123`
    pub origin: String,
}

impl ExampleApp {
    /// The `signoff-example` binary, built beside `signoff` by `cargo test
    /// --workspace` (the example has an integration test of its own).
    pub fn bin() -> PathBuf {
        let bin = Path::new(signoff_bin())
            .parent()
            .unwrap()
            .join("signoff-example");
        assert!(
            bin.exists(),
            "{} is missing: run `cargo test --workspace` (or `cargo build -p \
             signoff-axum-example`) so the example app is built",
            bin.display()
        );
        bin
    }

    pub fn start(db: &str, log_dir: &Path) -> ExampleApp {
        let mut cmd = Command::new(Self::bin());
        cmd.args(["--listen", "127.0.0.1:0", "--db", db])
            .env("RUST_LOG", "info");
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = log_dir.join(format!("example-{n}.log"));
        let (proc, line) = spawn_reading_first_line(cmd, log);
        let origin = line
            .rsplit(' ')
            .next()
            .filter(|o| o.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        ExampleApp { proc, origin }
    }

    /// What the shared sign-out checks need to know of it.
    pub fn target(&self) -> logout_checks::Target {
        logout_checks::Target {
            origin: self.origin.clone(),
            login_path: "/login",
            logout_path: "/logout",
            private_path: "/dashboard",
            private_marker: "Signed in as",
            cookie: "signoff",
            user: USER.to_owned(),
            password: PASSWORD.to_owned(),
        }
    }
}

/// The `Cookie` header for a session token.
pub fn cookie(token: &str) -> String {
    format!("signoff={token}")
}

/// The CSRF token in one of signoff's forms.
pub fn csrf_in(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html
        .find(marker)
        .unwrap_or_else(|| panic!("no CSRF field in {html:.500}"))
        + marker.len();
    let end = html[start..].find('"').unwrap() + start;
    html[start..end].to_owned()
}

/// The sessions page as the holder of `token` sees it (status 200 checked).
pub async fn sessions_page(origin: &str, token: &str) -> String {
    let reply = get(
        &format!("{origin}/.signoff/sessions"),
        &[("cookie", &cookie(token))],
    )
    .await;
    assert_eq!(reply.status, 200, "sessions page: {}", reply.text());
    reply.text()
}

/// Posts one of the sessions page's forms (`end`, `end-others`,
/// `end-all`) as a same-origin browser would, with the page's CSRF token.
pub async fn sessions_action(
    origin: &str,
    token: &str,
    action: &str,
    extra: &[(&str, &str)],
) -> Reply {
    let csrf = csrf_in(&sessions_page(origin, token).await);
    let mut form = vec![("csrf", csrf.as_str())];
    form.extend_from_slice(extra);
    post_form(
        &format!("{origin}/.signoff/sessions/{action}"),
        &form,
        &[("cookie", &cookie(token)), ("origin", origin)],
    )
    .await
}

/// Enters the password again at `/.signoff/reauth` as a same-origin
/// browser would, with the page's CSRF token; the answer (303 to `next` and
/// a rotated cookie when the password is right).
pub async fn reauth(origin: &str, token: &str, password: &str, next: &str) -> Reply {
    let page = get(
        &format!("{origin}/.signoff/reauth"),
        &[("cookie", &cookie(token))],
    )
    .await;
    let csrf = csrf_in(&page.text());
    post_form(
        &format!("{origin}/.signoff/reauth"),
        &[("csrf", &csrf), ("password", password), ("next", next)],
        &[("cookie", &cookie(token)), ("origin", origin)],
    )
    .await
}

/// A new admin API token from `signoff admin-token`: (token, its SHA-256).
pub fn admin_token() -> (String, String) {
    let out = Command::new(signoff_bin())
        .arg("admin-token")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .to_owned()
    };
    (field("token:"), field("sha256:"))
}

/// What the test upstream (`tests/upstream/app.py`) saw of one header,
/// from its `/echo` page.
pub fn seen(reply: &Reply, header: &str) -> Vec<String> {
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|pair| pair[0] == header)
        .map(|pair| pair[1].as_str().unwrap().to_owned())
        .collect()
}

/// A gateway with the admin API on, in front of the test upstream, and
/// the admin token.
pub struct Admin {
    pub gw: Gateway,
    pub up: Upstream,
    pub token: String,
}

impl Admin {
    pub fn start() -> Option<Admin> {
        let (token, hash) = admin_token();
        let up = Upstream::start()?;
        let gw = Gateway::start(&up.url(), &["--admin-token-sha256", &hash]);
        Some(Admin { gw, up, token })
    }

    /// `METHOD /.signoff/admin{path}` with the token, and a JSON body.
    pub async fn call(&self, method: Method, path: &str, body: Option<&str>) -> Reply {
        let auth = format!("Bearer {}", self.token);
        request(
            method,
            &self.gw.url(&format!("/.signoff/admin{path}")),
            &[("authorization", &auth)],
            body.map(|b| ("application/json", b.as_bytes().to_vec())),
        )
        .await
    }
}

/// Sends `GET target` as raw bytes to `origin` (`http://host:port`), with
/// `headers` (whole lines, each ending in `\r\n`) after `Host`, and
/// returns the answer as text: paths an HTTP library would refuse or tidy
/// (`\`, `..`, characters outside ASCII) go out exactly as written.
pub fn raw_get(origin: &str, target: &str, headers: &str) -> String {
    use std::io::Read as _;
    let addr = origin.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

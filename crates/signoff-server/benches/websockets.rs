//! WebSocket figures of issue 18 (docs/benchmarks.md, "WebSockets (issue
//! 18)"): how soon a socket is closed after its session's logout (same
//! node, and across nodes on Redis and PostgreSQL), echo throughput and
//! round-trip time through `signoff serve` against the upstream directly,
//! and the gateway's memory per open idle socket.
//!
//! It starts the `signoff` binary of the same build (the bench profile:
//! release with line tables) and runs the WebSocket upstream of the tests
//! (tests/support/websocket.rs) and the clients in this process:
//!
//! ```sh
//! cargo bench -p signoff-server --bench websockets
//! SIGNOFF_BENCH_QUICK=1 cargo bench -p signoff-server --bench websockets   # smoke run, seconds
//! SIGNOFF_BENCH_ONLY=close,echo,memory ...                                  # some parts only
//! ```
//!
//! `-- --test` (what CI passes to it, under `cargo test`) also means the
//! quick run.
//! Redis (127.0.0.1:6379) and PostgreSQL (postgres://postgres@127.0.0.1:5432/test)
//! come from `SIGNOFF_TEST_REDIS` / `SIGNOFF_TEST_POSTGRES` like the tests;
//! a missing one skips its rows, or fails the run under
//! `SIGNOFF_REQUIRE_SERVICES=1`. Every process started here is killed when
//! its guard drops, also on panic.

#[allow(dead_code)]
#[path = "../tests/support/websocket.rs"]
mod upstream;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use upstream::WsUpstream;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

const USER: &str = "alice";
const PASSWORD: &str = "correct horse battery";
/// Size of each echoed message.
const MESSAGE: usize = 1024;

/// How much to run.
struct Plan {
    quick: bool,
    trials: usize,
    sockets: usize,
    /// Length of one timed echo run.
    run: Duration,
    rounds: usize,
    only: Option<String>,
}

impl Plan {
    fn from_env() -> Plan {
        let quick = std::env::var("SIGNOFF_BENCH_QUICK").is_ok_and(|v| v == "1")
            || std::env::args().any(|a| a == "--test");
        let only = std::env::var("SIGNOFF_BENCH_ONLY").ok();
        if quick {
            Plan {
                quick,
                trials: 5,
                sockets: 200,
                run: Duration::from_millis(300),
                rounds: 1,
                only,
            }
        } else {
            Plan {
                quick,
                trials: 120,
                sockets: 10_000,
                run: Duration::from_secs(5),
                rounds: 2,
                only,
            }
        }
    }

    fn wants(&self, part: &str) -> bool {
        self.only
            .as_deref()
            .is_none_or(|only| only.split(',').any(|p| p.trim() == part))
    }
}

fn main() {
    let mut plan = Plan::from_env();
    // Each tunnel holds two descriptors in the gateway, and this process
    // holds both the clients' and the upstream's ends: raise the limit
    // (the children inherit it) when allowed to.
    let want = (plan.sockets as u64) * 3 + 1024;
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    if hard < want {
        let _ = rlimit::setrlimit(rlimit::Resource::NOFILE, want, want);
    } else if soft < want {
        let _ = rlimit::setrlimit(rlimit::Resource::NOFILE, want, hard);
    }
    // The gateway holds two descriptors per tunnel, under the same limit:
    // where it cannot be raised (a container without CAP_SYS_RESOURCE),
    // open as many as fit.
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    let fit = usize::try_from(hard.saturating_sub(1000) / 2).unwrap_or(usize::MAX);
    if fit < plan.sockets {
        eprintln!(
            "memory: {} sockets, not {}: the descriptor limit is {hard} and cannot be raised",
            fit, plan.sockets
        );
        plan.sockets = fit;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(plan));
}

async fn run(plan: Plan) {
    let started = Instant::now();
    let mut report = String::new();
    let up = WsUpstream::start().await;
    if plan.wants("close") {
        report.push_str(&close_latency(&plan, &up).await);
    }
    if plan.wants("echo") {
        report.push_str(&echo(&plan, &up).await);
    }
    if plan.wants("memory") {
        report.push_str(&memory(&plan, &up).await);
    }
    println!(
        "\n{report}\n({} run, {:.1} s)",
        if plan.quick { "quick" } else { "full" },
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------- processes

/// A `signoff serve` process; killed when dropped.
struct Node {
    child: Child,
    pid: u32,
    origin: String,
    log: std::path::PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    fn start(db: &str, upstream: &str, dir: &std::path::Path, name: &str, extra: &[&str]) -> Node {
        let log = dir.join(format!("{name}.log"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_signoff"))
            .args(["serve", "--db", db, "--upstream", upstream])
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("SIGNOFF_LOG", "info")
            .env_remove("SIGNOFF_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("run the signoff binary");
        let pid = child.id();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().and_then(Result::ok);
        // Keep its stdout drained for the rest of its life.
        std::thread::spawn(move || lines.for_each(drop));
        let mut node = Node {
            child,
            pid,
            origin: String::new(),
            log,
        };
        match first
            .as_deref()
            .and_then(|l| l.strip_prefix("signoff listening on "))
        {
            Some(origin) => node.origin = origin.trim_end_matches('/').to_owned(),
            None => panic!(
                "signoff did not start ({first:?}): {}",
                std::fs::read_to_string(&node.log).unwrap_or_default()
            ),
        }
        node
    }

    fn ws_url(&self, path: &str) -> String {
        format!("{}{path}", self.origin.replacen("http://", "ws://", 1))
    }

    /// Resident memory, bytes.
    fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmRSS")
            * 1024
    }

    /// CPU time used so far (user + system).
    fn cpu(&self) -> Duration {
        cpu_of(&format!("/proc/{}/stat", self.pid))
    }
}

/// User + system time of a process from its `/proc/…/stat`.
fn cpu_of(stat: &str) -> Duration {
    let text = std::fs::read_to_string(stat).unwrap();
    // Fields after the command name (which may hold spaces).
    let rest = &text[text.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

fn add_user(db: &str) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_signoff"))
        .args(["user", "add", USER, "--password-stdin", "--db", db])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    assert!(child.wait().unwrap().success(), "signoff user add");
}

fn services_required() -> bool {
    std::env::var("SIGNOFF_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// A shared store of the machine under a name of this run's own, emptied
/// when dropped.
struct Shared {
    redis: bool,
    base: String,
    name: String,
}

impl Shared {
    fn on_machine(redis: bool) -> Option<Shared> {
        let (var, default) = if redis {
            ("SIGNOFF_TEST_REDIS", "redis://127.0.0.1:6379")
        } else {
            (
                "SIGNOFF_TEST_POSTGRES",
                "postgres://postgres@127.0.0.1:5432/test",
            )
        };
        let base = std::env::var(var).unwrap_or_else(|_| default.to_owned());
        let hostport = base
            .split("://")
            .nth(1)
            .unwrap_or("")
            .rsplit('@')
            .next()
            .unwrap_or("")
            .split('/')
            .next()
            .unwrap_or("");
        if std::net::TcpStream::connect(hostport).is_err() {
            assert!(
                !services_required(),
                "{base} is required (SIGNOFF_REQUIRE_SERVICES=1) but not available"
            );
            eprintln!("skipped: {base} is not available");
            return None;
        }
        let tag = format!("{:012x}", rand::random::<u64>() >> 16);
        let name = if redis {
            format!("signoff-bench-ws-{tag}")
        } else {
            format!("signoff_bench_ws_{tag}")
        };
        Some(Shared { redis, base, name })
    }

    fn db(&self) -> String {
        let (param, sep) = (
            if self.redis { "prefix" } else { "schema" },
            if self.base.contains('?') { '&' } else { '?' },
        );
        format!("{}{sep}{param}={}", self.base, self.name)
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if self.redis {
            let script = format!(
                "redis-cli -u '{}' --scan --pattern '{}:*' | xargs -r redis-cli -u '{}' unlink",
                self.base, self.name, self.base
            );
            let _ = Command::new("sh").args(["-c", &script]).output();
        } else {
            let _ = Command::new("psql")
                .args([&self.base, "-q", "-c"])
                .arg(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name))
                .output();
        }
    }
}

// ---------------------------------------------------------------- HTTP

struct Reply {
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
}

async fn request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    form: Option<String>,
) -> Reply {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut builder = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let body = match form {
        Some(form) => {
            builder = builder.header("content-type", "application/x-www-form-urlencoded");
            Full::new(Bytes::from(form))
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

/// Signs in at `node`; the session token.
async fn login(node: &Node) -> String {
    let form = serde_urlencoded::to_string([("username", USER), ("password", PASSWORD)]).unwrap();
    let reply = request(
        Method::POST,
        &format!("{}/.signoff/login", node.origin),
        &[("origin", &node.origin)],
        Some(form),
    )
    .await;
    assert_eq!(
        reply.status,
        303,
        "login: {}",
        String::from_utf8_lossy(&reply.body)
    );
    reply
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let value = v.strip_prefix("signoff=")?.split(';').next()?;
            (!value.is_empty()).then(|| value.to_owned())
        })
        .expect("a session cookie")
}

/// The CSRF token of `node`'s sessions page for `token`.
async fn csrf(node: &Node, token: &str) -> String {
    let reply = request(
        Method::GET,
        &format!("{}/.signoff/sessions", node.origin),
        &[("cookie", &format!("signoff={token}"))],
        None,
    )
    .await;
    assert_eq!(reply.status, 200, "sessions page");
    let html = String::from_utf8_lossy(&reply.body);
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("a CSRF field") + marker.len();
    let end = html[start..].find('"').unwrap() + start;
    html[start..end].to_owned()
}

/// Opens a WebSocket through `node` as a page of its origin would.
async fn open(node: &Node, token: &str, path: &str) -> Socket {
    let mut request = node.ws_url(path).into_client_request().unwrap();
    let headers = request.headers_mut();
    headers.insert("cookie", format!("signoff={token}").parse().unwrap());
    headers.insert("origin", node.origin.parse().unwrap());
    let (socket, _) = tokio::time::timeout(
        Duration::from_secs(30),
        tokio_tungstenite::connect_async_with_config(request, None, true),
    )
    .await
    .expect("no handshake in 30 s")
    .unwrap_or_else(|e| match e {
        tokio_tungstenite::tungstenite::Error::Http(r) => {
            panic!("the socket did not open: {}", r.status())
        }
        e => panic!("the socket did not open: {e}"),
    });
    socket
}

async fn open_direct(up: &WsUpstream, path: &str) -> Socket {
    let url = format!("ws://127.0.0.1:{}{path}", up.port);
    tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .unwrap()
        .0
}

async fn echo_once(socket: &mut Socket) {
    socket.send(Message::text("ready?")).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
        Ok(Some(Ok(Message::Text(_)))) => {}
        other => panic!("no echo: {other:?}"),
    }
}

// ---------------------------------------------------------------- figures

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One logout: signs in at `at`, opens a socket on `socket_on`, signs out
/// at `at`. Milliseconds from the logout response to the close frame
/// (negative when the close came first), and from the logout request.
async fn close_trial(at: &Node, socket_on: &Node) -> (f64, f64) {
    let token = login(at).await;
    let mut socket = open(socket_on, &token, "/ws/close").await;
    echo_once(&mut socket).await;
    let csrf = csrf(at, &token).await;
    let closed = tokio::spawn(async move {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(frame))) => {
                    let at = Instant::now();
                    let code = frame.map_or(1005, |f| u16::from(f.code));
                    return (at, code);
                }
                Some(Ok(_)) => continue,
                other => panic!("the socket ended without a close frame: {other:?}"),
            }
        }
    });
    let form = serde_urlencoded::to_string([("csrf", csrf.as_str())]).unwrap();
    let sent = Instant::now();
    let reply = request(
        Method::POST,
        &format!("{}/.signoff/logout", at.origin),
        &[
            ("cookie", &format!("signoff={token}")),
            ("origin", &at.origin),
        ],
        Some(form),
    )
    .await;
    let answered = Instant::now();
    assert_eq!(reply.status, 303, "logout");
    let (closed_at, code) = tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .expect("no close frame within 10 s of the logout")
        .unwrap();
    assert_eq!(code, 1008, "close code");
    let signed = |from: Instant| {
        if closed_at >= from {
            ms(closed_at - from)
        } else {
            -ms(from - closed_at)
        }
    };
    (signed(answered), signed(sent))
}

async fn close_latency(plan: &Plan, up: &WsUpstream) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut out = format!(
        "### Close after logout ({} trials each)\n\n\
         | setup | trials | p50 from response | p99 from response | max from response | p50 from request | p99 from request | closes before the response |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
        plan.trials
    );
    let mut setups: Vec<(&str, Option<Shared>, String)> = Vec::new();
    let sqlite = format!("sqlite://{}", dir.path().join("close.db").display());
    setups.push(("same node (SQLite)", None, sqlite));
    for redis in [true, false] {
        if let Some(shared) = Shared::on_machine(redis) {
            let db = shared.db();
            let name = if redis {
                "cross-node, Redis"
            } else {
                "cross-node, PostgreSQL"
            };
            setups.push((name, Some(shared), db));
        }
    }
    for (name, shared, db) in &setups {
        add_user(db);
        let a = Node::start(db, &up.url(), dir.path(), "a", &[]);
        let b = shared
            .is_some()
            .then(|| Node::start(db, &up.url(), dir.path(), "b", &[]));
        let socket_on = b.as_ref().unwrap_or(&a);
        // One untimed trial: first connections, caches, bus subscription.
        close_trial(&a, socket_on).await;
        let mut from_response = Vec::new();
        let mut from_request = Vec::new();
        for _ in 0..plan.trials {
            let (r, q) = close_trial(&a, socket_on).await;
            from_response.push(r);
            from_request.push(q);
        }
        let early = from_response.iter().filter(|&&r| r < 0.0).count();
        from_response.sort_by(f64::total_cmp);
        from_request.sort_by(f64::total_cmp);
        out.push_str(&format!(
            "| {name} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {early} |\n",
            plan.trials,
            percentile(&from_response, 50.0),
            percentile(&from_response, 99.0),
            from_response.last().unwrap(),
            percentile(&from_request, 50.0),
            percentile(&from_request, 99.0),
        ));
        eprintln!("close: {name} done");
    }
    drop(setups);
    out.push('\n');
    out
}

/// What one timed echo run gave.
#[derive(Default, Clone, Copy)]
struct EchoRun {
    messages: u64,
    seconds: f64,
    /// CPU time of the gateway during the run.
    gateway_cpu: Duration,
    /// CPU time of this process (clients and upstream) during the run.
    own_cpu: Duration,
}

/// Throughput: `conns` sockets, each sending `window` messages then
/// reading their echoes, for `length`.
async fn throughput(sockets: Vec<Socket>, window: usize, length: Duration) -> (u64, f64) {
    let payload = Bytes::from(vec![0x5a; MESSAGE]);
    let start = Instant::now();
    let deadline = start + length;
    let mut tasks = tokio::task::JoinSet::new();
    for mut socket in sockets {
        let payload = payload.clone();
        tasks.spawn(async move {
            let mut echoed = 0u64;
            while Instant::now() < deadline {
                for _ in 0..window {
                    socket.feed(Message::Binary(payload.clone())).await.unwrap();
                }
                socket.flush().await.unwrap();
                let mut got = 0;
                while got < window {
                    match socket.next().await {
                        Some(Ok(Message::Binary(b))) => {
                            assert_eq!(b.len(), MESSAGE);
                            got += 1;
                        }
                        Some(Ok(_)) => {}
                        other => panic!("echo broke: {other:?}"),
                    }
                }
                echoed += window as u64;
            }
            let _ = socket.close(None).await;
            echoed
        });
    }
    let mut total = 0;
    while let Some(n) = tasks.join_next().await {
        total += n.unwrap();
    }
    (total, start.elapsed().as_secs_f64())
}

/// Round trips of one message at a time on one socket, milliseconds.
async fn round_trips(mut socket: Socket, length: Duration) -> Vec<f64> {
    let payload = Bytes::from(vec![0x5a; MESSAGE]);
    let deadline = Instant::now() + length;
    let mut times = Vec::new();
    while Instant::now() < deadline {
        let sent = Instant::now();
        socket.send(Message::Binary(payload.clone())).await.unwrap();
        loop {
            match socket.next().await {
                Some(Ok(Message::Binary(_))) => break,
                Some(Ok(_)) => {}
                other => panic!("echo broke: {other:?}"),
            }
        }
        times.push(ms(sent.elapsed()));
    }
    let _ = socket.close(None).await;
    times
}

async fn echo(plan: &Plan, up: &WsUpstream) -> String {
    const CONNS: usize = 8;
    const WINDOW: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("echo.db").display());
    add_user(&db);
    let node = Node::start(&db, &up.url(), dir.path(), "echo", &[]);
    let token = login(&node).await;
    let own_stat = format!("/proc/{}/stat", std::process::id());

    // Alternating direct / gateway / gateway / direct, so drift hits both.
    let mut direct = (EchoRun::default(), Vec::new());
    let mut gateway = (EchoRun::default(), Vec::new());
    for round in 0..plan.rounds {
        for through in [round % 2 == 1, round % 2 == 0] {
            {
                let mut sockets = Vec::new();
                for _ in 0..CONNS {
                    let mut s = if through {
                        open(&node, &token, "/ws/echo").await
                    } else {
                        open_direct(up, "/ws/echo").await
                    };
                    echo_once(&mut s).await;
                    sockets.push(s);
                }
                let (cpu0, own0) = (node.cpu(), cpu_of(&own_stat));
                let (messages, seconds) = throughput(sockets, WINDOW, plan.run).await;
                let (cpu1, own1) = (node.cpu(), cpu_of(&own_stat));
                let mut single = if through {
                    open(&node, &token, "/ws/rtt").await
                } else {
                    open_direct(up, "/ws/rtt").await
                };
                echo_once(&mut single).await;
                let times = round_trips(single, plan.run).await;
                let into = if through { &mut gateway } else { &mut direct };
                into.0.messages += messages;
                into.0.seconds += seconds;
                into.0.gateway_cpu += cpu1 - cpu0;
                into.0.own_cpu += own1 - own0;
                into.1.extend(times);
                eprintln!(
                    "echo: round {round} {}: {:.0} msg/s",
                    if through { "gateway" } else { "direct" },
                    messages as f64 / seconds
                );
            }
        }
    }
    let rate = |r: &EchoRun| r.messages as f64 / r.seconds;
    let per_message = |cpu: Duration, r: &EchoRun| cpu.as_secs_f64() * 1e6 / r.messages as f64;
    direct.1.sort_by(f64::total_cmp);
    gateway.1.sort_by(f64::total_cmp);
    let (d50, d99) = (percentile(&direct.1, 50.0), percentile(&direct.1, 99.0));
    let (g50, g99) = (percentile(&gateway.1, 50.0), percentile(&gateway.1, 99.0));
    format!(
        "### Echo, {MESSAGE}-byte binary messages ({CONNS} sockets x {WINDOW} in flight; round trips: one socket, one message at a time; {} s per run, {} rounds)\n\n\
         | path | echoes/s | vs direct | MB/s each way | RTT p50 | RTT p99 | gateway CPU µs/echo | bench process CPU µs/echo | round trips timed |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n\
         | direct to the upstream | {:.0} | 1.00x | {:.1} | {d50:.3} ms | {d99:.3} ms | - | {:.1} | {} |\n\
         | through signoff | {:.0} | **{:.2}x** | {:.1} | {g50:.3} ms (+{:.3}) | {g99:.3} ms (+{:.3}) | {:.1} | {:.1} | {} |\n\n",
        plan.run.as_secs_f64(),
        plan.rounds,
        rate(&direct.0),
        rate(&direct.0) * MESSAGE as f64 / 1e6,
        per_message(direct.0.own_cpu, &direct.0),
        direct.1.len(),
        rate(&gateway.0),
        rate(&gateway.0) / rate(&direct.0),
        rate(&gateway.0) * MESSAGE as f64 / 1e6,
        g50 - d50,
        g99 - d99,
        per_message(gateway.0.gateway_cpu, &gateway.0),
        per_message(gateway.0.own_cpu, &gateway.0),
        gateway.1.len(),
    )
}

async fn memory(plan: &Plan, up: &WsUpstream) -> String {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("memory.db").display());
    add_user(&db);
    let max = (plan.sockets * 2 + 100).to_string();
    let node = Node::start(
        &db,
        &up.url(),
        dir.path(),
        "memory",
        &["--max-connections", &max],
    );
    let token = login(&node).await;
    // Warm up: one socket opened and used, so the first-use allocations
    // (upstream client pool, watch registry) are in the baseline.
    let mut warm = open(&node, &token, "/ws/warm").await;
    echo_once(&mut warm).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = node.rss();
    let cpu_before = node.cpu();
    let opening = Instant::now();
    let mut sockets = Vec::with_capacity(plan.sockets);
    let mut batch = tokio::task::JoinSet::new();
    let token = std::sync::Arc::new(token);
    let node = std::sync::Arc::new(node);
    let mut next = 0;
    while sockets.len() < plan.sockets {
        while next < plan.sockets && batch.len() < 64 {
            let (node, token) = (node.clone(), token.clone());
            batch.spawn(async move { open(&node, &token, "/ws/idle").await });
            next += 1;
        }
        match batch.join_next().await.unwrap() {
            Ok(socket) => sockets.push(socket),
            Err(e) => {
                let log = std::fs::read_to_string(&node.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                panic!(
                    "{e} after {} sockets; gateway log: {tail:#?}",
                    sockets.len()
                );
            }
        }
    }
    let open_time = opening.elapsed();
    let open_cpu = node.cpu() - cpu_before;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = node.rss();
    // Still carrying: one of them echoes.
    echo_once(&mut sockets[0]).await;
    let per = (after.saturating_sub(before)) as f64 / plan.sockets as f64;
    drop(sockets);
    drop(warm);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let closed = node.rss();
    format!(
        "### Memory per open idle WebSocket ({} sockets, one session)\n\n\
         | figure | value |\n|---|---:|\n\
         | gateway RSS before (one socket open) | {:.1} MB |\n\
         | gateway RSS with {} more open | {:.1} MB |\n\
         | **per socket** | **{:.1} KiB** ({:.0} B) |\n\
         | gateway RSS 2 s after they closed | {:.1} MB |\n\
         | time to open them (64 at a time) | {:.2} s ({:.0} µs gateway CPU each) |\n\n",
        plan.sockets,
        before as f64 / 1e6,
        plan.sockets,
        after as f64 / 1e6,
        per / 1024.0,
        per,
        closed as f64 / 1e6,
        open_time.as_secs_f64(),
        open_cpu.as_secs_f64() * 1e6 / plan.sockets as f64,
    )
}

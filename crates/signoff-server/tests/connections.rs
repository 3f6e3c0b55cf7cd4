//! Connections that never finish a request must not pile up: every phase
//! has a deadline, and under a low file-descriptor limit signed-in users
//! and sign-out still get through while silent clients are shed. A real
//! `signoff serve` process (started through `sh -c 'ulimit -n …'` where the
//! limit matters) in front of the Python upstream.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use support::{add_user, cookie, get, post_form, signoff_bin, spawn_reading_lines, Proc};
use support::{Upstream, PASSWORD, USER};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::rustls;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame.
const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

/// A `signoff serve` process, optionally under `ulimit -n`.
struct Server {
    proc: Proc,
    origin: String,
    addr: SocketAddr,
    /// The certificate, when it serves HTTPS.
    cert: Option<rustls::pki_types::CertificateDer<'static>>,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(upstream: &Upstream, nofile: Option<u64>, tls: bool, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}", dir.path().join("signoff.db").display());
        add_user(&db, USER, PASSWORD);
        add_user(&db, "bob", PASSWORD);
        let mut args: Vec<String> = [
            "serve",
            "--db",
            &db,
            "--upstream",
            &upstream.url(),
            "--listen",
            "127.0.0.1:0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let cert = tls.then(|| write_cert(dir.path(), &mut args));
        // `ulimit -n` sets the soft and the hard limit, so signoff cannot
        // raise it: the cap must keep it below.
        let script = match nofile {
            Some(n) => format!("ulimit -n {n} && exec \"$0\" \"$@\""),
            None => "exec \"$0\" \"$@\"".to_owned(),
        };
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(script)
            .arg(signoff_bin())
            .args(&args)
            .env("SIGNOFF_LOG", "info,signoff::access=warn")
            .env_remove("SIGNOFF_CONFIG");
        let (proc, lines) = spawn_reading_lines(cmd, dir.path().join("signoff.log"), 1);
        let origin = lines[0]
            .strip_prefix("signoff listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {lines:?}"))
            .trim_end_matches('/')
            .to_owned();
        let addr = origin.rsplit_once("//").unwrap().1.parse().unwrap();
        Server {
            proc,
            origin,
            addr,
            cert,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin)
    }
}

/// Writes a self-signed certificate for 127.0.0.1 and adds the TLS flags.
fn write_cert(dir: &Path, args: &mut Vec<String>) -> rustls::pki_types::CertificateDer<'static> {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    args.extend([
        "--tls-cert".to_owned(),
        cert_path.display().to_string(),
        "--tls-key".to_owned(),
        key_path.display().to_string(),
    ]);
    cert.cert.der().clone()
}

/// The ways a client can hold a connection without finishing a request.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// Connects and sends nothing.
    SilentTcp,
    /// Half of the HTTP/2 preface (before HTTP/1 vs HTTP/2 is decided).
    PartialPreface,
    /// The HTTP/2 preface and SETTINGS, then no stream.
    IdleHttp2,
    /// One HTTP/2 request, answered, then nothing.
    IdleHttp2AfterRequest,
    /// One HTTP/1.1 request, answered, then nothing (keep-alive).
    IdleHttp1AfterRequest,
    /// A request's headers a byte at a time.
    SlowHeaders,
    /// One HTTP/1.1 request, answered, then the next request's headers a
    /// byte at a time on the same connection (hyper's own header timer is
    /// off: the connection's idle deadline must close it).
    SlowHeadersAfterRequest,
    /// The login form's headers, then its body a byte at a time.
    SlowBody,
    /// The same with the logout form.
    SlowLogoutBody,
    /// Connects to the HTTPS port and never starts the handshake.
    SilentTls,
    /// A complete TLS handshake, then nothing.
    QuietTls,
}

/// One connection of `kind`, set up; returns it and when its deadline
/// started (its connect, or the end of its request).
async fn open(server: &Server, kind: Kind) -> (Box<dyn Conn>, Instant) {
    let start = Instant::now();
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let host = server.addr.to_string();
    match kind {
        Kind::SilentTcp | Kind::SilentTls => {}
        Kind::PartialPreface => tcp.write_all(&PREFACE[..16]).await.unwrap(),
        Kind::IdleHttp2 => {
            tcp.write_all(&[PREFACE, SETTINGS].concat()).await.unwrap();
        }
        Kind::IdleHttp2AfterRequest => {
            tcp.write_all(&[PREFACE, SETTINGS, &h2_get(&host, "/.signoff/healthz")].concat())
                .await
                .unwrap();
            // The answer is a HEADERS frame then DATA "ok\n" that ends the stream.
            read_until(&mut tcp, b"ok\n").await;
            return (Box::new(tcp), Instant::now());
        }
        Kind::IdleHttp1AfterRequest => {
            let req = format!("GET /.signoff/healthz HTTP/1.1\r\nhost: {host}\r\n\r\n");
            tcp.write_all(req.as_bytes()).await.unwrap();
            read_until(&mut tcp, b"ok\n").await;
            return (Box::new(tcp), Instant::now());
        }
        Kind::SlowHeaders => {
            let head = format!("GET /.signoff/healthz HTTP/1.1\r\nhost: {host}\r\nx-slow: ");
            tcp.write_all(head.as_bytes()).await.unwrap();
            return (trickle(tcp), start);
        }
        Kind::SlowHeadersAfterRequest => {
            let req = format!("GET /.signoff/healthz HTTP/1.1\r\nhost: {host}\r\n\r\n");
            tcp.write_all(req.as_bytes()).await.unwrap();
            read_until(&mut tcp, b"ok\n").await;
            let answered = Instant::now();
            let head = format!("GET /.signoff/healthz HTTP/1.1\r\nhost: {host}\r\nx-slow: ");
            tcp.write_all(head.as_bytes()).await.unwrap();
            return (trickle(tcp), answered);
        }
        Kind::SlowBody | Kind::SlowLogoutBody => {
            let form = if kind == Kind::SlowBody {
                "login"
            } else {
                "logout"
            };
            let head = format!(
                "POST /.signoff/{form} HTTP/1.1\r\nhost: {host}\r\n\
                 content-type: application/x-www-form-urlencoded\r\n\
                 content-length: 1000\r\n\r\nusername=a"
            );
            tcp.write_all(head.as_bytes()).await.unwrap();
            return (trickle(tcp), Instant::now());
        }
        Kind::QuietTls => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(server.cert.clone().unwrap()).unwrap();
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .expect("TLS handshake");
            return (Box::new(tls), start);
        }
    }
    (Box::new(tcp), start)
}

/// Sends a byte every 100 ms (at most 990), until the server closes.
fn trickle(tcp: TcpStream) -> Box<dyn Conn> {
    let (read, mut write) = tcp.into_split();
    tokio::spawn(async move {
        for _ in 0..990 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if write.write_all(b"a").await.is_err() {
                break;
            }
        }
    });
    Box::new(read)
}

trait Conn: AsyncRead + Unpin + Send {}
impl<T: AsyncRead + Unpin + Send> Conn for T {}

/// A GET as an HTTP/2 HEADERS frame on stream 1 that ends the stream
/// (HPACK: indexed `:method GET`, `:scheme http`; literal `:path`,
/// `:authority`).
fn h2_get(authority: &str, path: &str) -> Vec<u8> {
    h2_get_on(1, authority, path)
}

/// [`h2_get`] on another stream.
fn h2_get_on(stream: u32, authority: &str, path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x04, path.len() as u8];
    block.extend_from_slice(path.as_bytes());
    block.extend([0x01, authority.len() as u8]);
    block.extend_from_slice(authority.as_bytes());
    let len = block.len() as u32;
    let mut frame = len.to_be_bytes()[1..].to_vec();
    frame.extend([0x01, 0x05]);
    frame.extend(stream.to_be_bytes());
    frame.extend(block);
    frame
}

async fn read_until(tcp: &mut TcpStream, marker: &[u8]) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before answering: {seen:?}");
            seen.extend_from_slice(&buf[..n]);
            if seen.windows(marker.len()).any(|w| w == marker) {
                return;
            }
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "no answer: {}",
        String::from_utf8_lossy(&seen)
    );
}

/// Reads until the server closes `conn`; returns what it sent and when
/// it closed (`None` if still open at `give_up`).
async fn closed_at(mut conn: Box<dyn Conn>, give_up: Instant) -> (Vec<u8>, Option<Instant>) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(give_up, conn.read(&mut buf)).await {
            Err(_) => return (seen, None),
            Ok(Ok(0) | Err(_)) => return (seen, Some(Instant::now())),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// Lets the test process hold a few hundred sockets.
fn raise_own_fd_limit() {
    let _ = rlimit::increase_nofile_limit(4096);
}

const CLIENT_TIMEOUT: Duration = Duration::from_secs(1);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);
/// What closing may take beyond a deadline: HTTP/2's goodbye (up to 1 s)
/// and a busy machine.
const SLACK: Duration = Duration::from_millis(2500);

/// Invariant 9 (client input is hostile): each way of holding a
/// connection open without finishing a request is closed by the server
/// within its bound, and not before: 40 connections of each kind at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_silent_connection_is_closed_within_its_bound() {
    let Some(upstream) = Upstream::start() else {
        return;
    };
    raise_own_fd_limit();
    let flags = [
        "--client-timeout",
        "1s",
        "--keepalive-timeout",
        "2s",
        "--metrics",
    ];
    let plain = Server::start(&upstream, None, false, &flags);
    let tls = Server::start(&upstream, None, true, &flags);
    let kinds = [
        Kind::SilentTcp,
        Kind::PartialPreface,
        Kind::IdleHttp2,
        Kind::IdleHttp2AfterRequest,
        Kind::IdleHttp1AfterRequest,
        Kind::SlowHeaders,
        Kind::SlowHeadersAfterRequest,
        Kind::SlowBody,
        Kind::SlowLogoutBody,
        Kind::SilentTls,
        Kind::QuietTls,
    ];
    let mut waits = Vec::new();
    for kind in kinds {
        let server = match kind {
            Kind::SilentTls | Kind::QuietTls => &tls,
            _ => &plain,
        };
        let bound = match kind {
            Kind::IdleHttp2AfterRequest
            | Kind::IdleHttp1AfterRequest
            | Kind::SlowHeadersAfterRequest => KEEPALIVE_TIMEOUT,
            _ => CLIENT_TIMEOUT,
        };
        for _ in 0..40 {
            let (conn, start) = open(server, kind).await;
            let give_up = start + bound + SLACK;
            waits.push((kind, start, bound, tokio::spawn(closed_at(conn, give_up))));
        }
    }
    for (kind, start, bound, wait) in waits {
        let (seen, closed) = wait.await.unwrap();
        let Some(closed) = closed else {
            panic!(
                "{kind:?}: still open {:?} after its {bound:?} bound; signoff's log:\n{}",
                SLACK,
                plain.proc.log_text()
            );
        };
        let took = closed - start;
        assert!(
            took + Duration::from_millis(50) >= bound,
            "{kind:?}: closed after {took:?}, before its {bound:?} bound"
        );
        if matches!(kind, Kind::SlowBody | Kind::SlowLogoutBody) {
            let text = String::from_utf8_lossy(&seen);
            assert!(text.starts_with("HTTP/1.1 408 "), "{kind:?}: {text}");
        }
    }
    // Nothing was shed: the timeouts alone closed them.
    for server in [&plain, &tls] {
        let log = server.proc.log_text();
        assert!(!log.contains("accept failed"), "{log}");
        assert!(!log.contains("at the connection cap"), "{log}");
    }
    // On the plain port, silent TCP, half prefaces, both idle HTTP/2 kinds
    // and slow headers at least were closed by signoff's own deadlines
    // (slow bodies end with their 408; idle HTTP/1 by hyper's timer or
    // signoff's, whichever fires first).
    let metrics = get(&plain.url("/.signoff/metrics"), &[]).await.text();
    let timed_out = metrics
        .lines()
        .find_map(|l| l.strip_prefix("signoff_connections_timed_out_total "))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(timed_out.parse::<u64>().unwrap() >= 5 * 40, "{metrics}");
}

/// An HTTP/1.1 connection the test keeps open for several requests.
struct KeepAlive(hyper::client::conn::http1::SendRequest<Full<Bytes>>);

impl KeepAlive {
    async fn open(addr: SocketAddr) -> KeepAlive {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        KeepAlive(sender)
    }

    async fn get(&mut self, path: &str, token: &str) -> (u16, String) {
        let req = http::Request::get(path)
            .header("host", "127.0.0.1")
            .header("cookie", cookie(token))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(10), self.0.send_request(req))
            .await
            .expect("no answer in 10 s")
            .expect("the kept-alive connection failed");
        let status = reply.status().as_u16();
        let body = reply.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

/// Opens `n` connections of the kinds an attacker can open cheaply and
/// keeps them (the server may close them at any time).
async fn flood(server: &Server, n: usize) -> Vec<tokio::task::JoinHandle<()>> {
    let kinds = [
        Kind::SilentTcp,
        Kind::PartialPreface,
        Kind::IdleHttp2,
        Kind::SlowBody,
        Kind::SlowLogoutBody,
    ];
    let mut held = Vec::new();
    for i in 0..n {
        let (conn, _) = open(server, kinds[i % kinds.len()]).await;
        let give_up = Instant::now() + Duration::from_secs(60);
        held.push(tokio::spawn(async move {
            closed_at(conn, give_up).await;
        }));
    }
    held
}

/// Invariant 2 (logout is final) and 9: 300 silent connections, twice,
/// under `ulimit -n 256`. The client timeout is long, so only the cap and
/// shedding keep room: a signed-in user's kept-alive connection and new
/// connections still get answers, and sign-out works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_in_requests_and_logout_get_through_a_flood_under_a_low_fd_limit() {
    let Some(upstream) = Upstream::start() else {
        return;
    };
    raise_own_fd_limit();
    let server = Server::start(
        &upstream,
        Some(256),
        false,
        &["--client-timeout", "60s", "--metrics"],
    );
    let alice = support::login_at(&server.origin, USER, PASSWORD).await;
    let bob = support::login_at(&server.origin, "bob", PASSWORD).await;
    let mut kept = KeepAlive::open(server.addr).await;
    assert_eq!(kept.get("/before", &alice).await.0, 200);

    let mut held = Vec::new();
    for round in 0..2 {
        held.extend(flood(&server, 300).await);
        let (status, body) = kept.get("/kept-alive", &alice).await;
        assert_eq!(status, 200, "round {round}, kept-alive: {body}");
        assert!(body.contains("PRIVATE upstream page /kept-alive"), "{body}");
        let fresh = get(&server.url("/fresh"), &[("cookie", &cookie(&alice))]).await;
        assert_eq!(
            fresh.status,
            200,
            "round {round}, new connection: {}",
            fresh.text()
        );
    }
    // Sign-out on a new connection, in the middle of the flood.
    let out = post_form(
        &server.url("/.signoff/logout"),
        &[],
        &[("cookie", &cookie(&bob)), ("origin", &server.origin)],
    )
    .await;
    assert_eq!(out.status, 303, "{}", out.text());
    let after = get(&server.url("/private"), &[("cookie", &cookie(&bob))]).await;
    assert_eq!(after.status, 401, "bob's session outlived his sign-out");
    assert_eq!(kept.get("/after", &alice).await.0, 200);

    let metrics = get(&server.url("/.signoff/metrics"), &[]).await.text();
    let figure = |name: &str| -> u64 {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(&format!("signoff_connections_{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(figure("max"), 64);
    assert!(figure("open") <= 64, "{metrics}");
    assert!(figure("shed_total") >= 600 - 64, "{metrics}");
    assert_eq!(figure("refused_total"), 0, "{metrics}");
    let log = server.proc.log_text();
    assert!(log.contains("max_connections=64 fd_limit=256"), "{log}");
    assert!(log.contains("at the connection cap"), "{log}");
    assert!(!log.contains("accept failed"), "{log}");
    assert!(!log.to_lowercase().contains("too many open files"), "{log}");
    for h in held {
        h.abort();
    }
}

/// Invariant 2 and 9: HTTP/2 multiplies requests per connection, each of
/// which may hold an upstream connection. Anonymous clients opening
/// hundreds of streams for a large public body and never reading it, under
/// `ulimit -n 256`, must not run signoff out of descriptors: streams per
/// connection are capped, upstream slots are bounded (half for signed-in
/// requests), and sign-in, signed-in pages and sign-out keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_cannot_run_the_gateway_out_of_descriptors() {
    let Some(upstream) = Upstream::start() else {
        return;
    };
    raise_own_fd_limit();
    let server = Server::start(
        &upstream,
        Some(256),
        false,
        &["--client-timeout", "60s", "--public-path", "/public/"],
    );
    let host = server.addr.to_string();
    let mut attackers = Vec::new();
    for _ in 0..6 {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        let mut frames = [PREFACE, SETTINGS].concat();
        for stream in (1..200u32).step_by(2) {
            frames.extend(h2_get_on(stream, &host, "/public/big"));
        }
        tcp.write_all(&frames).await.unwrap();
        // Never read: the answers stay stuck in flow control.
        attackers.push(tcp);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let alice = support::login_at(&server.origin, USER, PASSWORD).await;
    let page = get(&server.url("/private"), &[("cookie", &cookie(&alice))]).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let out = post_form(
        &server.url("/.signoff/logout"),
        &[],
        &[("cookie", &cookie(&alice)), ("origin", &server.origin)],
    )
    .await;
    assert_eq!(out.status, 303, "{}", out.text());
    let after = get(&server.url("/private"), &[("cookie", &cookie(&alice))]).await;
    assert_eq!(after.status, 401);
    let log = server.proc.log_text();
    assert!(!log.contains("accept failed"), "{log}");
    assert!(!log.to_lowercase().contains("too many open files"), "{log}");
    drop(attackers);
}

/// Invariant 9: requests without a live session hold at most half of the
/// upstream slots (as many slots as `--max-connections`), wherever the
/// proxy finds them. Sixteen anonymous HTTP/2 streams for a large public
/// body that is never read, with `--max-connections 8`: four get a slot
/// and keep it, the other twelve are answered 503 once the wait for a slot
/// runs out, and a signed-in page still gets through. With no slots
/// counted, all sixteen would reach the upstream and no 503 would come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_requests_hold_at_most_half_the_upstream_slots() {
    let Some(upstream) = Upstream::start() else {
        return;
    };
    let server = Server::start(
        &upstream,
        None,
        false,
        &["--max-connections", "8", "--public-path", "/public/"],
    );
    let host = server.addr.to_string();
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let mut frames = [PREFACE, SETTINGS].concat();
    for stream in (1..32u32).step_by(2) {
        frames.extend(h2_get_on(stream, &host, "/public/big"));
    }
    tcp.write_all(&frames).await.unwrap();
    // Never read: the four answers that got a slot stay stuck in flow
    // control, and keep it.
    let refused = |log: &str| log.matches("no upstream slot free").count();
    // Twice the gateway's wait for a slot (UPSTREAM_SLOT_WAIT, 5 s).
    let deadline = Instant::now() + Duration::from_secs(10);
    while refused(&server.proc.log_text()) < 12 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let alice = support::login_at(&server.origin, USER, PASSWORD).await;
    let page = get(&server.url("/private"), &[("cookie", &cookie(&alice))]).await;
    assert_eq!(page.status, 200, "{}", page.text());
    let log = server.proc.log_text();
    assert_eq!(refused(&log), 12, "{log}");
    drop(tcp);
}

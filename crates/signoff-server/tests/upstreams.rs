//! Upstreams real apps need (docs/gateway.md): HTTPS upstreams checked
//! against `--upstream-ca` or the system's roots, `Location` headers that
//! point at the upstream rewritten to the public origin, time limits and
//! body limits that say which setting to change. A real `signoff serve`
//! process in front of a real upstream: the Python app, or an HTTPS server
//! in this test process (real TCP, real TLS, rcgen certificates).

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use support::{cookie, get, request, signoff_bin, Gateway, Upstream, PASSWORD, USER};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// A CA that signs the test upstream's certificates.
struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl TestCa {
    fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "signoff test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa { cert, key }
    }

    /// A leaf certificate for `names`, and its key.
    fn issue(&self, names: &[&str]) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = CertificateParams::new(names).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (
            cert.der().clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }

    /// Writes the CA certificate as PEM into `dir`; returns the path.
    fn write_pem(&self, dir: &std::path::Path) -> String {
        let path = dir.join("upstream-ca.pem");
        std::fs::write(&path, self.cert.pem()).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

/// An HTTPS upstream in this process, stopped when dropped. It answers
/// `/redirect` with a 302 to its own absolute URL and everything else with
/// JSON naming the path and the `Host` it was sent.
struct TlsUpstream {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsUpstream {
    async fn start(cert: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> TlsUpstream {
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A refused handshake is what some tests expect.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |req| answer(req, addr));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        TlsUpstream { addr, task }
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

async fn answer(
    req: Request<Incoming>,
    addr: SocketAddr,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    if req.uri().path() == "/redirect" {
        return Ok(Response::builder()
            .status(StatusCode::FOUND)
            .header("location", format!("https://{addr}/private?x=1"))
            .body(Full::new(Bytes::new()))
            .unwrap());
    }
    let host = req
        .headers()
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let forwarded_host = req
        .headers()
        .get("x-forwarded-host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let body = serde_json::json!({
        "over": "tls",
        "path": req.uri().path(),
        "host": host,
        "x_forwarded_host": forwarded_host,
        "user": req.headers().get("x-signoff-user").and_then(|v| v.to_str().ok()),
    });
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap())
}

/// Lower case without spaces, to find rustls's reason however it is
/// written ("UnknownIssuer", "unknown issuer").
fn squeezed(text: &str) -> String {
    text.to_ascii_lowercase().replace([' ', '_'], "")
}

/// Waits up to 5 s for the gateway's log to contain `needle`.
async fn log_shows(gw: &Gateway, needle: &str) -> String {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let log = gw.proc.log_text();
        if log.contains(needle) || Instant::now() > until {
            return log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_https_upstream_is_verified_against_upstream_ca() {
    let ca = TestCa::new();
    let (cert, key) = ca.issue(&["127.0.0.1"]);
    let upstream = TlsUpstream::start(cert, key).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_path = ca.write_pem(dir.path());
    let gw = Gateway::start(&upstream.url(), &["--upstream-ca", &ca_path]);
    let token = gw.login(USER, PASSWORD).await;
    let c = cookie(&token);

    let r = get(&gw.url("/hello"), &[("cookie", &c)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = r.json();
    assert_eq!(seen["over"], "tls");
    assert_eq!(seen["path"], "/hello");
    assert_eq!(seen["user"], USER);
    // The upstream's own name as Host (and SNI); the public one beside it.
    assert_eq!(seen["host"], upstream.addr.to_string());
    assert_eq!(
        seen["x_forwarded_host"],
        gw.origin.trim_start_matches("http://")
    );

    // A redirect to the upstream's own https origin comes back public.
    let r = get(&gw.url("/redirect"), &[("cookie", &c)]).await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some(format!("{}/private?x=1", gw.origin).as_str())
    );
}

#[tokio::test]
async fn an_unverifiable_upstream_certificate_is_a_502_with_a_clear_log() {
    let ca = TestCa::new();
    let (cert, key) = ca.issue(&["127.0.0.1"]);
    let upstream = TlsUpstream::start(cert, key).await;
    // Without --upstream-ca: the system's roots do not know the test CA.
    let gw = Gateway::start(&upstream.url(), &[]);
    let token = gw.login(USER, PASSWORD).await;
    let r = get(&gw.url("/hello"), &[("cookie", &cookie(&token))]).await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("not reachable"), "{}", r.text());
    assert!(!r.text().contains("\"over\""));
    let log = log_shows(&gw, "could not be verified").await;
    let line = log
        .lines()
        .find(|l| l.contains("certificate could not be verified"))
        .unwrap_or_else(|| panic!("no certificate line in the log:\n{log}"));
    eprintln!("the log says: {line}");
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("--upstream-ca"), "{line}");
    assert!(
        squeezed(line).contains("unknownissuer"),
        "rustls's reason: {line}"
    );
}

#[tokio::test]
async fn a_certificate_for_another_host_is_refused() {
    let ca = TestCa::new();
    let (cert, key) = ca.issue(&["other.example"]);
    let upstream = TlsUpstream::start(cert, key).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_path = ca.write_pem(dir.path());
    let gw = Gateway::start(&upstream.url(), &["--upstream-ca", &ca_path]);
    let token = gw.login(USER, PASSWORD).await;
    let r = get(&gw.url("/hello"), &[("cookie", &cookie(&token))]).await;
    assert_eq!(r.status, 502, "{}", r.text());
    let log = log_shows(&gw, "could not be verified").await;
    let line = log
        .lines()
        .find(|l| l.contains("certificate could not be verified"))
        .unwrap_or_else(|| panic!("no certificate line in the log:\n{log}"));
    eprintln!("the log says: {line}");
    assert!(
        squeezed(line).contains("notvalidforname"),
        "rustls's reason: {line}"
    );
    assert!(line.contains(&ca_path), "names the CA file: {line}");
}

#[tokio::test]
async fn a_missing_or_empty_upstream_ca_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let missing = dir.path().join("missing.pem");
    for (ca, expected) in [(&missing, "cannot read"), (&empty, "no certificate")] {
        let out = std::process::Command::new(signoff_bin())
            .args(["serve", "--upstream", "https://127.0.0.1:9", "--listen"])
            .arg("127.0.0.1:0")
            .arg("--db")
            .arg(format!("sqlite://{}", dir.path().join("s.db").display()))
            .arg("--upstream-ca")
            .arg(ca)
            .env_remove("SIGNOFF_CONFIG")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{ca:?} started");
        assert!(
            err.contains("--upstream-ca") && err.contains(expected),
            "{ca:?}: {err}"
        );
    }
}

#[tokio::test]
async fn redirects_to_the_upstreams_own_origin_are_rewritten() {
    let Some(up) = Upstream::start() else { return };
    let gw = Gateway::start(&up.url(), &[]);
    let token = gw.login(USER, PASSWORD).await;
    let c = cookie(&token);
    let r = get(&gw.url("/redirect-absolute"), &[("cookie", &c)]).await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some(format!("{}/private?from=redirect#top", gw.origin).as_str())
    );
    assert_eq!(
        r.header("content-location"),
        Some(format!("{}/redirect-absolute", gw.origin).as_str())
    );
    assert_eq!(
        r.header("refresh"),
        Some(format!("0; url={}/private", gw.origin).as_str())
    );
    // Another origin is left alone.
    let r = get(&gw.url("/redirect-elsewhere"), &[("cookie", &c)]).await;
    assert_eq!(r.header("location"), Some("http://127.0.0.1:1/elsewhere"));
}

#[tokio::test]
async fn a_body_over_the_limit_names_the_setting() {
    let Some(up) = Upstream::start() else { return };
    let gw = Gateway::start(&up.url(), &["--max-body-bytes", "1000"]);
    let token = gw.login(USER, PASSWORD).await;
    let r = request(
        Method::POST,
        &gw.url("/echo"),
        &[("cookie", &cookie(&token))],
        Some(("application/octet-stream", vec![1; 2000])),
    )
    .await;
    assert_eq!(r.status, 413);
    assert!(
        r.text().contains("max_body_bytes") && r.text().contains("1000 bytes"),
        "{}",
        r.text()
    );
    let log = log_shows(&gw, "max_body_bytes (1000 bytes)").await;
    let line = log
        .lines()
        .find(|l| l.contains("max_body_bytes (1000 bytes)"))
        .unwrap_or_else(|| panic!("no 413 line in the log:\n{log}"));
    assert!(
        line.contains("WARN") && line.contains("--max-body-bytes"),
        "{line}"
    );
}

/// JupyterLab uploads a file under 15 MB as one JSON request of about
/// 20 MB (base64): the default limit lets it through.
#[tokio::test]
async fn the_default_limit_takes_a_jupyterlab_upload() {
    let Some(up) = Upstream::start() else { return };
    let gw = Gateway::start(&up.url(), &[]);
    let token = gw.login(USER, PASSWORD).await;
    let size = 20 * 1024 * 1024;
    let r = request(
        Method::POST,
        &gw.url("/echo"),
        &[("cookie", &cookie(&token))],
        Some(("application/json", vec![b'A'; size])),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["body_size"], size);
}

#[tokio::test]
async fn a_slow_upstream_gets_504_naming_upstream_timeout() {
    let Some(up) = Upstream::start() else { return };
    let gw = Gateway::start(&up.url(), &["--upstream-timeout", "1s"]);
    let token = gw.login(USER, PASSWORD).await;
    let started = Instant::now();
    let r = get(&gw.url("/slow"), &[("cookie", &cookie(&token))]).await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(started.elapsed() < Duration::from_millis(2500));
    assert!(r.text().contains("upstream_timeout"), "{}", r.text());
    let log = log_shows(&gw, "--upstream-timeout").await;
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("within 1s")
            && l.contains("--upstream-timeout")),
        "{log}"
    );
}

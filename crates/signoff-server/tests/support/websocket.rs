//! An upstream app that speaks WebSocket and streams: a real HTTP/1.1
//! server on a loopback port (hyper, tokio-tungstenite), run inside the
//! test process so tests can see what it received.
//!
//! - `GET /ws/...` with `Upgrade: websocket`: echoes every text and binary
//!   message; the text `headers` is answered with the upgrade request's
//!   headers as JSON; the text `ticks` starts a ping and a message `tick N`
//!   every 100 ms. The close code it receives is recorded.
//! - an upgrade at `/switch-elsewhere`: 101 to `h2c`, whatever was asked.
//! - `GET /events`: server-sent events, `data: N` every 100 ms.
//! - `GET /page`: an HTML page whose script opens `/ws/page` and records
//!   what happens to it in `window.socketLog`.
//! - anything else: 200 `hello`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client's socket.
pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket at `origin` (`http://host:port`) + `path`, with these
/// extra request headers.
pub async fn connect(
    origin: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Socket, WsError> {
    let url = format!("{}{path}", origin.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let (socket, _) = tokio_tungstenite::connect_async(request).await?;
    Ok(socket)
}

/// Sends `text` and returns the echo.
pub async fn echo(socket: &mut Socket, text: &str) -> String {
    socket.send(Message::text(text)).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if !t.as_str().starts_with("tick ") => {
                return t.as_str().to_owned()
            }
            Ok(Some(Ok(Message::Text(_)))) => continue,
            other => panic!("no echo: {other:?}"),
        }
    }
}

/// Waits for the close frame; returns its code, its reason and how long
/// it took. Panics if the socket breaks, ends without one, or stays open
/// for `within` and 2 s more.
pub async fn next_close(socket: &mut Socket, within: Duration) -> (u16, String, Duration) {
    let started = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + within + Duration::from_secs(2);
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                let took = started.elapsed();
                return (
                    u16::from(frame.code),
                    frame.reason.as_str().to_owned(),
                    took,
                );
            }
            Ok(Some(Ok(Message::Close(None)))) => panic!("closed without a code"),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => panic!("the socket broke instead of closing: {e}"),
            Ok(None) => panic!("the socket ended without a close frame"),
            Err(_) => panic!("the socket stayed open for {:?}", started.elapsed()),
        }
    }
}

type BoxBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// What the upstream saw.
#[derive(Default, Debug)]
pub struct Seen {
    /// Headers of every upgrade request, in order.
    pub upgrades: Vec<BTreeMap<String, String>>,
    /// Close codes received from the gateway (or the client through it).
    pub close_codes: Vec<u16>,
    /// Sockets whose connection ended, for any reason.
    pub ended: usize,
}

/// The running upstream; stops when dropped.
pub struct WsUpstream {
    pub port: u16,
    pub seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WsUpstream {
    pub async fn start() -> WsUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = seen.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                // Small messages go out at once, as from a real server.
                let _ = stream.set_nodelay(true);
                let seen = shared.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let seen = seen.clone();
                        async move { Ok::<_, Infallible>(answer(req, seen)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        WsUpstream { port, seen, task }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap()
    }
}

fn answer(mut req: Request<Incoming>, seen: Arc<Mutex<Seen>>) -> Response<BoxBody> {
    let path = req.uri().path().to_owned();
    if req.headers().contains_key(header::UPGRADE) {
        return upgrade(&mut req, seen);
    }
    match path.as_str() {
        "/events" => {
            let stream = futures_util::stream::unfold(0u64, |n| async move {
                if n > 0 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let event = Bytes::from(format!("data: {n}\n\n"));
                Some((Ok::<_, Infallible>(Frame::data(event)), n + 1))
            });
            Response::builder()
                .header(header::CONTENT_TYPE, "text/event-stream")
                .header(header::CACHE_CONTROL, "no-cache")
                .body(BodyExt::boxed(StreamBody::new(stream)))
                .unwrap()
        }
        // A private page that streams for ever: its head at once, then a
        // line every 100 ms (a build log, a live report).
        "/streaming-page" => {
            let stream = futures_util::stream::unfold(0u64, |n| async move {
                let part = if n == 0 {
                    "<!doctype html><html><head><title>live</title></head><body>".to_owned()
                } else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    format!("<p>line {n}</p>")
                };
                Some((Ok::<_, Infallible>(Frame::data(Bytes::from(part))), n + 1))
            });
            Response::builder()
                .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
                .body(BodyExt::boxed(StreamBody::new(stream)))
                .unwrap()
        }
        "/page" => Response::builder()
            .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
            .body(full(PAGE))
            .unwrap(),
        _ => Response::builder()
            .header(header::CONTENT_TYPE, "text/plain")
            .body(full("hello"))
            .unwrap(),
    }
}

const PAGE: &str = r#"<!doctype html>
<html><head><title>socket page</title></head>
<body><p id="state">opening</p>
<script>
window.socketLog = [];
var ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/page");
ws.onopen = function () { window.socketLog.push("open"); ws.send("hello"); document.getElementById("state").textContent = "open"; };
ws.onmessage = function (e) { window.socketLog.push("message:" + e.data); };
ws.onclose = function (e) { window.socketLog.push("close:" + e.code + ":" + e.reason); document.getElementById("state").textContent = "closed " + e.code; };
ws.onerror = function () { window.socketLog.push("error"); };
</script></body></html>"#;

fn full(text: &'static str) -> BoxBody {
    BodyExt::boxed(Full::new(Bytes::from_static(text.as_bytes())))
}

fn upgrade(req: &mut Request<Incoming>, seen: Arc<Mutex<Seen>>) -> Response<BoxBody> {
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    if req.uri().path() == "/switch-elsewhere" {
        // A misbehaving upstream: it switches to what nobody asked for.
        seen.lock().unwrap().upgrades.push(headers);
        return Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "h2c")
            .body(full(""))
            .unwrap();
    }
    let Some(key) = req.headers().get("sec-websocket-key") else {
        return Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .body(full("not a websocket"))
            .unwrap();
    };
    let accept = derive_accept_key(key.as_bytes());
    let protocol = req.headers().get("sec-websocket-protocol").cloned();
    seen.lock().unwrap().upgrades.push(headers.clone());
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        serve_socket(ws, headers, &seen).await;
        seen.lock().unwrap().ended += 1;
    });
    let mut response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header("sec-websocket-accept", accept);
    if let Some(protocol) = protocol {
        // The first one offered.
        let first = protocol
            .to_str()
            .unwrap_or("")
            .split(',')
            .next()
            .unwrap_or("")
            .trim()
            .to_owned();
        response = response.header("sec-websocket-protocol", first);
    }
    response.body(full("")).unwrap()
}

async fn serve_socket<S>(
    ws: WebSocketStream<S>,
    headers: BTreeMap<String, String>,
    seen: &Mutex<Seen>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    let mut ticks: Option<tokio::time::Interval> = None;
    let mut n = 0u64;
    loop {
        let tick = async {
            match ticks.as_mut() {
                Some(t) => {
                    t.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            message = stream.next() => match message {
                Some(Ok(Message::Text(text))) if text.as_str() == "headers" => {
                    let json = serde_json::to_string(&headers).unwrap();
                    if sink.send(Message::text(json)).await.is_err() { return; }
                }
                Some(Ok(Message::Text(text))) if text.as_str() == "ticks" => {
                    ticks = Some(tokio::time::interval(Duration::from_millis(100)));
                }
                Some(Ok(Message::Text(text))) => {
                    if sink.send(Message::Text(text)).await.is_err() { return; }
                }
                Some(Ok(Message::Binary(data))) => {
                    if sink.send(Message::Binary(data)).await.is_err() { return; }
                }
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.as_ref().map_or(1005, |f| u16::from(f.code));
                    seen.lock().unwrap().close_codes.push(code);
                    let _ = sink.close().await;
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            },
            () = tick => {
                // A ping too, as many servers send: the client's pongs are
                // not activity of its session.
                if sink.send(Message::Ping(Bytes::new())).await.is_err() { return; }
                if sink.send(Message::text(format!("tick {n}"))).await.is_err() { return; }
                n += 1;
            }
        }
    }
}

//! A minimal upstream for load benchmarks: HTTP/1.1, every request gets the
//! same small page.
//!
//! `cargo run --release -p signoff-server --example bench_upstream -- 127.0.0.1:9001 [CONTENT-TYPE]`
//!
//! CONTENT-TYPE defaults to `text/html` (so the gateway injects its guard);
//! pass `text/plain` to measure the gateway without the rewrite.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// About 200 bytes of HTML.
const PAGE: &str = "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>bench</title></head>\n\
<body><h1>Hello</h1><p>A small fixed page served by the benchmark upstream, about two hundred bytes long.</p></body></html>\n";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:9001".to_owned());
    let content_type = args.next().unwrap_or_else(|| "text/html".to_owned());
    let content_type = HeaderValue::from_str(&content_type)?;
    let listener = TcpListener::bind(&listen).await?;
    println!("bench_upstream listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let content_type = content_type.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_req: Request<hyper::body::Incoming>| {
                let mut response = Response::new(Full::new(Bytes::from_static(PAGE.as_bytes())));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, content_type.clone());
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

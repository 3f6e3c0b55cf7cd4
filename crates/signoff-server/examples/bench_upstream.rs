//! A minimal upstream for load benchmarks: HTTP/1.1, every request gets the
//! same small page.
//!
//! `cargo run --release -p signoff-server --example bench_upstream -- 127.0.0.1:9001 [CONTENT-TYPE [CODING]]`
//!
//! CONTENT-TYPE defaults to `text/html` (so the gateway injects its guard);
//! pass `text/plain` to measure the gateway without the rewrite. With a
//! CODING (`identity`, `gzip` or `zstd`) it serves a larger page, about
//! 16 KiB of HTML, compressed once at start in that coding whatever the
//! client asks: the guard's decode and re-compression at work.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_ENCODING, CONTENT_TYPE};
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
    let (page, coding) = match args.next() {
        None => (Bytes::from_static(PAGE.as_bytes()), None),
        Some(coding) => (
            large_page(&coding).await?,
            Some(HeaderValue::from_str(&coding)?),
        ),
    };
    let listener = TcpListener::bind(&listen).await?;
    println!("bench_upstream listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let content_type = content_type.clone();
        let (page, coding) = (page.clone(), coding.clone());
        tokio::spawn(async move {
            let service = service_fn(move |_req: Request<hyper::body::Incoming>| {
                let mut response = Response::new(Full::new(page.clone()));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, content_type.clone());
                if let Some(coding) = coding.clone().filter(|c| c != "identity") {
                    response.headers_mut().insert(CONTENT_ENCODING, coding);
                }
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// About 16 KiB of varied HTML, in `coding`.
async fn large_page(coding: &str) -> Result<Bytes, Box<dyn std::error::Error>> {
    use async_compression::tokio::bufread::{GzipEncoder, ZstdEncoder};
    use tokio::io::AsyncReadExt as _;
    let mut html = String::from(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>bench</title></head><body>\n",
    );
    let mut n: u32 = 1;
    while html.len() < 16 * 1024 {
        n = n.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        html.push_str(&format!(
            "<tr><td class=\"id\">{}</td><td>Item {} of the order, {} units</td></tr>\n",
            n % 100_000,
            n % 977,
            n % 13
        ));
    }
    html.push_str("</body></html>\n");
    let mut out = Vec::new();
    match coding {
        "identity" => out = html.into_bytes(),
        "gzip" => {
            GzipEncoder::new(html.as_bytes())
                .read_to_end(&mut out)
                .await?;
        }
        "zstd" => {
            ZstdEncoder::new(html.as_bytes())
                .read_to_end(&mut out)
                .await?;
        }
        other => return Err(format!("unknown coding {other:?}: identity, gzip or zstd").into()),
    }
    Ok(Bytes::from(out))
}

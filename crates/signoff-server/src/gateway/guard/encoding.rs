//! Content codings around the guard: what the upstream may be asked for,
//! decoding what it sends (bounded), and compressing the rewritten page
//! again for the client.
//!
//! The guard can only be placed in a page it can read. So on requests
//! whose answer may get the guard, the upstream is offered only the codings
//! decoded here ([`for_upstream`]), and a page in any other coding is
//! refused by the caller rather than sent without the guard.

use std::io;

use async_compression::tokio::bufread::{
    BrotliDecoder, DeflateDecoder, GzipDecoder, ZlibDecoder, ZstdDecoder,
};
use async_compression::tokio::write::{BrotliEncoder, GzipEncoder, ZstdEncoder};
use async_compression::Level;
use axum::body::Body;
use bytes::Bytes;
use futures_util::stream::{self, BoxStream};
use futures_util::{StreamExt as _, TryStreamExt as _};
use http::header::{self, HeaderMap, HeaderValue};
use tokio::io::AsyncWriteExt as _;
use tokio_util::io::{ReaderStream, StreamReader};

/// Read size for decompressed output.
const DECODE_CHUNK: usize = 16 * 1024;

/// Most bytes a compressed page may decode to. Past it the body ends with
/// an error: 1 MB of gzip can hold 1 GB of HTML, and every byte would be
/// parsed, counted and compressed again.
pub const MAX_DECODED_BYTES: u64 = 64 * 1024 * 1024;

/// The codings [`decode`] reads, as offered to the upstream for `*`.
const DECODABLE: [&str; 4] = ["zstd", "br", "gzip", "deflate"];

/// A content coding the guard can read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Coding {
    #[default]
    Identity,
    Gzip,
    Deflate,
    Brotli,
    Zstd,
}

impl Coding {
    fn parse(token: &str) -> Option<Coding> {
        let is = |name: &str| token.eq_ignore_ascii_case(name);
        if is("identity") {
            Some(Coding::Identity)
        } else if is("gzip") || is("x-gzip") {
            Some(Coding::Gzip)
        } else if is("deflate") {
            Some(Coding::Deflate)
        } else if is("br") {
            Some(Coding::Brotli)
        } else if is("zstd") {
            Some(Coding::Zstd)
        } else {
            None
        }
    }

    /// The `Content-Encoding` token.
    pub fn name(self) -> &'static str {
        match self {
            Coding::Identity => "identity",
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
        }
    }
}

/// A body coding the guard cannot read: its `Content-Encoding` text (at
/// most 64 visible ASCII characters, for messages and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported(pub String);

/// The body's single content coding, ignoring `identity` entries; several
/// stacked codings count as unsupported.
pub fn content_coding(headers: &HeaderMap) -> Result<Coding, Unsupported> {
    let unsupported = || {
        let text: String = headers
            .get_all(header::CONTENT_ENCODING)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", ")
            .chars()
            .filter(|c| c.is_ascii_graphic() || *c == ' ')
            .take(64)
            .collect();
        Unsupported(text)
    };
    let mut coding = Coding::Identity;
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let value = value.to_str().map_err(|_| unsupported())?;
        for token in value.split(',').map(str::trim) {
            if token.is_empty() || token.eq_ignore_ascii_case("identity") {
                continue;
            }
            if coding != Coding::Identity {
                return Err(unsupported());
            }
            coding = Coding::parse(token).ok_or_else(unsupported)?;
        }
    }
    Ok(coding)
}

/// One `Accept-Encoding` entry: a coding (lower case, or `*`) and its
/// weight in thousandths.
struct Accepted {
    coding: String,
    weight: u16,
}

/// The client's `Accept-Encoding` entries; entries with a malformed
/// weight are dropped, as RFC 9110 allows.
fn accepted(headers: &HeaderMap) -> Vec<Accepted> {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|entry| {
            let mut parts = entry.split(';').map(str::trim);
            let coding = parts.next().filter(|c| !c.is_empty())?.to_ascii_lowercase();
            let mut weight = 1000;
            for param in parts {
                let (name, value) = param.split_once('=')?;
                if name.trim().eq_ignore_ascii_case("q") {
                    weight = parse_weight(value.trim())?;
                }
            }
            Some(Accepted { coding, weight })
        })
        .collect()
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in thousandths.
fn parse_weight(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths: u16 = format!("{fraction:0<3}").parse().ok()?;
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// The weight the client gives `coding` (`x-gzip` counts as `gzip`, and `*`
/// stands for every coding not listed).
fn weight_of(entries: &[Accepted], coding: Coding) -> u16 {
    let named = entries
        .iter()
        .filter(|e| Coding::parse(&e.coding) == Some(coding))
        .map(|e| e.weight)
        .max();
    named
        .or_else(|| entries.iter().find(|e| e.coding == "*").map(|e| e.weight))
        .unwrap_or(0)
}

/// The `Accept-Encoding` to send upstream for a request whose answer may
/// get the guard: the client's own choices, limited to the codings the
/// guard can read (`*` spelled out as those), with their weights. With none
/// left, `identity`. Codings the client refuses stay refused, so a body
/// passed through untouched (not HTML) is still one the client can read.
pub fn for_upstream(client: &HeaderMap) -> HeaderValue {
    let entries = accepted(client);
    let mut offered: Vec<String> = Vec::new();
    for coding in DECODABLE {
        let Some(parsed) = Coding::parse(coding) else {
            continue;
        };
        let weight = weight_of(&entries, parsed);
        if weight > 0 {
            offered.push(if weight == 1000 {
                coding.to_owned()
            } else {
                format!("{coding};q={}", format_weight(weight))
            });
        }
    }
    if offered.is_empty() {
        return HeaderValue::from_static("identity");
    }
    HeaderValue::from_str(&offered.join(", "))
        .unwrap_or_else(|_| HeaderValue::from_static("identity"))
}

fn format_weight(weight: u16) -> String {
    let text = format!("0.{weight:03}");
    text.trim_end_matches('0').to_owned()
}

/// The coding to compress a rewritten page with: the best the client
/// accepts among zstd, br and gzip (in that order on equal weights), or
/// identity.
pub fn for_client(client: &HeaderMap) -> Coding {
    let entries = accepted(client);
    let mut best = (0, Coding::Identity);
    for coding in [Coding::Zstd, Coding::Brotli, Coding::Gzip] {
        let weight = weight_of(&entries, coding);
        if weight > best.0 {
            best = (weight, coding);
        }
    }
    best.1
}

pub type ByteStream = BoxStream<'static, io::Result<Bytes>>;

/// The body's decoded bytes, at most [`MAX_DECODED_BYTES`] of them.
/// Decoding starts at the first non-empty chunk, so an empty compressed
/// body decodes to nothing rather than an error.
pub fn decode(body: Body, coding: Coding) -> ByteStream {
    let raw = body.into_data_stream().map_err(io::Error::other).boxed();
    if coding == Coding::Identity {
        return raw;
    }
    let decoded = stream::once(async move {
        let mut raw = raw;
        let first = loop {
            match raw.next().await {
                Some(Ok(chunk)) if chunk.is_empty() => continue,
                Some(Ok(chunk)) => break chunk,
                Some(Err(error)) => return stream::iter([Err(error)]).boxed(),
                None => return stream::empty().boxed(),
            }
        };
        // "deflate" is meant to be zlib-wrapped, but some servers send raw
        // deflate; browsers accept both, so tell them apart like they do.
        let zlib = looks_like_zlib(&first);
        let reader = StreamReader::new(stream::iter([Ok(first)]).chain(raw));
        match coding {
            Coding::Gzip => {
                let mut decoder = GzipDecoder::new(reader);
                decoder.multiple_members(true);
                ReaderStream::with_capacity(decoder, DECODE_CHUNK).boxed()
            }
            Coding::Deflate if zlib => {
                ReaderStream::with_capacity(ZlibDecoder::new(reader), DECODE_CHUNK).boxed()
            }
            Coding::Deflate => {
                ReaderStream::with_capacity(DeflateDecoder::new(reader), DECODE_CHUNK).boxed()
            }
            Coding::Brotli => {
                ReaderStream::with_capacity(BrotliDecoder::new(reader), DECODE_CHUNK).boxed()
            }
            Coding::Zstd => {
                // Browsers accept windows up to 8 MiB (RFC 8878 §3.1.1.1.2
                // for HTTP); the library's default would allow 128 MiB per
                // response.
                let params = [async_compression::zstd::DParameter::window_log_max(23)];
                let mut decoder = ZstdDecoder::with_params(reader, &params);
                decoder.multiple_members(true);
                ReaderStream::with_capacity(decoder, DECODE_CHUNK).boxed()
            }
            Coding::Identity => reader.into_inner().boxed(),
        }
    })
    .flatten();
    let mut total: u64 = 0;
    decoded
        .map(move |chunk| {
            let chunk = chunk?;
            total += chunk.len() as u64;
            if total > MAX_DECODED_BYTES {
                return Err(io::Error::other(format!(
                    "pageshow guard: the page decodes to more than {MAX_DECODED_BYTES} bytes"
                )));
            }
            Ok(chunk)
        })
        .boxed()
}

/// A zlib header: compression method 8, window ≤ 32 KiB, check bits valid.
fn looks_like_zlib(bytes: &[u8]) -> bool {
    match *bytes {
        [cmf, flg, ..] => {
            cmf & 0x0f == 8 && cmf >> 4 <= 7 && ((u16::from(cmf) << 8) | u16::from(flg)) % 31 == 0
        }
        // Too little to tell: zlib is what the standard says.
        _ => true,
    }
}

/// A streaming encoder into memory.
enum Encoder {
    Gzip(GzipEncoder<Vec<u8>>),
    Brotli(Box<BrotliEncoder<Vec<u8>>>),
    Zstd(ZstdEncoder<Vec<u8>>),
}

impl Encoder {
    fn new(coding: Coding) -> Option<Encoder> {
        Some(match coding {
            Coding::Gzip => Encoder::Gzip(GzipEncoder::with_quality(Vec::new(), Level::Default)),
            // Quality 4: about gzip's speed, with brotli's better ratio.
            Coding::Brotli => Encoder::Brotli(Box::new(BrotliEncoder::with_quality(
                Vec::new(),
                Level::Precise(4),
            ))),
            Coding::Zstd => Encoder::Zstd(ZstdEncoder::with_quality(Vec::new(), Level::Default)),
            Coding::Identity | Coding::Deflate => return None,
        })
    }

    fn writer(&mut self) -> &mut (dyn tokio::io::AsyncWrite + Unpin + Send) {
        match self {
            Encoder::Gzip(e) => e,
            Encoder::Brotli(e) => e.as_mut(),
            Encoder::Zstd(e) => e,
        }
    }

    /// The compressed bytes produced so far.
    fn take(&mut self) -> Vec<u8> {
        std::mem::take(match self {
            Encoder::Gzip(e) => e.get_mut(),
            Encoder::Brotli(e) => e.get_mut(),
            Encoder::Zstd(e) => e.get_mut(),
        })
    }

    /// Compresses `chunk` and flushes, so a page that streams keeps
    /// streaming; returns the compressed bytes produced.
    async fn chunk(&mut self, chunk: &[u8]) -> io::Result<Vec<u8>> {
        self.writer().write_all(chunk).await?;
        self.writer().flush().await?;
        Ok(self.take())
    }

    /// Ends the stream; returns the last bytes.
    async fn finish(&mut self) -> io::Result<Vec<u8>> {
        self.writer().shutdown().await?;
        Ok(self.take())
    }
}

/// `input` compressed with `coding` (gzip, br or zstd; anything else is
/// returned as it is), flushed after every input chunk.
pub fn encode(input: ByteStream, coding: Coding) -> ByteStream {
    let Some(encoder) = Encoder::new(coding) else {
        return input;
    };
    stream::try_unfold((input, Some(encoder)), |(mut input, encoder)| async move {
        let Some(mut encoder) = encoder else {
            return Ok(None);
        };
        loop {
            match input.next().await {
                Some(Ok(chunk)) => {
                    let out = encoder.chunk(&chunk).await?;
                    if !out.is_empty() {
                        return Ok(Some((Bytes::from(out), (input, Some(encoder)))));
                    }
                }
                Some(Err(error)) => return Err(error),
                None => {
                    let out = encoder.finish().await?;
                    return Ok(Some((Bytes::from(out), (input, None))));
                }
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_compression::tokio::bufread::{
        BrotliEncoder as BrotliReadEncoder, GzipEncoder as GzipReadEncoder,
        ZstdEncoder as ZstdReadEncoder,
    };
    use tokio::io::AsyncReadExt as _;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).unwrap(),
        );
        headers
    }

    #[test]
    fn the_upstream_is_offered_only_what_the_guard_reads() {
        for (client, upstream) in [
            // Chromium 156.
            ("gzip, deflate, br, zstd", "zstd, br, gzip, deflate"),
            (
                "gzip, deflate, br, zstd, dcb, dcz",
                "zstd, br, gzip, deflate",
            ),
            ("zstd;q=1.0, gzip;q=0.5", "zstd, gzip;q=0.5"),
            ("x-gzip", "gzip"),
            ("*", "zstd, br, gzip, deflate"),
            ("*;q=0.3, gzip", "zstd;q=0.3, br;q=0.3, gzip, deflate;q=0.3"),
            ("br;q=0, *", "zstd, gzip, deflate"),
            ("compress, dcz, lz4", "identity"),
            ("identity", "identity"),
            ("", "identity"),
            ("gzip;q=2, br;q=0.x, zstd;q=0.001", "zstd;q=0.001"),
            ("GZIP ; Q=0.8", "gzip;q=0.8"),
        ] {
            assert_eq!(for_upstream(&accept(client)), upstream, "{client:?}");
        }
        assert_eq!(for_upstream(&HeaderMap::new()), "identity");
    }

    #[test]
    fn the_client_gets_its_best_coding() {
        for (client, coding) in [
            ("gzip, deflate, br, zstd", Coding::Zstd),
            ("gzip, deflate, br", Coding::Brotli),
            ("gzip, deflate", Coding::Gzip),
            ("deflate", Coding::Identity),
            ("gzip;q=1, zstd;q=0.5", Coding::Gzip),
            ("*", Coding::Zstd),
            ("*, zstd;q=0", Coding::Brotli),
            ("identity", Coding::Identity),
        ] {
            assert_eq!(for_client(&accept(client)), coding, "{client:?}");
        }
        assert_eq!(for_client(&HeaderMap::new()), Coding::Identity);
    }

    #[test]
    fn content_codings_are_named_when_unsupported() {
        let mut headers = HeaderMap::new();
        assert_eq!(content_coding(&headers), Ok(Coding::Identity));
        for (value, coding) in [
            ("zstd", Coding::Zstd),
            ("identity, br", Coding::Brotli),
            ("X-GZIP", Coding::Gzip),
        ] {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(value));
            assert_eq!(content_coding(&headers), Ok(coding), "{value}");
        }
        for (value, named) in [
            ("dcz", "dcz"),
            ("gzip, br", "gzip, br"),
            ("compress", "compress"),
        ] {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(value));
            assert_eq!(content_coding(&headers), Err(Unsupported(named.into())));
        }
        let long = "x".repeat(500);
        headers.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_str(&long).unwrap(),
        );
        assert_eq!(content_coding(&headers).unwrap_err().0.len(), 64);
    }

    async fn collect(stream: ByteStream) -> io::Result<Vec<u8>> {
        let chunks: Vec<Bytes> = stream.try_collect().await?;
        Ok(chunks.concat())
    }

    #[tokio::test]
    async fn decoding_is_bounded() {
        // A small gzip body that decodes past the bound.
        let mut bomb = Vec::new();
        let zeros = vec![0u8; (MAX_DECODED_BYTES + 1) as usize];
        GzipReadEncoder::new(&zeros[..])
            .read_to_end(&mut bomb)
            .await
            .unwrap();
        assert!(bomb.len() < 1024 * 1024, "{}", bomb.len());
        let error = collect(decode(Body::from(bomb), Coding::Gzip))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("more than"), "{error}");
        // Exactly at the bound is fine.
        let mut fits = Vec::new();
        GzipReadEncoder::new(&zeros[..MAX_DECODED_BYTES as usize])
            .read_to_end(&mut fits)
            .await
            .unwrap();
        let out = collect(decode(Body::from(fits), Coding::Gzip))
            .await
            .unwrap();
        assert_eq!(out.len() as u64, MAX_DECODED_BYTES);
    }

    #[tokio::test]
    async fn encoding_round_trips_and_flushes_every_chunk() {
        let page = "<html><head><title>x</title></head><body>".repeat(200);
        for coding in [Coding::Zstd, Coding::Brotli, Coding::Gzip] {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(1);
            let input = stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed();
            let mut out = encode(input, coding);
            tx.send(Ok(Bytes::from(page.clone()))).await.unwrap();
            // The first chunk comes out while the input is still open.
            let first = tokio::time::timeout(std::time::Duration::from_secs(5), out.next())
                .await
                .expect("the encoder held the chunk back")
                .unwrap()
                .unwrap();
            tx.send(Ok(Bytes::from_static(b"<p>end</p>")))
                .await
                .unwrap();
            drop(tx);
            let mut compressed = first.to_vec();
            compressed.extend(collect(out).await.unwrap());
            assert!(compressed.len() < page.len() / 10, "{coding:?}");
            let decoded = collect(decode(Body::from(compressed), coding))
                .await
                .unwrap();
            assert_eq!(
                decoded,
                format!("{page}<p>end</p>").as_bytes(),
                "{coding:?}"
            );
        }
        // Identity and deflate are passed through as they are.
        let input = stream::iter([Ok(Bytes::from_static(b"abc"))]).boxed();
        assert_eq!(
            collect(encode(input, Coding::Identity)).await.unwrap(),
            b"abc"
        );
    }

    #[tokio::test]
    async fn zstd_and_brotli_bodies_are_decoded() {
        let page = b"<html><head></head><body>zstd</body></html>";
        let mut zstd = Vec::new();
        ZstdReadEncoder::new(&page[..])
            .read_to_end(&mut zstd)
            .await
            .unwrap();
        assert_eq!(
            collect(decode(Body::from(zstd), Coding::Zstd))
                .await
                .unwrap(),
            page
        );
        let mut br = Vec::new();
        BrotliReadEncoder::new(&page[..])
            .read_to_end(&mut br)
            .await
            .unwrap();
        assert_eq!(
            collect(decode(Body::from(br), Coding::Brotli))
                .await
                .unwrap(),
            page
        );
    }
}

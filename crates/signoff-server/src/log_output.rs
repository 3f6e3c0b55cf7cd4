//! Where log lines go: stderr, with the access log buffered.
//!
//! The access log (target `signoff::access`) writes one line per request;
//! a `write` to stderr for each cost 3–5 µs of a request's time
//! (docs/benchmarks.md, "The gateway under load"). Its lines are appended
//! to a buffer instead, which a background thread writes out every
//! [`FLUSH_EVERY`], so a line reaches stderr within that bound. Every other
//! line (warnings, errors, start-up and security events, which are rare) is
//! written at once, together with the buffered lines before it, so the log
//! keeps its order and nothing waits behind a quiet access log. Nothing is
//! dropped: a buffer that reaches [`FLUSH_BYTES`] is written out by the
//! request that filled it (so a stderr that blocks slows requests down, as
//! it did before, rather than growing memory), and [`LogFlush`] writes out
//! what is left when the process ends.
//!
//! The access line itself is written by hand ([`access_line`]) once `main`
//! has said where ([`write_access_lines_to`]): the same text tracing's
//! formatter writes for it, without going through the formatter's
//! per-field machinery (about 6,000 of a proxied request's 130,000
//! instructions, against 1,200 by hand; docs/benchmarks.md, "Issue 19,
//! 2026-12-06 (evening)").

use std::cell::RefCell;
use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::MakeWriter;

/// The longest an access-log line waits in the buffer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// A buffer this full is written out at once.
const FLUSH_BYTES: usize = 64 * 1024;

/// The log target whose lines are buffered.
const BUFFERED_TARGET: &str = "signoff::access";

/// Where the lines end up, and the buffer being written there.
struct Sink {
    out: Box<dyn Write + Send>,
    buffer: Vec<u8>,
}

struct Shared {
    /// Lines not yet written.
    pending: Mutex<Vec<u8>>,
    /// Held while writing, so that buffers reach the sink in the order
    /// they were taken.
    sink: Mutex<Sink>,
    /// Set when the process is ending: every line is written at once.
    stop: AtomicBool,
    wake: Condvar,
    sleeping: Mutex<()>,
}

impl Shared {
    /// Writes out every pending line.
    fn flush(&self) {
        let mut sink = self.sink.lock().unwrap_or_else(PoisonError::into_inner);
        let sink = &mut *sink;
        {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            if pending.is_empty() {
                return;
            }
            std::mem::swap(&mut *pending, &mut sink.buffer);
        }
        // Like tracing's own stderr writer, a failed write is not reported
        // (there is nowhere to report it).
        let _ = sink.out.write_all(&sink.buffer);
        let _ = sink.out.flush();
        sink.buffer.clear();
        if sink.buffer.capacity() > 4 * FLUSH_BYTES {
            sink.buffer.shrink_to(FLUSH_BYTES);
        }
    }

    /// Appends a line; the buffer's length after it.
    fn append(&self, line: &[u8]) -> usize {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.extend_from_slice(line);
        pending.len()
    }
}

/// The writer given to `tracing_subscriber::fmt`.
#[derive(Clone)]
pub struct LogOutput {
    shared: Arc<Shared>,
}

/// Writes out the buffered lines and stops the background writer when
/// dropped: keep it until the process ends.
pub struct LogFlush {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the background writer, towards stderr.
pub fn start() -> (LogOutput, LogFlush) {
    start_towards(Box::new(io::stderr()))
}

fn shared_towards(out: Box<dyn Write + Send>) -> Arc<Shared> {
    Arc::new(Shared {
        pending: Mutex::new(Vec::new()),
        sink: Mutex::new(Sink {
            out,
            buffer: Vec::new(),
        }),
        stop: AtomicBool::new(false),
        wake: Condvar::new(),
        sleeping: Mutex::new(()),
    })
}

fn start_towards(out: Box<dyn Write + Send>) -> (LogOutput, LogFlush) {
    let shared = shared_towards(out);
    let background = Arc::clone(&shared);
    let thread = std::thread::Builder::new()
        .name("signoff-log".into())
        .spawn(move || {
            while !background.stop.load(Ordering::Acquire) {
                let sleeping = background
                    .sleeping
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                drop(
                    background
                        .wake
                        .wait_timeout(sleeping, FLUSH_EVERY)
                        .unwrap_or_else(PoisonError::into_inner),
                );
                background.flush();
            }
        })
        .ok();
    if thread.is_none() {
        // No background writer: every line is written at once.
        shared.stop.store(true, Ordering::Release);
    }
    let output = LogOutput {
        shared: Arc::clone(&shared),
    };
    (output, LogFlush { shared, thread })
}

impl LogFlush {
    /// Writes out the buffered lines now.
    pub fn flush(&self) {
        self.shared.flush();
    }
}

impl Drop for LogFlush {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.shared.flush();
    }
}

/// One log line on its way: tracing's formatter hands over the whole
/// line in one `write_all`.
pub struct LineWriter<'a> {
    shared: &'a Shared,
    /// Write out at once (with what is buffered before it).
    now: bool,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        if self.shared.append(line) >= FLUSH_BYTES {
            self.now = true;
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter<'_> {
    fn drop(&mut self) {
        if self.now {
            self.shared.flush();
        }
    }
}

impl<'a> MakeWriter<'a> for LogOutput {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> LineWriter<'a> {
        LineWriter {
            shared: &self.shared,
            now: true,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> LineWriter<'a> {
        let buffered =
            meta.target() == BUFFERED_TARGET && !self.shared.stop.load(Ordering::Acquire);
        LineWriter {
            shared: &self.shared,
            now: !buffered,
        }
    }
}

/// Where [`access_line`] writes; set once by `main` ([`write_access_lines_to`]).
static ACCESS_OUTPUT: OnceLock<LogOutput> = OnceLock::new();

/// Access lines from now on are written by [`access_line`] to `output`,
/// which must be the writer of the process's `tracing_subscriber::fmt`
/// subscriber (so the lines keep their order with the others), and that
/// subscriber must write without colours (the hand-written line has
/// none).
pub fn write_access_lines_to(output: &LogOutput) {
    // Set once; a second call changes nothing.
    let _ = ACCESS_OUTPUT.set(output.clone());
}

thread_local! {
    /// The line being written by this thread, kept for the next one.
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Writes the access-log line of one request, the text tracing's
/// formatter writes without colours for
/// `event!(target: "signoff::access", level, %method, %path, status, latency_us)`:
/// `2026-12-06T13:24:52.890809Z  INFO signoff::access: method=GET path=/ status=200 latency_us=120`.
/// The caller has checked that the level is on for this target
/// (`tracing::enabled!`). `false`, having written nothing, when `main`
/// has not called [`write_access_lines_to`] (tests, or colours on) or
/// the clock cannot be written that way: log it through tracing then.
pub fn access_line(level: Level, method: &str, path: &str, status: u16, latency_us: u64) -> bool {
    match ACCESS_OUTPUT.get() {
        Some(output) => access_line_to(output, level, method, path, status, latency_us),
        None => false,
    }
}

fn access_line_to(
    output: &LogOutput,
    level: Level,
    method: &str,
    path: &str,
    status: u16,
    latency_us: u64,
) -> bool {
    let since = match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) if since.as_secs() < AFTER_9999 => since,
        _ => return false,
    };
    // `try_`: a thread being torn down, or a line written while this one
    // is (nothing does), goes through tracing instead of panicking.
    LINE.try_with(|line| {
        let Ok(mut line) = line.try_borrow_mut() else {
            return false;
        };
        line.clear();
        let written = SECOND
            .try_with(|second| match second.try_borrow_mut() {
                Ok(mut second) => write_time(&mut *line, since, &mut second),
                Err(_) => Err(fmt::Error),
            })
            .unwrap_or(Err(fmt::Error))
            .and_then(|()| {
                // Tracing pads the level to five characters.
                let level = match level {
                    Level::ERROR => "ERROR",
                    Level::WARN => " WARN",
                    Level::INFO => " INFO",
                    Level::DEBUG => "DEBUG",
                    Level::TRACE => "TRACE",
                };
                for part in [
                    " ",
                    level,
                    " ",
                    BUFFERED_TARGET,
                    ": method=",
                    method,
                    " path=",
                    path,
                ] {
                    line.push_str(part);
                }
                fmt::Write::write_fmt(
                    &mut *line,
                    format_args!(" status={status} latency_us={latency_us}\n"),
                )
            });
        if written.is_err() {
            return false;
        }
        let shared = &output.shared;
        let ending = shared.stop.load(Ordering::Acquire);
        if shared.append(line.as_bytes()) >= FLUSH_BYTES || ending {
            shared.flush();
        }
        if line.capacity() > 4096 {
            // A long path once should not stay with the thread.
            *line = String::new();
        }
        true
    })
    .unwrap_or(false)
}

/// `text` as one line of a log that cannot be mistaken for more: control
/// characters (C0, DEL, C1 such as NEL), Unicode whitespace (line and
/// paragraph separators, no-break spaces, which imitate field separators)
/// and bidirectional controls (which reorder what a reader sees) are
/// percent-encoded, byte by byte, as they would be in a URL. A request
/// path may hold any of the non-ASCII ones (`http` accepts UTF-8 above
/// U+007F); tracing writes a field's text as it is. Borrowed when there is
/// nothing to encode, as for nearly every path.
pub fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    fn hidden(c: char) -> bool {
        c.is_control()
            || c.is_whitespace()
            || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }
    if text.bytes().all(|b| b.is_ascii_graphic()) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if hidden(c) {
            let mut bytes = [0u8; 4];
            for b in c.encode_utf8(&mut bytes).bytes() {
                // Writing to a String cannot fail.
                let _ = fmt::Write::write_fmt(&mut out, format_args!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The time at the start of each log line, written as tracing's own
/// `SystemTime` timer writes it (RFC 3339 in UTC, to the microsecond:
/// `2026-12-06T13:24:52.890809Z`), with the part up to the second made
/// once per second and kept per thread. Making the whole date for every
/// access-log line cost about 4,400 of a proxied request's 104,000
/// instructions (docs/benchmarks.md, "where a proxied request's time
/// goes").
pub struct LineTime;

thread_local! {
    /// The second last written by this thread, and its text up to the
    /// seconds (`2026-12-06T13:24:52`).
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
}

/// The first second of the year 10000, which RFC 3339 cannot write.
const AFTER_9999: u64 = 253_402_300_800;

impl FormatTime for LineTime {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(since) if since.as_secs() < AFTER_9999 => {
                SECOND.with(|cell| write_time(w, since, &mut cell.borrow_mut()))
            }
            // A clock before 1970 or after 9999: the long way, as tracing
            // would.
            _ => tracing_subscriber::fmt::time::SystemTime.format_time(w),
        }
    }
}

/// Writes the time `since` the Unix epoch, keeping in `second` the text of
/// the last whole second written.
fn write_time(w: &mut impl fmt::Write, since: Duration, second: &mut (u64, String)) -> fmt::Result {
    let secs = since.as_secs();
    if second.0 != secs || second.1.is_empty() {
        let mut text = String::with_capacity(20);
        // humantime refuses a time after the year 9999 with an error.
        fmt::Write::write_fmt(
            &mut text,
            format_args!(
                "{}",
                humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs))
            ),
        )?;
        // `…T13:24:52Z`: the fraction goes before the `Z`.
        text.pop();
        *second = (secs, text);
    }
    let mut fraction = *b".000000Z";
    let mut micros = since.subsec_micros();
    for digit in fraction[1..7].iter_mut().rev() {
        // A digit: always below 10.
        *digit = b'0' + u8::try_from(micros % 10).unwrap_or(0);
        micros /= 10;
    }
    w.write_str(&second.1)?;
    // Only ASCII digits and punctuation went in.
    w.write_str(std::str::from_utf8(&fraction).map_err(|_| fmt::Error)?)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tracing_subscriber::fmt;

    use super::*;

    /// A sink the test can read.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<u8>>>);

    impl Write for Seen {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Seen {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn logging(output: &LogOutput, f: impl FnOnce()) {
        let subscriber = fmt()
            .with_writer(output.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
    }

    #[test]
    fn access_lines_wait_a_little() {
        let seen = Seen::default();
        let (output, _flush) = start_towards(Box::new(seen.clone()));
        // Hold the sink so that the background writer cannot write yet.
        let held = output.shared.sink.lock().unwrap();
        logging(&output, || {
            tracing::info!(target: "signoff::access", path = "/a", "");
        });
        assert!(seen.text().is_empty());
        drop(held);
        let released = Instant::now();
        while !seen.text().contains("path=\"/a\"") {
            assert!(released.elapsed() < FLUSH_EVERY * 20, "never written");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn other_lines_go_at_once_and_in_order() {
        let seen = Seen::default();
        // No background writer: only what is written at once shows.
        let output = LogOutput {
            shared: shared_towards(Box::new(seen.clone())),
        };
        logging(&output, || {
            tracing::info!(target: "signoff::access", path = "/b", "");
            assert!(seen.text().is_empty(), "the access line waits");
            tracing::warn!("the warning");
            tracing::info!(target: "signoff::auth", "login");
        });
        let text = seen.text();
        let b = text
            .find("/b")
            .expect("the access line went with the warning");
        let warning = text.find("the warning").expect("the warning went at once");
        let login = text.find("login").expect("other lines go at once");
        assert!(b < warning && warning < login, "{text}");
    }

    #[test]
    fn nothing_is_lost_at_the_end() {
        let seen = Seen::default();
        let (output, flush) = start_towards(Box::new(seen.clone()));
        let held = output.shared.sink.lock().unwrap();
        logging(&output, || {
            tracing::info!(target: "signoff::access", path = "/last", "");
        });
        drop(held);
        drop(flush);
        assert!(
            seen.text().contains("/last"),
            "written when the process ends"
        );
        // Once it has ended, nothing waits.
        logging(&output, || {
            tracing::info!(target: "signoff::access", path = "/later", "");
        });
        assert!(seen.text().contains("/later"));
    }

    #[test]
    fn a_full_buffer_is_written_by_the_line_that_filled_it() {
        let seen = Seen::default();
        let output = LogOutput {
            shared: shared_towards(Box::new(seen.clone())),
        };
        let line = "x".repeat(1000);
        logging(&output, || {
            for i in 0..200 {
                tracing::info!(target: "signoff::access", i, %line);
            }
        });
        let text = seen.text();
        assert!(text.len() >= FLUSH_BYTES, "{}", text.len());
        assert!(text.len() < 200 * 1000, "{}", text.len());
        assert!(text.lines().all(|l| l.contains(&line)));
    }

    #[test]
    fn hand_written_access_lines_read_as_tracings() {
        let cases = [
            (Level::INFO, "GET", "/", 200, 120),
            (Level::DEBUG, "GET", "/.signoff/auth", 200, 0),
            (
                Level::INFO,
                "DELETE",
                "/a/%20b/é;x",
                503,
                18_446_744_073_709_551_615,
            ),
            (Level::INFO, "PROPFIND", "", 101, 7),
        ];
        for (level, method, path, status, latency_us) in cases {
            let theirs = Seen::default();
            let output = LogOutput {
                shared: shared_towards(Box::new(theirs.clone())),
            };
            let subscriber = fmt()
                .with_writer(output.clone())
                .with_ansi(false)
                .with_timer(LineTime)
                .with_max_level(Level::TRACE)
                .finish();
            tracing::subscriber::with_default(subscriber, || {
                if level == Level::DEBUG {
                    tracing::debug!(target: "signoff::access", %method, %path, status, latency_us);
                } else {
                    tracing::info!(target: "signoff::access", %method, %path, status, latency_us);
                }
            });
            output.shared.flush();
            let ours = Seen::default();
            let output = LogOutput {
                shared: shared_towards(Box::new(ours.clone())),
            };
            assert!(access_line_to(
                &output, level, method, path, status, latency_us
            ));
            output.shared.flush();
            let (theirs, ours) = (theirs.text(), ours.text());
            // The same text after the time, which both write alike.
            let time = "2026-12-06T13:24:52.890809Z".len();
            assert_eq!(theirs.get(time..), ours.get(time..), "{theirs:?} {ours:?}");
            for line in [&theirs, &ours] {
                humantime::parse_rfc3339(&line[..time]).unwrap();
            }
            assert!(
                ours.ends_with('\n') && ours.lines().count() == 1,
                "{ours:?}"
            );
        }
        // Nothing is written by hand until main says where.
        assert!(ACCESS_OUTPUT.get().is_none());
        assert!(!access_line(Level::INFO, "GET", "/", 200, 1));
    }

    #[test]
    fn hand_written_access_lines_wait_and_are_not_lost() {
        let seen = Seen::default();
        let (output, flush) = start_towards(Box::new(seen.clone()));
        let held = output.shared.sink.lock().unwrap();
        assert!(access_line_to(&output, Level::INFO, "GET", "/held", 200, 1));
        assert!(seen.text().is_empty(), "the line waits");
        drop(held);
        // Buffered: not written at once, written within the bound.
        let released = Instant::now();
        while !seen.text().contains("path=/held ") {
            assert!(released.elapsed() < FLUSH_EVERY * 100, "never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(flush);
        // Once the process is ending, at once.
        assert!(access_line_to(&output, Level::INFO, "GET", "/late", 200, 1));
        assert!(seen.text().contains("path=/late "));
        // A full buffer is written by the line that filled it.
        let seen = Seen::default();
        let output = LogOutput {
            shared: shared_towards(Box::new(seen.clone())),
        };
        let long = format!("/{}", "x".repeat(1000));
        for _ in 0..200 {
            assert!(access_line_to(&output, Level::INFO, "GET", &long, 200, 1));
        }
        let text = seen.text();
        assert!(
            text.len() >= FLUSH_BYTES && text.len() < 200 * 1000,
            "{}",
            text.len()
        );
    }

    #[test]
    fn paths_are_logged_on_one_line_as_a_reader_sees_them() {
        for (path, logged) in [
            ("/plain/path?q=1", "/plain/path?q=1"),
            ("/caf\u{e9}", "/caf\u{e9}"),
            ("/a\u{2028}b", "/a%E2%80%A8b"),
            ("/a\u{2029}b", "/a%E2%80%A9b"),
            ("/a\u{85}b", "/a%C2%85b"),
            ("/a\u{9b}31mX", "/a%C2%9B31mX"),
            ("/a\u{a0}status=200", "/a%C2%A0status=200"),
            ("/a\u{202e}gpj.exe", "/a%E2%80%AEgpj.exe"),
            ("/a\u{2066}b", "/a%E2%81%A6b"),
            ("/a\nb\x1b[31m\x7f", "/a%0Ab%1B[31m%7F"),
            ("/a b", "/a%20b"),
        ] {
            assert_eq!(one_line(path), logged, "{path:?}");
            assert!(one_line(path).lines().count() <= 1);
        }
        assert!(matches!(one_line("/plain"), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn line_times_read_as_rfc3339_to_the_microsecond() {
        let mut second = (0, String::new());
        // Twice in one second (the kept text is reused), then the next
        // second, a leap day, the epoch and a far future.
        for (secs, micros) in [
            (1_796_563_492, 890_809),
            (1_796_563_492, 7),
            (1_796_563_493, 0),
            (1_709_164_800, 999_999),
            (0, 0),
            (253_402_300_799, 123_456),
        ] {
            let since = Duration::new(secs, micros * 1_000 + 999);
            let mut line = String::new();
            write_time(&mut line, since, &mut second).unwrap();
            let expected = humantime::format_rfc3339_micros(UNIX_EPOCH + since).to_string();
            assert_eq!(line, expected);
        }
        // After the year 9999: an error, not a panic (LineTime does not
        // come here; it writes such a time the long way).
        let mut line = String::new();
        assert!(write_time(&mut line, Duration::from_secs(AFTER_9999), &mut second).is_err());
        // What tracing's own timer writes has the same shape.
        let mut ours = String::new();
        let mut theirs = String::new();
        LineTime.format_time(&mut Writer::new(&mut ours)).unwrap();
        tracing_subscriber::fmt::time::SystemTime
            .format_time(&mut Writer::new(&mut theirs))
            .unwrap();
        // (Read a moment apart, so compared by shape: a digit may differ.)
        let shape = |t: &str| -> String {
            t.chars()
                .map(|c| if c.is_ascii_digit() { '0' } else { c })
                .collect()
        };
        assert_eq!(shape(&ours), shape(&theirs), "{ours} / {theirs}");
        assert_eq!(shape(&ours), "0000-00-00T00:00:00.000000Z");
    }
}

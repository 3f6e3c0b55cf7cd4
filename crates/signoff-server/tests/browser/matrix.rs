//! The browser matrix, written by the browser suite itself: every test
//! records its outcome as one file under `target/browser-results/`, then
//! rebuilds `target/browser-matrix.md` from all the files of this run. The
//! tracked `docs/browser-matrix.md` is rewritten only on purpose, with
//! `SIGNOFF_WRITE_BROWSER_MATRIX=1` (a plain `cargo test` leaves the
//! checkout as it was).
//!
//! Tests run on parallel threads of one process (`cargo test`) or each in
//! a process of its own (`cargo nextest`, as `.ci/run` does), so recording
//! and rebuilding hold a lock on a file beside the results, and every file
//! is written whole (temporary file, then rename): the last test to finish
//! writes a document that holds every result, and no reader ever sees half
//! a file. The first record of a run deletes the previous run's results, so
//! the document shows the latest run only; cells a filtered run did not
//! reach say so. A run is one process, or under nextest the processes that
//! share one `NEXTEST_RUN_ID`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::browser::{lock_file, seen_version, Engine};
use crate::Transport;

/// The scenarios, in the document's order: (id, title).
pub const SCENARIOS: &[(&str, &str)] = &[
    (
        "logout_then_back",
        "1. Logout button, then Back ×2, Forward ×2, Back, reload",
    ),
    (
        "server_side_end_then_back",
        "2a. Session ended on the server only (`signoff user disable`), then Back",
    ),
    (
        "signed_out_from_another_device",
        "2b. \"Sign out everywhere else\" on another device, then Back, Forward, Back, Forward, reload",
    ),
    (
        "idle_timeout_then_back",
        "3. Idle timeout passes on a private page, then Back, Forward, Back, Forward, reload",
    ),
    (
        "bfcache_is_on",
        "4. Positive control: a public cacheable page comes back from bfcache (`persisted == true`)",
    ),
];

/// How one test ended.
pub enum Outcome {
    Passed,
    Failed(String),
    Skipped(String),
}

impl Outcome {
    fn code(&self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed(_) => "failed",
            Outcome::Skipped(_) => "skipped",
        }
    }

    fn detail(&self) -> &str {
        match self {
            Outcome::Passed => "",
            Outcome::Failed(d) | Outcome::Skipped(d) => d,
        }
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

fn results_dir() -> PathBuf {
    target_dir().join("browser-results")
}

/// Where the document goes: under `target/`, and also into `docs/` when
/// asked for.
fn documents() -> Vec<PathBuf> {
    let mut out = vec![target_dir().join("browser-matrix.md")];
    if std::env::var("SIGNOFF_WRITE_BROWSER_MATRIX").as_deref() == Ok("1") {
        out.push(root().join("docs/browser-matrix.md"));
    }
    out
}

fn transport_name(t: Transport) -> &'static str {
    match t {
        Transport::Http => "HTTP",
        Transport::Https => "HTTPS",
    }
}

/// Records one test's outcome and rebuilds the document. Never panics: a
/// failure to write is printed, and the test's own outcome stands.
pub fn record(
    scenario: &str,
    engine: Engine,
    transport: Transport,
    outcome: &Outcome,
    findings: &[String],
    took: Duration,
) {
    static FRESH: OnceLock<()> = OnceLock::new();
    let dir = results_dir();
    let _held = match lock_file(&dir.join("lock"), true) {
        Ok(file) => file,
        Err(e) => {
            eprintln!("browser matrix: cannot lock {}: {e}", dir.display());
            return;
        }
    };
    FRESH.get_or_init(|| start_run(&dir));
    let entry = json!({
        "scenario": scenario,
        "engine": engine.name(),
        "transport": transport_name(transport),
        "outcome": outcome.code(),
        "detail": outcome.detail(),
        "findings": findings,
        "seconds": (took.as_secs_f64() * 10.0).round() / 10.0,
        "version": seen_version(engine).unwrap_or_default(),
    });
    let name = format!(
        "{}-{}-{scenario}.json",
        engine.name(),
        transport_name(transport).to_lowercase()
    );
    // The lock made the directory.
    let written = write_whole(&dir.join(name), entry.to_string().as_bytes()).and_then(|()| {
        let doc = render(&read_all(&dir));
        documents()
            .iter()
            .try_for_each(|path| write_whole(path, doc.as_bytes()))
    });
    if let Err(e) = written {
        eprintln!("browser matrix: cannot write the results: {e}");
    }
}

/// Deletes an earlier run's results, unless this process belongs to the
/// run that wrote them (nextest: the same `NEXTEST_RUN_ID`).
fn start_run(dir: &Path) {
    // A process number alone can come back in a later run; with the time
    // the process first recorded, it cannot.
    let run = std::env::var("NEXTEST_RUN_ID").unwrap_or_else(|_| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        format!("process {} at {}", std::process::id(), now.as_nanos())
    });
    let marker = dir.join("run");
    if std::fs::read_to_string(&marker).is_ok_and(|seen| seen == run) {
        return;
    }
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.path().extension().is_some_and(|x| x == "json") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    if let Err(e) = write_whole(&marker, run.as_bytes()) {
        eprintln!("browser matrix: cannot write {}: {e}", marker.display());
    }
}

fn write_whole(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn read_all(dir: &Path) -> Vec<Value> {
    let mut all: Vec<Value> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect();
    all.sort_by_key(|v| v.to_string());
    all
}

fn field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn render(results: &[Value]) -> String {
    let find = |scenario: &str, engine: Engine, transport: &str| {
        results.iter().find(|r| {
            field(r, "scenario") == scenario
                && field(r, "engine") == engine.name()
                && field(r, "transport") == transport
        })
    };
    let mut doc = String::new();
    let _ = writeln!(
        doc,
        "# Browser matrix: the Back button after signing out\n\n\
         <!-- Generated by `cargo test -p signoff-server --test browser`\n     \
         (tests/browser/matrix.rs); edits here are overwritten. -->\n\n\
         Written by the latest run of the browser suite (`tests/browser.rs`), which\n\
         drives `signoff demo` in three real engines over W3C WebDriver with the\n\
         back/forward cache (bfcache) on, over plain HTTP on 127.0.0.1 and over HTTPS\n\
         with a self-signed certificate. ✓ passed: no private text was visible at\n\
         any step; for 4, the page came back from bfcache. ✗ failed, with the\n\
         reason below. Row 4 is the positive control: every engine here can show\n\
         a bfcache restore, so it fails (it never passes quietly) when one does\n\
         not, since the other rows then prove less. \"skipped\": the engine is\n\
         not installed (allowed only without `SIGNOFF_REQUIRE_SERVICES=1`).\n\
         – : not run by the latest run (a filtered `cargo test`; 2b runs over\n\
         HTTP only, its second device being the tests' plain-HTTP client).\n\
         Screenshots of each engine after logout and Back:\n\
         `target/browser-artifacts/` (kept by CI).\n"
    );
    let engines: Vec<String> = Engine::ALL
        .iter()
        .map(
            |e| match seen_version(*e).or_else(|| version_in(results, *e)) {
                Some(v) if !v.is_empty() => format!("{} {v}", e.title()),
                _ => e.title().to_owned(),
            },
        )
        .collect();
    let _ = writeln!(doc, "Engines: {}.\n", engines.join(", "));
    let mut header = String::from("| scenario |");
    let mut rule = String::from("|---|");
    for engine in Engine::ALL {
        for transport in ["HTTP", "HTTPS"] {
            let _ = write!(header, " {} {transport} |", engine.title());
            rule.push_str("---|");
        }
    }
    let _ = writeln!(doc, "{header}\n{rule}");
    let mut notes: Vec<String> = Vec::new();
    for (id, title) in SCENARIOS {
        let mut row = format!("| {title} |");
        for engine in Engine::ALL {
            for transport in ["HTTP", "HTTPS"] {
                let cell = match find(id, *engine, transport) {
                    None => "–".to_owned(),
                    Some(r) => {
                        let mut cell = match field(r, "outcome") {
                            "passed" => "✓".to_owned(),
                            "failed" => "✗".to_owned(),
                            other => other.to_owned(),
                        };
                        let mut said: Vec<String> = Vec::new();
                        let detail = field(r, "detail");
                        if !detail.is_empty() {
                            said.push(detail.to_owned());
                        }
                        said.extend(
                            r.get("findings")
                                .and_then(Value::as_array)
                                .into_iter()
                                .flatten()
                                .filter_map(Value::as_str)
                                .map(str::to_owned),
                        );
                        for s in said {
                            let s = one_line(&s);
                            let n = match notes.iter().position(|x| *x == s) {
                                Some(i) => i + 1,
                                None => {
                                    notes.push(s);
                                    notes.len()
                                }
                            };
                            let _ = write!(cell, " [{n}]");
                        }
                        cell
                    }
                };
                let _ = write!(row, " {cell} |");
            }
        }
        let _ = writeln!(doc, "{row}");
    }
    if !notes.is_empty() {
        let _ = writeln!(doc, "\nWhat the run observed:\n");
        for (i, n) in notes.iter().enumerate() {
            let _ = writeln!(doc, "{}. {n}", i + 1);
        }
    }
    doc.push_str(CONTRIBUTIONS);
    doc
}

fn version_in(results: &[Value], engine: Engine) -> Option<String> {
    results
        .iter()
        .filter(|r| field(r, "engine") == engine.name())
        .map(|r| field(r, "version").to_owned())
        .find(|v| !v.is_empty())
}

fn one_line(s: &str) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let s = s.replace('|', "\\|");
    if s.chars().count() > 300 {
        format!("{}…", s.chars().take(300).collect::<String>())
    } else {
        s
    }
}

const CONTRIBUTIONS: &str = "
## What each measure contributes

signoff sends all three by default; none is enough alone (`docs/gateway.md`,
\"Browser facts\", has the measured table for each measure on its own).

- `Cache-Control: no-store` on every authenticated response keeps private
  pages out of the HTTP cache, so a reload or a Back that is not served
  from bfcache goes to the gateway, which answers with the login page.
  Firefox, and WebKit over HTTPS, also keep such pages out of bfcache.
  Chromium, and WebKit over HTTP, still restore them from bfcache: alone it
  fails there.
- `Clear-Site-Data: \"cache\"` (with `\"cookies\"`, `\"prefetchCache\"`,
  `\"prerenderCache\"`) on the logout response empties the browser's caches,
  bfcache included, for the engines that honour it on that transport. It
  closes the Chromium gap after a logout made in this browser. WebKit
  ignores it over plain HTTP (not a secure context), and it can never reach
  a browser whose session ended elsewhere.
- The `pageshow` guard, which the gateway injects into every HTML page,
  asks the gateway on every restore from bfcache (`event.persisted`)
  whether the session is still alive, hides the page at once, and goes to
  the login page if not. It is the only measure that acts when the session
  ended on the server only (2a, 2b, 3): the findings above say, per engine,
  whether the private page came back from bfcache (the guard acted) or
  was refetched (`no-store` did the work).
";

//! The commands the documentation shows, run. Every command in a fenced
//! `sh` block of README.md, docs/*.md and examples/*/README.md either runs
//! here, against the suite's `signoff` binary in a temporary directory, or
//! is listed in [`NOT_RUN`] with the reason it cannot; a new command that
//! is neither fails this test, and so does an entry that no longer matches
//! a command. A `signoff` command that is not run still has its
//! subcommands and flags checked against `--help`.
//!
//! What is changed to run them, and nothing else:
//! - `cargo run --release -- ARGS` runs `signoff ARGS` (the same code; a
//!   release build would take minutes);
//! - the documented ports (5000, 8080, 8081, 8501, 8888) become free ports,
//!   the same within one file, so the commands of a file still reach each
//!   other and a port in use on the machine changes nothing; `serve` and
//!   `demo` without `--listen` get the free port standing for their default
//!   8080;
//! - a command that asks for a password on a terminal (`signoff user add
//!   NAME`) gets a terminal (python3's `pty`) that answers it.
//!
//! Commands of a file run in order in one directory (the repository's
//! `examples` and `bench` linked into it) with `signoff` first on `PATH`,
//! after the file's [`SETUP`] commands if it has any.
//! `serve`, `demo` and the Flask app keep running (until the end of the
//! file, or until a later command needs their port) once they answer HTTP
//! with a status below 500; the rest must exit 0 within 30 s. Each runs in
//! a process group of its own, killed whole when the test is done with it,
//! also when the test fails.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::services::free_port;
use support::Proc;

/// Commands that do not run here: (file, command, reason). A command ending
/// in `*` matches every command that starts with the rest.
const NOT_RUN: &[(&str, &str, &str)] = &[
    (
        "docs/library.md",
        "cargo run -p signoff-axum-example -- --listen 127.0.0.1:3000 --db sqlite://app.db",
        "a server that runs until stopped; tests/logout_checks.rs starts the same binary on a store made by `signoff user add`",
    ),
    ("README.md", "cargo test --workspace", "the test suite this test is part of"),
    (
        "README.md",
        "cargo install --locked --path crates/signoff-server",
        "a release build takes minutes; the suite runs the same code as its debug build",
    ),
    (
        "README.md",
        "sudo *",
        "installs into /usr/local and /etc and starts a system service; tests/install.rs checks the unit and the configuration file",
    ),
    (
        "docs/oidc.md",
        "signoff serve --upstream http://127.0.0.1:5000 --public-url https://app.example.com --oidc-issuer https://id.example.com/realms/acme --oidc-client-id signoff --oidc-client-secret-file /etc/signoff/oidc-secret",
        "needs a provider at id.example.com; tests/oidc_sign_in.rs signs in through a real one (panva's oidc-provider) with the same flags",
    ),
    (
        "docs/admin-api.md",
        "signoff serve … --admin-token-sha256 9c1e…",
        "… stands for the other flags and the printed hash; tests/sessions.rs runs the admin API",
    ),
    (
        "docs/admin-api.md",
        "TOKEN=…; BASE=https://app.example.com/.signoff/admin",
        "placeholders for a deployed gateway; tests/sessions.rs runs the admin API",
    ),
    (
        "docs/admin-api.md",
        "curl *",
        "calls the deployed gateway at https://app.example.com; tests/sessions.rs makes these calls",
    ),
    (
        "docs/benchmarks.md",
        "cargo bench *",
        "minutes of benchmarks; .ci/run runs one pass of each",
    ),
    (
        "docs/benchmarks.md",
        "SIGNOFF_BENCH_SIZES=10000 cargo bench -p signoff --features sqlite,accounts,audit --bench sessions",
        "minutes of benchmarks; .ci/run runs one pass with 1000 sessions",
    ),
    (
        "docs/benchmarks.md",
        "SIGNOFF_BENCH_QUICK=1 cargo bench -p signoff-server --bench websockets",
        "a benchmark of about 10 s; .ci/run runs it as `-- --test`",
    ),
    (
        "docs/benchmarks.md",
        "SIGNOFF_BENCH_ONLY=close,echo,memory ...",
        "... stands for the benchmark command above",
    ),
    (
        "docs/benchmarks.md",
        "bench/multinode.sh",
        "a benchmark of minutes that needs wrk",
    ),
    (
        "docs/benchmarks.md",
        "cargo test -p signoff-server --test multinode -- --nocapture",
        "part of `cargo test --workspace`, which runs this test",
    ),
    (
        "docs/deploy-multi-node.md",
        "export SIGNOFF_DB='redis://:PASSWORD@redis.internal:6379/0?prefix=shop'",
        "a Redis at redis.internal with a password; tests/multinode.rs runs nodes on the machine's Redis",
    ),
    (
        "docs/deploy-multi-node.md",
        "signoff user add alice",
        "needs the SIGNOFF_DB of the line before (Redis at redis.internal)",
    ),
    (
        "docs/deploy-multi-node.md",
        "signoff serve --upstream http://127.0.0.1:5000 *",
        "needs the SIGNOFF_DB of the first line (Redis at redis.internal)",
    ),
    (
        "docs/gateway.md",
        "jupyter lab *",
        "JupyterLab from the apps virtualenv; tests/real_apps.rs runs it behind signoff",
    ),
    (
        "docs/gateway.md",
        "streamlit run app.py *",
        "Streamlit from the apps virtualenv; tests/real_apps.rs runs it behind signoff",
    ),
    (
        "docs/sessions.md",
        "signoff sessions list [--user NAME] [--json]",
        "a synopsis (NAME, [optional flags]); tests/sessions.rs runs these commands",
    ),
    (
        "docs/sessions.md",
        "signoff sessions end HANDLE",
        "a synopsis (HANDLE); tests/sessions.rs runs these commands",
    ),
    (
        "docs/sessions.md",
        "signoff sessions end --user NAME",
        "a synopsis (NAME); tests/sessions.rs runs these commands",
    ),
    (
        "docs/sessions.md",
        "signoff user disable NAME",
        "a synopsis (NAME); tests/cli.rs runs it",
    ),
    (
        "docs/sessions.md",
        "signoff user passwd NAME [--end-sessions | --keep-sessions]",
        "a synopsis (NAME, [optional flags]); tests/cli.rs runs it",
    ),
    (
        "docs/sessions.md",
        "signoff audit [--user NAME] [--since 1h] [--kind KIND] [--limit N] [--json]",
        "a synopsis ([optional flags]); tests/sessions.rs runs it",
    ),
    (
        "docs/tokens.md",
        "examples/token-client.sh http://127.0.0.1:8080 demo PASSWORD",
        "PASSWORD is the one `demo` prints; tests/tokens.rs runs this walk against `signoff demo`",
    ),
    (
        "docs/tokens.md",
        "signoff keys list   --db …",
        "… stands for the store",
    ),
    (
        "docs/tokens.md",
        "signoff keys rotate --db …",
        "… stands for the store",
    ),
    (
        "examples/flask/README.md",
        "pip install flask",
        "installs a package; .ci/run installs Flask",
    ),
    (
        "docs/migrate-from-flask-login.md",
        "pip install flask flask-login",
        "installs packages; .ci/run installs Flask and Flask-Login",
    ),
];

/// Run before a file's commands, for commands shown working on a store
/// that already exists: (file, command, why).
const SETUP: &[(&str, &str, &str)] = &[
    (
        "docs/sessions.md",
        "echo 'correct horse battery' | signoff user add alice --password-stdin",
        "the operator commands there work on a database with users",
    ),
    (
        "docs/access-rules.md",
        "echo 'correct horse battery' | signoff user add alice --password-stdin --group staff",
        "`rules test --user alice` reads alice's groups from the store",
    ),
];

/// What must hold once all of a file's commands ran: (file, path, status)
/// for a GET, without a session, on the port standing for 8080.
const AFTERWARDS: &[(&str, &str, u16)] = &[
    // The Flask README: `/public` is open to anyone, the rest is not.
    ("examples/flask/README.md", "/public", 200),
    ("examples/flask/README.md", "/private/a", 303),
    // The migration guide: the migrated app is behind signoff.
    ("docs/migrate-from-flask-login.md", "/", 303),
];

/// Ports the documentation uses, each replaced by a free one.
const DOC_PORTS: &[u16] = &[5000, 8080, 8081, 8501, 8888];

const PASSWORD: &str = "correct horse battery";

#[derive(Debug)]
struct DocCommand {
    file: String,
    line: usize,
    text: String,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The files whose `sh` blocks are checked, relative to the repository.
fn doc_files() -> Vec<String> {
    let root = repo_root();
    let mut files = vec!["README.md".to_owned()];
    for (dir, only) in [("docs", None), ("examples", Some("README.md"))] {
        let mut found: Vec<String> = Vec::new();
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let candidates = match only {
                None => vec![path],
                Some(name) => vec![path.join(name)],
            };
            for p in candidates {
                if p.is_file() && p.extension().is_some_and(|e| e == "md") {
                    let rel = p.strip_prefix(&root).unwrap();
                    found.push(rel.to_str().unwrap().to_owned());
                }
            }
        }
        found.sort();
        files.extend(found);
    }
    files
}

/// The commands of a file's ```sh blocks: continuation lines joined,
/// comments dropped; in a transcript (lines starting `$ `), only those.
fn commands_in(file: &str, text: &str) -> Vec<DocCommand> {
    let mut out = Vec::new();
    // The open block: its indentation and its numbered lines.
    let mut block: Option<(String, Vec<(usize, String)>)> = None;
    for (i, line) in text.lines().enumerate() {
        let number = i + 1;
        let trimmed = line.trim_start();
        match &mut block {
            None => {
                if trimmed.starts_with("```") && trimmed[3..].trim() == "sh" {
                    let indent = line[..line.len() - trimmed.len()].to_owned();
                    block = Some((indent, Vec::new()));
                }
            }
            Some((indent, lines)) => {
                if trimmed == "```" {
                    let (_, lines) = block.take().unwrap();
                    out.extend(block_commands(file, lines));
                } else {
                    let l = line.strip_prefix(indent.as_str()).unwrap_or(line);
                    lines.push((number, l.to_owned()));
                }
            }
        }
    }
    assert!(block.is_none(), "{file}: an ```sh block is not closed");
    out
}

fn block_commands(file: &str, lines: Vec<(usize, String)>) -> Vec<DocCommand> {
    let transcript = lines.iter().any(|(_, l)| l.starts_with("$ "));
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (number, line) in lines {
        let line = match (&pending, transcript) {
            (Some(_), _) => line,
            (None, true) => match line.strip_prefix("$ ") {
                Some(command) => command.to_owned(),
                None => continue,
            },
            (None, false) => line,
        };
        let code = strip_comment(&line);
        let (start, mut text) = pending.take().unwrap_or((number, String::new()));
        match code.trim_end().strip_suffix('\\') {
            Some(head) => {
                text.push_str(head.trim());
                text.push(' ');
                pending = Some((start, text));
            }
            None => {
                text.push_str(code.trim());
                let text = text.trim().to_owned();
                if !text.is_empty() {
                    out.push(DocCommand {
                        file: file.to_owned(),
                        line: start,
                        text,
                    });
                }
            }
        }
    }
    assert!(pending.is_none(), "{file}: a command ends in `\\`");
    out
}

/// The line without a `#` comment (one at the start or after a space,
/// outside quotes).
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '#') if previous.is_whitespace() => return &line[..i],
            _ => {}
        }
        previous = c;
    }
    line
}

/// The [`NOT_RUN`] entry of this command, by index.
fn not_run_entry(command: &DocCommand) -> Option<usize> {
    NOT_RUN
        .iter()
        .position(|(file, pattern, _)| *file == command.file && matches(pattern, &command.text))
}

fn matches(pattern: &str, text: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => text.starts_with(prefix),
        None => text == pattern,
    }
}

/// The ports of one file: each documented port and the free one that
/// stands for it.
struct Ports(BTreeMap<u16, u16>);

impl Ports {
    fn new() -> Self {
        Self(DOC_PORTS.iter().map(|&p| (p, free_port())).collect())
    }

    fn of(&self, documented: u16) -> u16 {
        self.0[&documented]
    }

    /// `:PORT` and `--port PORT` with a documented port, replaced.
    fn apply(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for (&documented, &free) in &self.0 {
            for (from, to) in [
                (format!(":{documented}"), format!(":{free}")),
                (format!("--port {documented}"), format!("--port {free}")),
                (format!("--port={documented}"), format!("--port={free}")),
            ] {
                text = replace_whole(&text, &from, &to);
            }
        }
        text
    }
}

/// Replaces `from` where no digit follows it.
fn replace_whole(text: &str, from: &str, to: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(from) {
        let after = &rest[i + from.len()..];
        out.push_str(&rest[..i]);
        if after.starts_with(|c: char| c.is_ascii_digit()) {
            out.push_str(from);
        } else {
            out.push_str(to);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// How a command runs.
enum Run {
    /// Keeps running; ready when this port answers HTTP.
    Server(u16),
    /// Asks for a password on a terminal.
    Terminal,
    /// Runs to its end.
    ToEnd,
}

/// The command as it runs here, and how.
fn prepare(command: &str, ports: &Ports) -> (String, Run) {
    let mut text = command.to_owned();
    if let Some(rest) = text.strip_prefix("cargo run --release -- ") {
        text = format!("signoff {rest}");
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    let server = matches!(words.as_slice(), ["signoff", "serve" | "demo", ..])
        && !words.contains(&"--check");
    if server && !words.contains(&"--listen") {
        text.push_str(" --listen 127.0.0.1:8080");
    }
    let text = ports.apply(&text);
    let words: Vec<&str> = text.split_whitespace().collect();
    let run = if server {
        let listen = words
            .iter()
            .position(|w| *w == "--listen")
            .and_then(|i| words.get(i + 1))
            .expect("--listen ADDR");
        let port = listen.rsplit(':').next().unwrap().parse().unwrap();
        Run::Server(port)
    } else if matches!(words.as_slice(), ["python3", script, ..]
        if script.ends_with("app.py") || script.ends_with("after.py"))
    {
        let port = words
            .iter()
            .position(|w| *w == "--port")
            .and_then(|i| words.get(i + 1))
            .map_or(ports.of(5000), |p| p.parse().unwrap());
        Run::Server(port)
    } else if matches!(words.as_slice(), ["signoff", "user", "add" | "passwd", ..])
        && !words.contains(&"--password-stdin")
    {
        Run::Terminal
    } else {
        Run::ToEnd
    };
    (text, run)
}

/// Answers every prompt ending in `: ` with argv[2] while the command
/// argv[1] runs on a terminal; exits with its status.
const PTY_ANSWER: &str = r#"
import os, pty, sys
pid, fd = pty.fork()
if pid == 0:
    os.execvp("sh", ["sh", "-c", sys.argv[1]])
seen = b""
while True:
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    sys.stdout.buffer.write(chunk)
    sys.stdout.flush()
    seen += chunk
    if seen.rstrip(b"\r\n").endswith(b":") or seen.endswith(b": "):
        os.write(fd, sys.argv[2].encode() + b"\n")
        seen = b""
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"#;

/// A directory with `signoff` to put first on `PATH`.
fn bin_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(support::signoff_bin(), dir.path().join("signoff")).unwrap();
    dir
}

fn shell(text: &str, dir: &Path, bin: &Path) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(text).current_dir(dir);
    shell_env(&mut cmd, bin);
    cmd
}

fn shell_env(cmd: &mut Command, bin: &Path) {
    for (key, _) in std::env::vars() {
        if key.starts_with("SIGNOFF_") {
            cmd.env_remove(key);
        }
    }
    let path = std::env::var("PATH").unwrap_or_default();
    cmd.env("PATH", format!("{}:{path}", bin.display()));
    // `examples` is linked into the directory: no bytecode written there.
    cmd.env("PYTHONDONTWRITEBYTECODE", "1");
    cmd.env("SIGNOFF_LOG", "warn");
}

/// The status of `GET path` on 127.0.0.1:port, if it answers HTTP.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/html\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    let head = std::str::from_utf8(&head).ok()?;
    head.strip_prefix("HTTP/1.1 ")?.trim().parse().ok()
}

/// A command started in a process group of its own, every process of
/// which is killed when this is dropped (a shell's children too).
struct Group(Proc);

impl Group {
    fn spawn(mut cmd: Command, log: &Path) -> Result<Group, String> {
        use std::os::unix::process::CommandExt;
        let out = std::fs::File::create(log).unwrap();
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .map_err(|e| format!("cannot start: {e}"))?;
        Ok(Group(Proc {
            child,
            log: log.to_owned(),
        }))
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        // Proc's own drop then reaps the leader.
    }
}

/// Runs `cmd` to its end within 30 s; its output on failure.
fn run_to_end(cmd: Command, log: &Path) -> Result<(), String> {
    let mut group = Group::spawn(cmd, log)?;
    let proc = &mut group.0;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = proc.child.try_wait().unwrap() {
            return if status.success() {
                Ok(())
            } else {
                Err(format!("{status}; it printed:\n{}", proc.log_text()))
            };
        }
        if Instant::now() > deadline {
            return Err(format!(
                "still running after 30 s; it printed:\n{}",
                proc.log_text()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts a server and waits until it answers HTTP below 500.
fn start_server(cmd: Command, port: u16, log: &Path) -> Result<Group, String> {
    let mut group = Group::spawn(cmd, log)?;
    let proc = &mut group.0;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = proc.child.try_wait().unwrap() {
            return Err(format!(
                "exited ({status}); it printed:\n{}",
                proc.log_text()
            ));
        }
        match http_status(port, "/") {
            Some(status) if status < 500 => return Ok(group),
            Some(status) => {
                return Err(format!(
                    "GET / answered {status}; it printed:\n{}",
                    proc.log_text()
                ))
            }
            None if Instant::now() > deadline => {
                return Err(format!(
                    "no HTTP answer on port {port} after 20 s; it printed:\n{}",
                    proc.log_text()
                ))
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The command `sudo [-u USER]` runs, or the command itself.
fn without_sudo(text: &str) -> String {
    let mut words: Vec<&str> = text.split_whitespace().collect();
    if words.first() == Some(&"sudo") {
        words.remove(0);
        if words.first() == Some(&"-u") {
            words.drain(..2.min(words.len()));
        }
    }
    words.join(" ")
}

/// `signoff ARGS --help`, cached.
fn help(cache: &mut HashMap<Vec<String>, String>, path: &[String]) -> String {
    cache
        .entry(path.to_vec())
        .or_insert_with(|| {
            let out = Command::new(support::signoff_bin())
                .args(path)
                .arg("--help")
                .env_remove("SIGNOFF_DB")
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
        .clone()
}

/// The subcommands a help text lists.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// A `signoff` command that is not run: its subcommands exist and its
/// flags are in their help.
fn check_against_help(text: &str, cache: &mut HashMap<Vec<String>, String>) -> Result<(), String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut path: Vec<String> = Vec::new();
    for word in &words[1..] {
        if subcommands(&help(cache, &path)).iter().any(|s| s == word) {
            path.push((*word).to_owned());
        } else {
            break;
        }
    }
    if path.is_empty() {
        return Err("names no signoff subcommand".to_owned());
    }
    let text_of_help = help(cache, &path);
    for word in &words {
        let flag = word.trim_matches(|c| c == '[' || c == ']');
        let flag = flag.split('=').next().unwrap();
        if !flag.starts_with("--") {
            continue;
        }
        let known = text_of_help.match_indices(flag).any(|(i, _)| {
            !text_of_help[i + flag.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '-')
        });
        if !known {
            return Err(format!("`signoff {} --help` has no {flag}", path.join(" ")));
        }
    }
    Ok(())
}

#[test]
fn every_documented_command_runs_or_says_why_not() {
    let started = Instant::now();
    let root = repo_root();
    let bin = bin_dir();
    let flask = Command::new("python3")
        .args(["-c", "import flask"])
        .status()
        .is_ok_and(|s| s.success());
    let mut failures: Vec<String> = Vec::new();
    let mut used = vec![false; NOT_RUN.len()];
    let mut help_cache = HashMap::new();
    let (mut ran, mut not_run) = (0, 0);
    for file in doc_files() {
        let text = std::fs::read_to_string(root.join(&file)).unwrap();
        let commands = commands_in(&file, &text);
        if commands.is_empty() {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        for linked in ["examples", "bench"] {
            std::os::unix::fs::symlink(root.join(linked), dir.path().join(linked)).unwrap();
        }
        let ports = Ports::new();
        // Servers still running, by port: dropped (killed) at the end of
        // the file, or when a later command needs the port.
        let mut servers: HashMap<u16, Group> = HashMap::new();
        let mut skipped = false;
        for (_, setup, why) in SETUP.iter().filter(|(f, ..)| *f == file) {
            let log = dir.path().join("setup.log");
            if let Err(e) = run_to_end(shell(setup, dir.path(), bin.path()), &log) {
                failures.push(format!("{file}: setup `{setup}` ({why}): {e}"));
            }
        }
        for (n, command) in commands.iter().enumerate() {
            let at = format!("{}:{}: `{}`", command.file, command.line, command.text);
            if let Some(i) = not_run_entry(command) {
                let reason = NOT_RUN[i].2;
                used[i] = true;
                not_run += 1;
                eprintln!("not run: {at}: {reason}");
                let inner = without_sudo(&command.text);
                if inner.starts_with("signoff ") {
                    if let Err(e) = check_against_help(&inner, &mut help_cache) {
                        failures.push(format!("{at}: {e}"));
                    }
                }
                continue;
            }
            let (text, run) = prepare(&command.text, &ports);
            if text.starts_with("python3 ") && !flask {
                support::missing::<()>("python3 with Flask (for examples/flask)");
                skipped = true;
                continue;
            }
            let log = dir.path().join(format!("command-{n}.log"));
            let result = match run {
                Run::Server(port) => {
                    servers.remove(&port);
                    let cmd = shell(&format!("exec {text}"), dir.path(), bin.path());
                    start_server(cmd, port, &log).map(|proc| {
                        servers.insert(port, proc);
                    })
                }
                Run::Terminal => {
                    let mut cmd = Command::new("python3");
                    cmd.args(["-c", PTY_ANSWER, &text, PASSWORD])
                        .current_dir(dir.path());
                    shell_env(&mut cmd, bin.path());
                    run_to_end(cmd, &log)
                }
                Run::ToEnd => run_to_end(shell(&text, dir.path(), bin.path()), &log),
            };
            ran += 1;
            match result {
                Ok(()) => eprintln!("ran: {at} as `{text}`"),
                Err(e) => failures.push(format!("{at} (run as `{text}`): {e}")),
            }
        }
        for (f, path, want) in AFTERWARDS.iter().filter(|(f, ..)| *f == file) {
            let port = ports.of(8080);
            if skipped {
                continue;
            }
            if !servers.contains_key(&port) {
                failures.push(format!("{f}: nothing listens for GET {path}"));
                continue;
            }
            let got = http_status(port, path);
            if got != Some(*want) {
                failures.push(format!("{f}: GET {path} answered {got:?}, expected {want}"));
            }
        }
        drop(servers);
    }
    for (i, (file, pattern, _)) in NOT_RUN.iter().enumerate() {
        if !used[i] {
            failures.push(format!(
                "NOT_RUN names `{pattern}` in {file}, which shows no such command any more"
            ));
        }
    }
    eprintln!(
        "{ran} commands run, {not_run} not run, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn commands_are_read_as_a_shell_reads_them() {
    let text = "intro\n```sh\n# a comment\nsignoff serve --upstream http://127.0.0.1:5000 \\\n    --listen 127.0.0.1:8080   # the app\necho '#not a comment'\n```\n\n```\nsignoff not-sh\n```\n  ```sh\n  $ signoff admin-token\n  token: 2qF0\n  ```\n";
    let commands: Vec<(usize, String)> = commands_in("x.md", text)
        .into_iter()
        .map(|c| (c.line, c.text))
        .collect();
    assert_eq!(
        commands,
        [
            (
                4,
                "signoff serve --upstream http://127.0.0.1:5000 --listen 127.0.0.1:8080".to_owned()
            ),
            (6, "echo '#not a comment'".to_owned()),
            (13, "signoff admin-token".to_owned()),
        ]
    );
    let ports = Ports(BTreeMap::from([(5000, 41000), (8080, 42000)]));
    let (text, run) = prepare("cargo run --release -- demo", &ports);
    assert_eq!(text, "signoff demo --listen 127.0.0.1:42000");
    assert!(matches!(run, Run::Server(42000)));
    let (text, _) = prepare(
        "python3 examples/flask/app.py --port 5000 --x 50001",
        &ports,
    );
    assert_eq!(text, "python3 examples/flask/app.py --port 41000 --x 50001");
    assert!(matches!(
        prepare("signoff user add alice", &ports).1,
        Run::Terminal
    ));
    assert_eq!(
        without_sudo("sudo -u signoff signoff user add alice"),
        "signoff user add alice"
    );
    assert_eq!(
        without_sudo("sudo systemctl daemon-reload"),
        "systemctl daemon-reload"
    );
}

//! Real third-party apps behind `signoff serve --upstream`, in Chromium
//! (docs/gateway.md, "Apps known to work"):
//!
//! - JupyterLab: open a notebook, run `print(6*7)` from the notebook's
//!   toolbar and see `42`; then, over a kernel WebSocket of the page's own,
//!   run code again, sign out, and see signoff close that socket (code
//!   1008) and every other socket of the session (the Jupyter server counts
//!   none left).
//! - Streamlit: its page shows the app's output only once its WebSocket
//!   works.
//!
//! The apps come from a virtualenv: `SIGNOFF_APPS_VENV`, else
//! `${XDG_CACHE_HOME:-$HOME/.cache}/signoff-ci/apps-venv`, which `.ci/run`
//! installs (pinned versions) and keeps between runs. Without it the tests
//! say "skipped", and fail under `SIGNOFF_REQUIRE_SERVICES=1`.
//!
//! Each app runs with a temporary home, configuration and root directory,
//! so nothing of the machine's own setup leaks in, and without any
//! authentication of its own: signoff is the authentication. A failure
//! prints the app's and the gateway's logs and saves a screenshot to
//! `target/browser-artifacts/`.

mod support;

use std::future::Future;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::browser::{wait_until, Browser, Engine, Error, Result};
use support::services::free_port;
use support::{missing, Gateway, PASSWORD, USER};

/// Where `.ci/run` puts the apps' virtualenv unless told otherwise.
const VENV_ENV: &str = "SIGNOFF_APPS_VENV";

/// How long an app may take to answer after it was started (JupyterLab
/// imports a lot; the machine is small and busy).
const APP_START: Duration = Duration::from_secs(90);

fn venv_dir() -> Option<PathBuf> {
    let set = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = set(VENV_ENV) {
        return Some(PathBuf::from(dir));
    }
    let cache = set("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| set("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(cache.join("signoff-ci/apps-venv"))
}

/// The app's command in the virtualenv, or `None` (skipped) when it is not
/// installed.
fn app_command(name: &str) -> Option<PathBuf> {
    let Some(venv) = venv_dir() else {
        return missing(&format!("{name}: set {VENV_ENV} to its virtualenv"));
    };
    let bin = venv.join("bin").join(name);
    if bin.is_file() {
        Some(bin)
    } else {
        missing(&format!(
            "{} (a virtualenv with JupyterLab and Streamlit at {}, as .ci/run installs it; \
             or set {VENV_ENV})",
            bin.display(),
            venv.display()
        ))
    }
}

/// A third-party app server, and everything it starts (Jupyter kernels are
/// processes in sessions of their own), killed when dropped.
struct App {
    name: &'static str,
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl App {
    /// Starts `cmd` with `dir/home` as its home, logging to `dir/NAME.log`.
    fn spawn(name: &'static str, mut cmd: Command, dir: tempfile::TempDir, port: u16) -> App {
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let log = dir.path().join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = cmd
            .current_dir(dir.path())
            .env("HOME", &home)
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_DATA_HOME")
            .env_remove("XDG_CACHE_HOME")
            .env_remove("PYTHONPATH")
            .env_remove("PYTHONSTARTUP")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        App {
            name,
            child,
            port,
            log,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `path` answers 200 on the app's own port.
    async fn wait_ready(&mut self, path: &str) -> Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().ok().flatten() {
                return Err(Error::new(format!(
                    "{} exited ({status}) before answering",
                    self.name
                )));
            }
            if matches!(direct_get(self.port, path), Ok((200, _))) {
                eprintln!("{} answered after {:?}", self.name, started.elapsed());
                return Ok(());
            }
            if started.elapsed() > APP_START {
                return Err(Error::new(format!(
                    "{} did not answer {path} within {APP_START:?}",
                    self.name
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        // Everything below the app first (kernels run in sessions of their
        // own, so the process group does not cover them), found before any
        // of it dies and is handed to init.
        let pid = self.child.id();
        let mut targets: Vec<String> = descendants(pid).iter().map(u32::to_string).collect();
        targets.push(format!("-{pid}")); // its process group (process_group(0))
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg("--")
            .args(&targets)
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every live process below `root`, from `/proc`.
fn descendants(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "PID (COMM) STATE PPID …"; COMM may hold spaces and parentheses.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parents.push((pid, ppid));
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// `GET path` straight to the app (not through signoff): status and body.
fn direct_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    // HTTP/1.0: no chunked body, and the server closes when done.
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n")?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)?;
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let status = reply
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

fn artifact(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/browser-artifacts")
        .join(format!("chromium-{name}.png"))
}

static ASYNC_SLOT: AtomicU64 = AtomicU64::new(1);

/// Runs `body`, the body of an async JavaScript function, in the page and
/// waits for what it returns (a thrown error fails).
async fn run_async(b: &Browser, what: &str, body: &str, timeout: Duration) -> Result<Value> {
    let slot = format!(
        "__signoffAsync{}",
        ASYNC_SLOT.fetch_add(1, Ordering::Relaxed)
    );
    b.exec(&format!(
        "window.{slot} = null;
         (async () => {{ {body} }})().then(
             v => {{ window.{slot} = {{ ok: v === undefined ? null : v }}; }},
             e => {{ window.{slot} = {{ err: String(e && e.stack || e) }}; }});
         return null;"
    ))
    .await?;
    let v = wait_until(timeout, what, || async {
        let v = b.eval(&format!("window.{slot}")).await?;
        Ok((!v.is_null()).then_some(v))
    })
    .await?;
    match v.get("err") {
        Some(e) => Err(Error::new(format!("{what}: {e}"))),
        None => Ok(v["ok"].clone()),
    }
}

/// Signs in through the login page that `path` leads to, and waits for
/// the browser to be back at `path`.
async fn sign_in(b: &Browser, gw: &Gateway, path: &str) -> Result<()> {
    b.goto(&gw.url(path)).await?;
    let next: String = url_escape(path);
    b.wait_for_path(
        &format!("/.signoff/login?next={next}"),
        Duration::from_secs(20),
    )
    .await?;
    b.submit_login(USER, PASSWORD).await?;
    b.wait_for_path(path, Duration::from_secs(30)).await
}

fn url_escape(path: &str) -> String {
    serde_urlencoded::to_string([("", path)]).unwrap()[1..].to_owned()
}

/// Runs a scenario with a deadline; a failure saves a screenshot and
/// prints the logs of the app and the gateway.
async fn scenario<F>(
    name: &str,
    limit: Duration,
    b: &Browser,
    app: &App,
    gw: &Gateway,
    steps: F,
) -> Result<()>
where
    F: Future<Output = Result<()>>,
{
    let started = Instant::now();
    let result = match tokio::time::timeout(limit, steps).await {
        Ok(r) => r,
        Err(_) => Err(Error::new(format!("{name} took longer than {limit:?}"))),
    };
    eprintln!("{name}: {:?} after the app answered", started.elapsed());
    if let Err(e) = &result {
        let shot = artifact(&format!("{name}-failure"));
        let saved = b.screenshot(&shot).await;
        let text = b.visible_text().await.unwrap_or_default();
        let url = b.current_url().await.unwrap_or_default();
        eprintln!(
            "{name} failed: {e}\nbrowser at {url}, screenshot {} ({saved:?}); page text:\n{text:.2000}\n\
             ---- {} log ----\n{}\n---- gateway log ----\n{}",
            shot.display(),
            app.name,
            app.log_text(),
            gw.proc.log_text()
        );
    }
    result
}

// ---------------------------------------------------------------- JupyterLab

fn start_jupyter() -> Option<App> {
    let jupyter = app_command("jupyter")?;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("notebooks");
    let jupyter_dir = dir.path().join("jupyter");
    for d in [&root, &jupyter_dir] {
        std::fs::create_dir_all(d).unwrap();
    }
    let port = free_port();
    let mut cmd = Command::new(jupyter);
    // docs/gateway.md, "Apps known to work": these flags.
    cmd.args([
        "lab",
        "--no-browser",
        "--allow-root",
        "--ServerApp.ip=127.0.0.1",
        &format!("--ServerApp.port={port}"),
        "--ServerApp.port_retries=0",
        "--IdentityProvider.token=",
        "--LabApp.extension_manager=readonly",
    ])
    .arg(format!("--ServerApp.root_dir={}", root.display()))
    .env("JUPYTER_NO_CONFIG", "1")
    .env("JUPYTER_CONFIG_DIR", jupyter_dir.join("config"))
    .env("JUPYTER_DATA_DIR", jupyter_dir.join("data"))
    .env("JUPYTER_RUNTIME_DIR", jupyter_dir.join("runtime"))
    .env("IPYTHONDIR", jupyter_dir.join("ipython"))
    .env_remove("JUPYTER_PATH")
    .env_remove("JUPYTER_CONFIG_PATH");
    Some(App::spawn("jupyterlab", cmd, dir, port))
}

/// The notebook the test runs: one code cell.
fn notebook() -> Value {
    json!({
        "type": "notebook",
        "format": "json",
        "content": {
            "cells": [{
                "cell_type": "code",
                "id": "signoff-cell",
                "source": "print(6*7)",
                "metadata": {},
                "outputs": [],
                "execution_count": null
            }],
            "metadata": {
                "kernelspec": { "name": "python3", "display_name": "Python 3", "language": "python" }
            },
            "nbformat": 4,
            "nbformat_minor": 5
        }
    })
}

/// The kernels the Jupyter server has, asked directly (not through
/// signoff): (id, execution state, open WebSocket connections).
fn kernels(app: &App) -> Result<Vec<(String, String, u64)>> {
    let (status, body) = direct_get(app.port, "/api/kernels")
        .map_err(|e| Error::new(format!("GET /api/kernels: {e}")))?;
    if status != 200 {
        return Err(Error::new(format!(
            "GET /api/kernels: {status} {body:.300}"
        )));
    }
    let list: Value = serde_json::from_str(&body)
        .map_err(|e| Error::new(format!("/api/kernels: {e}: {body:.300}")))?;
    Ok(list
        .as_array()
        .into_iter()
        .flatten()
        .map(|k| {
            (
                k["id"].as_str().unwrap_or_default().to_owned(),
                k["execution_state"].as_str().unwrap_or_default().to_owned(),
                k["connections"].as_u64().unwrap_or(0),
            )
        })
        .collect())
}

/// Opens a kernel WebSocket of the page's own (`window.__kernelSocket`),
/// runs `print(6*7)` over it and returns what the kernel printed.
const OWN_KERNEL_SOCKET: &str = r#"
    const id = arguments_kernel;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const url = `${scheme}//${location.host}/api/kernels/${id}/channels?session_id=signoff-test`;
    const state = window.__kernelSocket = { opened: false, closed: null, printed: "" };
    const ws = new WebSocket(url);
    ws.onclose = (e) => { state.closed = { code: e.code, reason: e.reason, clean: e.wasClean }; };
    await new Promise((resolve, reject) => {
        ws.onopen = () => { state.opened = true; resolve(); };
        ws.onerror = () => reject(new Error("the kernel WebSocket did not open"));
    });
    const msgId = "signoff-" + Date.now();
    return await new Promise((resolve) => {
        ws.onmessage = (e) => {
            if (typeof e.data !== "string") return;
            const msg = JSON.parse(e.data);
            if (msg.parent_header && msg.parent_header.msg_id === msgId && msg.msg_type === "stream") {
                state.printed += msg.content.text;
                resolve(state.printed);
            }
        };
        ws.send(JSON.stringify({
            header: { msg_id: msgId, username: "", session: "signoff-test",
                      msg_type: "execute_request", version: "5.3", date: new Date().toISOString() },
            parent_header: {}, metadata: {}, channel: "shell", buffers: [],
            content: { code: "print(6*7)", silent: false, store_history: false,
                       user_expressions: {}, allow_stdin: false, stop_on_error: true },
        }));
    });
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyterlab_runs_a_cell_and_its_kernel_socket_ends_at_sign_out() -> Result<()> {
    let Some(mut app) = start_jupyter() else {
        return Ok(());
    };
    let gw = Gateway::start(&app.url(), &[]);
    let Some(b) = Browser::open(Engine::Chromium).await else {
        return Ok(());
    };
    if let Err(e) = app.wait_ready("/api").await {
        panic!("{e}; its log:\n{}", app.log_text());
    }
    let app = app;
    scenario(
        "jupyterlab",
        Duration::from_secs(240),
        &b,
        &app,
        &gw,
        jupyter_steps(&b, &app, &gw),
    )
    .await
}

async fn jupyter_steps(b: &Browser, app: &App, gw: &Gateway) -> Result<()> {
    sign_in(b, gw, "/lab").await?;

    // The notebook, through signoff with Jupyter's own XSRF cookie, as
    // JupyterLab's front end sends it.
    let created = run_async(
        b,
        "create the notebook",
        &format!(
            r#"const xsrf = (document.cookie.match(/(?:^|; )_xsrf=([^;]*)/) || [])[1] || "";
               const r = await fetch("/api/contents/signoff.ipynb", {{
                   method: "PUT",
                   headers: {{ "Content-Type": "application/json", "X-XSRFToken": decodeURIComponent(xsrf) }},
                   body: JSON.stringify({}),
               }});
               return r.status + " " + (await r.text()).slice(0, 200);"#,
            notebook()
        ),
        Duration::from_secs(30),
    )
    .await?;
    let created = created.as_str().unwrap_or_default();
    if !created.starts_with("201") && !created.starts_with("200") {
        return Err(Error::new(format!("creating the notebook: {created}")));
    }

    // Open it in the UI: JupyterLab starts a kernel and connects to it
    // over a WebSocket, which the server counts.
    b.goto(&gw.url("/lab/tree/signoff.ipynb")).await?;
    b.wait_for_js(
        "document.querySelector('.jp-NotebookPanel .jp-Cell .jp-InputArea')",
        Duration::from_secs(60),
    )
    .await?;
    let kernel = wait_until(
        Duration::from_secs(60),
        "the notebook's kernel to be idle with a WebSocket connected",
        || async {
            Ok(kernels(app)?
                .into_iter()
                .find(|(_, state, connections)| state == "idle" && *connections > 0)
                .map(|(id, _, _)| id))
        },
    )
    .await?;

    // Run the cell from the notebook's toolbar, and see its output.
    b.click(".jp-NotebookPanel .jp-Cell .jp-InputArea-editor")
        .await?;
    b.click(".jp-NotebookPanel-toolbar [data-command='notebook:run-cell-and-select-next']")
        .await?;
    b.wait_for_js(
        "Array.from(document.querySelectorAll('.jp-NotebookPanel .jp-OutputArea-output'))\
             .some(o => o.innerText.trim() === '42')",
        Duration::from_secs(60),
    )
    .await?;

    // A kernel WebSocket of the page's own, which signing out must close.
    let printed = run_async(
        b,
        "run code over the page's own kernel WebSocket",
        &OWN_KERNEL_SOCKET.replace("arguments_kernel", &json!(kernel).to_string()),
        Duration::from_secs(30),
    )
    .await?;
    if printed.as_str().map(str::trim) != Some("42") {
        return Err(Error::new(format!(
            "the kernel printed {printed} over the page's WebSocket"
        )));
    }

    // Sign out from the page (same origin, so no CSRF token needed).
    let status = run_async(
        b,
        "sign out",
        r#"const r = await fetch("/.signoff/logout", { method: "POST" });
           return r.status + " " + r.url;"#,
        Duration::from_secs(20),
    )
    .await?;
    if !status
        .as_str()
        .unwrap_or_default()
        .contains("/.signoff/signed-out")
    {
        return Err(Error::new(format!("sign-out answered {status}")));
    }
    let closed = wait_until(
        Duration::from_secs(10),
        "the page's kernel WebSocket to close after sign-out",
        || async {
            let v = b.eval("window.__kernelSocket.closed").await?;
            Ok((!v.is_null()).then_some(v))
        },
    )
    .await?;
    if closed["code"] != 1008 {
        return Err(Error::new(format!(
            "the kernel WebSocket closed with {closed}, not code 1008 (policy violation)"
        )));
    }
    // JupyterLab's own socket too: the server has none left.
    wait_until(
        Duration::from_secs(10),
        "the Jupyter server to have no kernel WebSocket left",
        || async {
            let left: u64 = kernels(app)?.iter().map(|k| k.2).sum();
            Ok((left == 0).then_some(()))
        },
    )
    .await?;
    // And a new one is refused.
    let reopened = run_async(
        b,
        "open a kernel WebSocket after sign-out",
        &format!(
            r#"const scheme = location.protocol === "https:" ? "wss:" : "ws:";
               const ws = new WebSocket(`${{scheme}}//${{location.host}}/api/kernels/{kernel}/channels`);
               return await new Promise((resolve) => {{
                   ws.onopen = () => resolve("opened");
                   ws.onclose = (e) => resolve("closed " + e.code);
               }});"#
        ),
        Duration::from_secs(20),
    )
    .await?;
    if reopened == "opened" {
        return Err(Error::new(
            "a kernel WebSocket opened after sign-out".to_owned(),
        ));
    }
    Ok(())
}

// ----------------------------------------------------------------- Streamlit

/// The app: its text exists only once the script has run on the server
/// and its result came over the WebSocket.
const STREAMLIT_APP: &str = r#"import streamlit as st

st.title("signoff")
st.write(f"streamlit-marker-{6 * 7}")
"#;

fn start_streamlit() -> Option<App> {
    let streamlit = app_command("streamlit")?;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("app.py");
    std::fs::write(&script, STREAMLIT_APP).unwrap();
    let port = free_port();
    let mut cmd = Command::new(streamlit);
    // docs/gateway.md, "Apps known to work": these flags.
    cmd.arg("run").arg(&script).args([
        "--server.headless=true",
        "--server.address=127.0.0.1",
        &format!("--server.port={port}"),
        "--browser.gatherUsageStats=false",
        "--server.fileWatcherType=none",
    ]);
    Some(App::spawn("streamlit", cmd, dir, port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamlit_renders_over_its_websocket() -> Result<()> {
    let Some(mut app) = start_streamlit() else {
        return Ok(());
    };
    let gw = Gateway::start(&app.url(), &[]);
    let Some(b) = Browser::open(Engine::Chromium).await else {
        return Ok(());
    };
    if let Err(e) = app.wait_ready("/_stcore/health").await {
        panic!("{e}; its log:\n{}", app.log_text());
    }
    let app = app;
    scenario(
        "streamlit",
        Duration::from_secs(120),
        &b,
        &app,
        &gw,
        streamlit_steps(&b, &gw),
    )
    .await
}

async fn streamlit_steps(b: &Browser, gw: &Gateway) -> Result<()> {
    sign_in(b, gw, "/").await?;
    b.wait_for_js(
        "document.body && document.body.innerText.includes('streamlit-marker-42')",
        Duration::from_secs(60),
    )
    .await
}

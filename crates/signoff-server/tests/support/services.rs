//! Servers the tests start and kill themselves: `redis-server` and a
//! PostgreSQL cluster (`initdb` + `pg_ctl`), each on a free port in a
//! temporary directory. Used by the fault tests; the ordinary multi-node
//! tests use the machine's running servers.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::missing;

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, up: bool, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let open = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        if open == up {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The machine's Redis, or `SIGNOFF_TEST_REDIS`.
pub fn shared_redis() -> Option<String> {
    let url = std::env::var("SIGNOFF_TEST_REDIS").unwrap_or("redis://127.0.0.1:6379".into());
    let hostport = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap_or("");
    match std::net::TcpStream::connect(hostport) {
        Ok(_) => Some(url),
        Err(_) => missing(&format!("Redis at {url}")),
    }
}

/// The machine's PostgreSQL, or `SIGNOFF_TEST_POSTGRES`.
pub fn shared_postgres() -> Option<String> {
    let url = std::env::var("SIGNOFF_TEST_POSTGRES")
        .unwrap_or("postgres://postgres@127.0.0.1:5432/test".into());
    let hostport = url
        .rsplit('@')
        .next()
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("");
    match std::net::TcpStream::connect(hostport) {
        Ok(_) => Some(url),
        Err(_) => missing(&format!("PostgreSQL at {url}")),
    }
}

/// A random name for this run's keys or schema.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{:016x}", rand::random::<u64>())
}

/// A `redis-server` of our own, with AOF on (every write fsynced), so a
/// restart keeps what it had.
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> Option<RedisServer> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            return missing("redis-server (for the fault tests)");
        }
        let mut server = RedisServer {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        server.run();
        Some(server)
    }

    fn run(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        assert!(
            wait_for_port(self.port, true, Duration::from_secs(10)),
            "redis-server did not start on port {}",
            self.port
        );
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: no shutdown, no final save.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        assert!(wait_for_port(self.port, false, Duration::from_secs(5)));
    }

    /// Starts again on the same port and directory (AOF replayed).
    pub fn restart(&mut self) {
        self.run();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A PostgreSQL cluster of our own (`initdb`, `pg_ctl`), trust auth.
pub struct PgCluster {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    running: bool,
}

fn pg_bin() -> Option<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(root)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

impl PgCluster {
    pub fn start() -> Option<PgCluster> {
        let Some(bin) = pg_bin() else {
            return missing("PostgreSQL's initdb and pg_ctl (for the fault tests)");
        };
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            // PostgreSQL refuses to run as root: hand the directory over.
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown the cluster directory to postgres");
        }
        let mut cluster = PgCluster {
            port: free_port(),
            dir,
            bin,
            running: false,
        };
        let data = cluster.data();
        let status = cluster
            .command("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .status()
            .expect("initdb");
        assert!(status.success(), "initdb failed");
        cluster.run();
        Some(cluster)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        if is_root() {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        }
    }

    fn run(&mut self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on",
            self.port,
            self.dir.path().display()
        );
        let status = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-o", &options, "-l"])
            .arg(self.dir.path().join("pg.log"))
            .args(["-w", "start"])
            .stdout(Stdio::null())
            .status()
            .expect("pg_ctl start");
        assert!(status.success(), "pg_ctl start failed");
        self.running = true;
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl stop -m immediate`: the server quits without a checkpoint,
    /// as in a crash; what was committed is replayed from the WAL.
    pub fn kill(&mut self) {
        if !self.running {
            return;
        }
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .status();
        self.running = false;
        assert!(wait_for_port(self.port, false, Duration::from_secs(10)));
    }

    pub fn restart(&mut self) {
        self.run();
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.kill();
    }
}

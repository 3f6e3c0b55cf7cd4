//! Many nodes on one shared store: two `signoff serve` processes on Redis
//! (and again on PostgreSQL) in front of one upstream. A logout on node A
//! must be refused on node B, quickly with local caches on (the revocation
//! bus) and at once with them off; and when the store dies, nothing is let
//! through, and service comes back by itself.
//!
//! The timing tests use the machine's Redis and PostgreSQL, each run under
//! its own key prefix or schema. The fault tests start and kill their own
//! `redis-server` and PostgreSQL cluster on free ports.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use signoff::{
    NewSession, Policy, PostgresOptions, PostgresStore, RedisOptions, RedisStore, SessionData,
    SessionStore, Sessions, UserId, UserStore,
};
use support::services::{self, PgCluster, RedisServer};
use support::websocket::{connect, echo, next_close, Socket, WsUpstream};
use support::{add_user, cli, cookie, get, post_form, Gateway, Upstream, PASSWORD, USER};

#[derive(Clone, Copy, Debug)]
enum Kind {
    Redis,
    Postgres,
}

/// One deployment's store: the `--db` URL the nodes get, and its name
/// (key prefix or schema) for cleaning up.
struct Shared {
    kind: Kind,
    base: String,
    name: String,
}

impl Shared {
    fn new(kind: Kind, base: String) -> Shared {
        let name = match kind {
            Kind::Redis => services::unique("signoff-test-"),
            Kind::Postgres => services::unique("signoff_t_"),
        };
        Shared { kind, base, name }
    }

    fn on_machine(kind: Kind) -> Option<Shared> {
        let base = match kind {
            Kind::Redis => services::shared_redis()?,
            Kind::Postgres => services::shared_postgres()?,
        };
        Some(Shared::new(kind, base))
    }

    fn db(&self) -> String {
        match self.kind {
            Kind::Redis => format!("{}?prefix={}", self.base, self.name),
            Kind::Postgres => format!("{}?schema={}", self.base, self.name),
        }
    }

    /// The test's own connection to the store, to make sessions the way a
    /// third node would (without paying for a password hash each time).
    async fn engine(&self) -> (Sessions, UserId) {
        let (sessions, users): (Arc<dyn SessionStore>, Arc<dyn UserStore>) = match self.kind {
            Kind::Redis => {
                let mut options = RedisOptions::new(self.base.clone());
                options.prefix = self.name.clone();
                let store = Arc::new(RedisStore::connect_with(options).await.unwrap());
                (store.clone(), store)
            }
            Kind::Postgres => {
                let mut options = PostgresOptions::new(self.base.clone());
                options.schema = Some(self.name.clone());
                let store = Arc::new(PostgresStore::connect_with(options).await.unwrap());
                (store.clone(), store)
            }
        };
        let user = users.user_by_name(USER).await.unwrap().expect("alice");
        // It seals with the keys the store keeps, as the nodes do.
        (Sessions::new(sessions, Policy::default()), user.id)
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Best effort: the machine's servers are shared by every run.
        match self.kind {
            Kind::Redis => {
                let script = format!(
                    "redis-cli -u '{}' --scan --pattern '{}:*' | xargs -r redis-cli -u '{}' unlink",
                    self.base, self.name, self.base
                );
                let _ = std::process::Command::new("sh")
                    .args(["-c", &script])
                    .output();
            }
            Kind::Postgres => {
                let _ = std::process::Command::new("psql")
                    .args([&self.base, "-q", "-c"])
                    .arg(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name))
                    .output();
            }
        }
    }
}

/// Two gateways on one store, and the upstream they share.
struct TwoNodes {
    a: Gateway,
    b: Gateway,
    _upstream: Upstream,
}

fn two_nodes(db: &str, extra: &[&str]) -> Option<TwoNodes> {
    let upstream = Upstream::start()?;
    add_user(db, USER, PASSWORD);
    let a = Gateway::start_on(
        tempfile::tempdir().unwrap(),
        db,
        Some(&upstream.url()),
        extra,
    );
    let b = Gateway::start_on(
        tempfile::tempdir().unwrap(),
        db,
        Some(&upstream.url()),
        extra,
    );
    Some(TwoNodes {
        a,
        b,
        _upstream: upstream,
    })
}

/// A signed-in session made the way the gateway makes them.
async fn session(engine: &Sessions, user: &UserId) -> String {
    let mut data = SessionData::new();
    data.insert("signoff.user".to_owned(), USER.to_owned());
    let issued = engine
        .create(NewSession::for_user(user.clone()).reserved_data(data))
        .await
        .unwrap();
    issued.token.expose().to_owned()
}

async fn private(gw: &Gateway, token: &str) -> u16 {
    get(&gw.url("/private/page"), &[("cookie", &cookie(token))])
        .await
        .status
}

/// Signs out at `gw` as a same-origin browser form would.
async fn logout(gw: &Gateway, token: &str) -> support::Reply {
    post_form(
        &gw.url("/.signoff/logout"),
        &[],
        &[("cookie", &cookie(token)), ("origin", &gw.origin)],
    )
    .await
}

async fn metric(gw: &Gateway, name: &str) -> Option<f64> {
    let text = get(&gw.url("/.signoff/metrics"), &[]).await.text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Waits until node `gw` has subscribed to the bus.
async fn wait_for_bus(gw: &Gateway) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(gw, "signoff_bus_connected").await != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "node never subscribed to the revocation bus; its log:\n{}",
            gw.proc.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// For each trial: a fresh session, used on B (so B caches it) and on A;
/// logged out on A; then B is asked until it refuses. Returns the time from
/// A's logout response to B's first refusal, and how many of B's answers
/// after the logout response still let the session through.
async fn revocation_trials(
    nodes: &TwoNodes,
    engine: &Sessions,
    user: &UserId,
    trials: usize,
) -> (Vec<Duration>, usize) {
    let mut samples = Vec::with_capacity(trials);
    let mut stale = 0;
    for _ in 0..trials {
        let token = session(engine, user).await;
        // Twice on B: with caches on, the second answer comes from B's
        // memory, so only an invalidation can make B refuse it later.
        assert_eq!(
            private(&nodes.b, &token).await,
            200,
            "B accepts the session"
        );
        assert_eq!(
            private(&nodes.b, &token).await,
            200,
            "B accepts the session"
        );
        assert_eq!(
            private(&nodes.a, &token).await,
            200,
            "A accepts the session"
        );
        let out = logout(&nodes.a, &token).await;
        assert_eq!(out.status, 303, "logout on A: {}", out.text());
        let done = Instant::now();
        loop {
            let status = private(&nodes.b, &token).await;
            if status == 401 {
                break;
            }
            assert_eq!(status, 200, "B answered neither 200 nor 401");
            stale += 1;
            assert!(
                done.elapsed() < Duration::from_secs(5),
                "B still accepts a session A signed out 5 s ago"
            );
        }
        samples.push(done.elapsed());
        // A refuses it at once, of course.
        assert_eq!(private(&nodes.a, &token).await, 401);
    }
    samples.sort();
    (samples, stale)
}

fn report(label: &str, samples: &[Duration], stale: usize) {
    eprintln!(
        "FIGURE {label}: {} trials, logout on A to refusal on B: p50 {:?}, p99 {:?}, max {:?}; \
         stale answers {stale}",
        samples.len(),
        percentile(samples, 50.0),
        percentile(samples, 99.0),
        samples.last().unwrap(),
    );
}

async fn logout_reaches_the_other_node_with_caches(kind: Kind) {
    let Some(shared) = Shared::on_machine(kind) else {
        return;
    };
    let Some(nodes) = two_nodes(&shared.db(), &["--metrics", "--cache-staleness", "30s"]) else {
        return;
    };
    wait_for_bus(&nodes.a).await;
    wait_for_bus(&nodes.b).await;
    let (engine, user) = shared.engine().await;

    // A real sign-in on A, used on B, signed out on A.
    let token = nodes.a.login(USER, PASSWORD).await;
    assert_eq!(private(&nodes.b, &token).await, 200);
    assert_eq!(logout(&nodes.a, &token).await.status, 303);

    let (samples, stale) = revocation_trials(&nodes, &engine, &user, 300).await;
    report(&format!("{kind:?} caches on"), &samples, stale);
    // With a 30 s cache, only the bus can make B refuse this fast.
    let p99 = percentile(&samples, 99.0);
    assert!(p99 <= Duration::from_millis(50), "p99 {p99:?} > 50 ms");
    let hits = metric(&nodes.b, "signoff_session_cache_hits_total").await;
    assert!(hits.unwrap_or(0.0) >= 300.0, "B's cache was used: {hits:?}");
    let applied = metric(&nodes.b, "signoff_bus_invalidations_total").await;
    assert!(applied.unwrap_or(0.0) >= 300.0, "invalidations {applied:?}");
}

async fn logout_is_immediate_without_caches(kind: Kind) {
    let Some(shared) = Shared::on_machine(kind) else {
        return;
    };
    let Some(nodes) = two_nodes(&shared.db(), &["--cache-staleness", "0s"]) else {
        return;
    };
    let (engine, user) = shared.engine().await;
    let (samples, stale) = revocation_trials(&nodes, &engine, &user, 1000).await;
    report(&format!("{kind:?} caches off"), &samples, stale);
    assert_eq!(stale, 0, "B let a signed-out session through");
}

/// A WebSocket to `gw`'s upstream, opened with `token` from `gw`'s origin.
async fn open_socket(gw: &Gateway, token: &str) -> Socket {
    connect(
        &gw.origin,
        "/ws/app",
        &[("cookie", &cookie(token)), ("origin", &gw.origin)],
    )
    .await
    .expect("the socket opens")
}

/// A WebSocket held by node B ends when its session is signed out on
/// node A (docs/security.md, invariant 10): the bus tells B's watch. A
/// socket of another session of the same user stays open.
async fn logout_on_one_node_closes_the_socket_on_the_other(kind: Kind) {
    let Some(shared) = Shared::on_machine(kind) else {
        return;
    };
    let db = shared.db();
    let up = WsUpstream::start().await;
    add_user(&db, USER, PASSWORD);
    let extra = ["--metrics", "--cache-staleness", "30s"];
    let a = Gateway::start_on(tempfile::tempdir().unwrap(), &db, Some(&up.url()), &extra);
    let b = Gateway::start_on(tempfile::tempdir().unwrap(), &db, Some(&up.url()), &extra);
    wait_for_bus(&a).await;
    wait_for_bus(&b).await;
    let mut took = Vec::new();
    for round in 0..5 {
        let token = a.login(USER, PASSWORD).await;
        let kept = a.login(USER, PASSWORD).await;
        let mut socket = open_socket(&b, &token).await;
        let mut other = open_socket(&b, &kept).await;
        assert_eq!(echo(&mut socket, "hi").await, "hi");
        assert_eq!(logout(&a, &token).await.status, 303);
        let (code, reason, after) = next_close(&mut socket, Duration::from_secs(1)).await;
        assert_eq!(
            (code, reason.as_str()),
            (1008, "signed out"),
            "round {round}"
        );
        took.push(after);
        assert_eq!(echo(&mut other, "still").await, "still", "round {round}");
    }
    took.sort();
    eprintln!("{kind:?}: socket on B closed after a logout on A in {took:?}");
    // The bound: 1 s plus the bus's delivery (milliseconds here).
    assert!(
        took[took.len() - 1] <= Duration::from_millis(1500),
        "{took:?}"
    );
}

/// Ending all of a user's sessions from the CLI (one write on PostgreSQL,
/// announced once for the user) closes their sockets on every node, and
/// leaves another user's socket open.
async fn cli_end_closes_the_users_sockets_on_every_node(kind: Kind) {
    let Some(shared) = Shared::on_machine(kind) else {
        return;
    };
    let db = shared.db();
    let up = WsUpstream::start().await;
    add_user(&db, USER, PASSWORD);
    add_user(&db, "other-user", PASSWORD);
    let extra = ["--metrics", "--cache-staleness", "30s"];
    let a = Gateway::start_on(tempfile::tempdir().unwrap(), &db, Some(&up.url()), &extra);
    let b = Gateway::start_on(tempfile::tempdir().unwrap(), &db, Some(&up.url()), &extra);
    wait_for_bus(&a).await;
    wait_for_bus(&b).await;
    let mut on_a = open_socket(&a, &a.login(USER, PASSWORD).await).await;
    let mut on_b = open_socket(&b, &b.login(USER, PASSWORD).await).await;
    let mut bystander = open_socket(&b, &b.login("other-user", PASSWORD).await).await;
    assert_eq!(echo(&mut on_b, "hi").await, "hi");
    cli(&["sessions", "end", "--user", USER], &db);
    let done = Instant::now();
    for (node, socket) in [("A", &mut on_a), ("B", &mut on_b)] {
        let (code, reason, _) = next_close(socket, Duration::from_millis(1500)).await;
        let after = done.elapsed();
        assert_eq!((code, reason.as_str()), (1008, "signed out"), "node {node}");
        eprintln!("{kind:?}: socket on {node} closed {after:?} after the CLI end");
        // The bound: 1 s plus the bus's delivery (milliseconds here).
        assert!(
            after <= Duration::from_millis(1500),
            "node {node}: {after:?}"
        );
    }
    assert_eq!(echo(&mut bystander, "still").await, "still");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_end_closes_the_users_sockets_on_every_node() {
    cli_end_closes_the_users_sockets_on_every_node(Kind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cli_end_closes_the_users_sockets_on_every_node() {
    cli_end_closes_the_users_sockets_on_every_node(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_logout_on_one_node_closes_the_socket_on_the_other() {
    logout_on_one_node_closes_the_socket_on_the_other(Kind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_logout_on_one_node_closes_the_socket_on_the_other() {
    logout_on_one_node_closes_the_socket_on_the_other(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_logout_on_one_node_reaches_the_other_within_50ms() {
    logout_reaches_the_other_node_with_caches(Kind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_logout_on_one_node_reaches_the_other_within_50ms() {
    logout_reaches_the_other_node_with_caches(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_without_caches_no_node_ever_answers_stale() {
    logout_is_immediate_without_caches(Kind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_without_caches_no_node_ever_answers_stale() {
    logout_is_immediate_without_caches(Kind::Postgres).await;
}

/// Ends on every node what the CLI, the sessions page or the admin API
/// ends elsewhere: here, the CLI's `sessions end --user` on the shared store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_end_reaches_every_node() {
    cli_end_reaches_every_node(Kind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cli_end_reaches_every_node() {
    cli_end_reaches_every_node(Kind::Postgres).await;
}

/// Token mode on two nodes (caches on, 30 s): an access token signed by
/// node A is accepted by B (shared keys); after logout on A, B refuses that
/// same unexpired token, within the bus's delay, and the refresh token is
/// dead on B too. Both nodes name the same issuer and audience, as nodes
/// behind one load balancer (one public URL) do.
async fn bearer_logout_reaches_the_other_node(kind: Kind) {
    let Some(shared) = Shared::on_machine(kind) else {
        return;
    };
    let flags = [
        "--metrics",
        "--cache-staleness",
        "30s",
        "--tokens",
        "--token-issuer",
        "https://app.test",
        "--token-audience",
        "https://app.test",
    ];
    let Some(nodes) = two_nodes(&shared.db(), &flags) else {
        return;
    };
    wait_for_bus(&nodes.a).await;
    wait_for_bus(&nodes.b).await;
    let bearer_status = |gw: &Gateway, token: &str| {
        let url = gw.url("/private/page");
        let auth = format!("Bearer {token}");
        async move { get(&url, &[("authorization", &auth)]).await.status }
    };
    let mut samples = Vec::new();
    let mut stale = 0;
    for _ in 0..20 {
        let login = support::request(
            hyper::Method::POST,
            &nodes.a.url("/.signoff/api/login"),
            &[],
            Some((
                "application/json",
                serde_json::json!({"username": USER, "password": PASSWORD})
                    .to_string()
                    .into_bytes(),
            )),
        )
        .await;
        assert_eq!(login.status, 200, "{}", login.text());
        let pair = login.json();
        let access = pair["access_token"].as_str().unwrap().to_owned();
        let refresh = pair["refresh_token"].as_str().unwrap().to_owned();
        // Twice on B, so its cache holds the session.
        assert_eq!(bearer_status(&nodes.b, &access).await, 200);
        assert_eq!(bearer_status(&nodes.b, &access).await, 200);
        let out = support::request(
            hyper::Method::POST,
            &nodes.a.url("/.signoff/api/logout"),
            &[("authorization", &format!("Bearer {access}"))],
            None,
        )
        .await;
        assert_eq!(out.status, 200, "{}", out.text());
        let done = Instant::now();
        loop {
            let status = bearer_status(&nodes.b, &access).await;
            if status == 401 {
                break;
            }
            assert_eq!(status, 200);
            stale += 1;
            assert!(
                done.elapsed() < Duration::from_secs(1),
                "B still accepts an access token 1 s after logout on A (its cache is 30 s)"
            );
        }
        samples.push(done.elapsed());
        let r = post_form(
            &nodes.b.url("/.signoff/token"),
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
            &[],
        )
        .await;
        assert_eq!(
            r.status,
            400,
            "the refresh token is dead on B: {}",
            r.text()
        );
    }
    samples.sort();
    report(
        &format!("{kind:?} bearer token, caches on"),
        &samples,
        stale,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_bearer_token_logout_on_one_node_is_refused_on_the_other() {
    bearer_logout_reaches_the_other_node(Kind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_bearer_token_logout_on_one_node_is_refused_on_the_other() {
    bearer_logout_reaches_the_other_node(Kind::Postgres).await;
}

async fn cli_end_reaches_every_node(kind: Kind) {
    let Some(shared) = Shared::on_machine(kind) else {
        return;
    };
    let Some(nodes) = two_nodes(&shared.db(), &["--metrics", "--cache-staleness", "30s"]) else {
        return;
    };
    wait_for_bus(&nodes.a).await;
    wait_for_bus(&nodes.b).await;
    let token = nodes.a.login(USER, PASSWORD).await;
    assert_eq!(private(&nodes.a, &token).await, 200);
    assert_eq!(private(&nodes.b, &token).await, 200);
    cli(&["sessions", "end", "--user", USER], &shared.db());
    let done = Instant::now();
    for node in [&nodes.a, &nodes.b] {
        while private(node, &token).await != 401 {
            assert!(
                done.elapsed() < Duration::from_millis(500),
                "a node still accepts it"
            );
        }
    }
}

/// Requests hammering one node in the background; each records when its
/// answer came and what it was.
fn load(
    gw: &Gateway,
    token: &str,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(Instant, u16)>> {
    let url = gw.url("/private/load");
    let cookie = cookie(token);
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let status = get(&url, &[("cookie", &cookie)]).await.status;
            seen.push((Instant::now(), status));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        seen
    })
}

/// Kills the store under load and brings it back:
/// - while it is down, protected requests get 503 (with `no-store`), never
///   200, on both nodes, and the process keeps answering its health check;
/// - a logout during the outage is reported as failed (the session is not
///   ended, and the user is told so) and works once the store is back;
/// - after a restart, sessions made before the crash work again, on both
///   nodes, without restarting signoff.
async fn store_outage(kind: Kind, kill: impl FnOnce(), restart: impl FnOnce(), shared: Shared) {
    let Some(nodes) = two_nodes(&shared.db(), &["--metrics"]) else {
        return;
    };
    wait_for_bus(&nodes.a).await;
    wait_for_bus(&nodes.b).await;
    let kept = nodes.a.login(USER, PASSWORD).await;
    let to_end = nodes.b.login(USER, PASSWORD).await;
    assert_eq!(private(&nodes.b, &kept).await, 200);
    assert_eq!(private(&nodes.a, &to_end).await, 200);

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loads = [
        load(&nodes.a, &kept, stop.clone()),
        load(&nodes.b, &kept, stop.clone()),
    ];
    tokio::time::sleep(Duration::from_millis(300)).await;
    kill();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // During the outage.
    for node in [&nodes.a, &nodes.b] {
        let reply = get(&node.url("/private/x"), &[("cookie", &cookie(&kept))]).await;
        assert_eq!(reply.status, 503, "{kind:?} down: {}", reply.text());
        assert!(reply
            .header("cache-control")
            .unwrap_or("")
            .contains("no-store"));
        assert_eq!(get(&node.url("/.signoff/healthz"), &[]).await.status, 200);
        assert_eq!(
            metric(node, "signoff_session_cache_trusted").await,
            Some(0.0)
        );
    }
    let failed = logout(&nodes.b, &to_end).await;
    assert_eq!(failed.status, 503, "logout while down: {}", failed.text());
    assert!(
        failed.text().contains("still signed in"),
        "{}",
        failed.text()
    );
    assert!(failed.header("clear-site-data").is_none());
    assert!(failed.new_cookie("signoff").is_none());
    let login = post_form(
        &nodes.a.url("/.signoff/login"),
        &[("username", USER), ("password", PASSWORD)],
        &[("origin", &nodes.a.origin)],
    )
    .await;
    assert_eq!(login.status, 503, "login while down");
    assert!(login.text().contains("Try again"), "{}", login.text());

    let restarting = Instant::now();
    restart();
    let back = Instant::now();
    for node in [&nodes.a, &nodes.b] {
        while private(node, &kept).await != 200 {
            assert!(
                back.elapsed() < Duration::from_secs(20),
                "{kind:?}: service did not resume; log:\n{}",
                node.proc.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    eprintln!(
        "FIGURE {kind:?} outage: service back {:?} after the store",
        back.elapsed()
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    // A node learns of the crash when its bus connection breaks (at once)
    // or goes silent (1 s at most); until then its cache may still answer
    // for sessions that were alive when the store died, which is true: no
    // logout can have happened in a dead store. After that, nothing but 503.
    let noticed = killed + Duration::from_millis(250);
    let mut after_kill = 0;
    let mut last_200 = None;
    for task in loads {
        for (answered, status) in task.await.unwrap() {
            assert!(status == 200 || status == 503, "load got {status}");
            if answered > killed && answered < restarting && status == 200 {
                last_200 = last_200.max(Some(answered - killed));
            }
            if answered > noticed && answered < restarting {
                after_kill += 1;
                assert_eq!(
                    status,
                    503,
                    "{kind:?}: a 200 {:?} after the store was down",
                    answered - killed
                );
            }
        }
    }
    // PostgreSQL's pool waits up to its 1 s connect timeout before each
    // 503, so only a few answers fall inside the outage there.
    assert!(
        after_kill >= 4,
        "the load ran through the outage ({after_kill})"
    );
    eprintln!(
        "FIGURE {kind:?} outage: {after_kill} answers while down, all 503; \
         last cached 200 {last_200:?} after the crash"
    );

    // The logout that failed did not happen, as its page said; it works now,
    // and on both nodes.
    assert_eq!(private(&nodes.a, &to_end).await, 200);
    assert_eq!(logout(&nodes.b, &to_end).await.status, 303);
    let done = Instant::now();
    for node in [&nodes.a, &nodes.b] {
        while private(node, &to_end).await != 401 {
            assert!(done.elapsed() < Duration::from_millis(500));
        }
    }
    for node in [&nodes.a, &nodes.b] {
        wait_for_bus(node).await;
        assert!(
            metric(node, "signoff_bus_losses_total")
                .await
                .unwrap_or(0.0)
                >= 1.0
        );
        assert!(
            metric(node, "signoff_store_errors_total")
                .await
                .unwrap_or(0.0)
                >= 1.0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_crash_fails_closed_and_recovers_with_sessions_kept() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let server = Arc::new(std::sync::Mutex::new(server));
    let shared = Shared::new(Kind::Redis, server.lock().unwrap().url());
    let (k, r) = (server.clone(), server.clone());
    store_outage(
        Kind::Redis,
        move || k.lock().unwrap().kill(),
        move || r.lock().unwrap().restart(),
        shared,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crash_fails_closed_and_recovers_with_sessions_kept() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let cluster = Arc::new(std::sync::Mutex::new(cluster));
    let shared = Shared::new(Kind::Postgres, cluster.lock().unwrap().url());
    let (k, r) = (cluster.clone(), cluster.clone());
    store_outage(
        Kind::Postgres,
        move || k.lock().unwrap().kill(),
        move || r.lock().unwrap().restart(),
        shared,
    )
    .await;
}

/// Commands a Redis server has processed (`INFO stats`), asked over RESP.
fn redis_commands(port: u16) -> u64 {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.write_all(b"*2\r\n$4\r\nINFO\r\n$5\r\nstats\r\n")
        .unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "Redis closed the connection");
        reply.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&reply);
        if let Some(line) = text
            .lines()
            .find_map(|l| l.strip_prefix("total_commands_processed:"))
        {
            if text.contains("\r\n\r\n") || text.ends_with("\r\n") {
                return line.trim().parse().unwrap();
            }
        }
    }
}

/// Made-up session tokens never reach the store, whichever way they come
/// (a cookie on a proxied path, a bearer token, forward-auth's `/auth`):
/// counted by a Redis server of the test's own, which nothing else uses.
/// The control: the same number of requests with a real session, with the
/// cache off, each read the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_tokens_never_reach_the_store() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let Some(up) = Upstream::start() else { return };
    let db = redis.url();
    add_user(&db, USER, PASSWORD);
    let gw = Gateway::start_on(
        tempfile::tempdir().unwrap(),
        &db,
        Some(&up.url()),
        &["--cache-staleness", "0s"],
    );
    let token = gw.login(USER, PASSWORD).await;
    const N: u64 = 300;

    let before = redis_commands(redis.port);
    for _ in 0..N {
        assert_eq!(private(&gw, &token).await, 200);
    }
    let control = redis_commands(redis.port) - before;
    assert!(control >= N, "the control read the store {control} times");

    let mut made_up = Vec::new();
    for i in 0..N {
        // 64 base64url characters: the shape of a real token.
        let seed = format!("{i:064}");
        made_up.push(
            seed.bytes()
                .map(|b| {
                    if b == b'0' {
                        'A'
                    } else {
                        char::from(b'a' + b % 26)
                    }
                })
                .collect::<String>(),
        );
    }
    made_up.push(token[..63].to_owned() + if token.ends_with('A') { "B" } else { "A" });
    let before = redis_commands(redis.port);
    let started = std::time::Instant::now();
    for text in &made_up {
        assert_eq!(private(&gw, text).await, 401);
        let bearer = format!("Bearer {text}");
        let r = get(&gw.url("/private"), &[("authorization", &bearer)]).await;
        assert_eq!(r.status, 401);
        let r = get(&gw.url("/.signoff/auth"), &[("cookie", &cookie(text))]).await;
        assert_eq!(r.status, 401);
    }
    let during = redis_commands(redis.port) - before;
    // The node's own background work and the INFO command itself; nothing
    // per request. The bus publishes a heartbeat every 200 ms (the default
    // `BusOptions::heartbeat_interval`), so a slow machine that takes
    // longer over the 903 requests sees more of them: allowed, one per
    // 200 ms elapsed, beside 10 for a key re-read and INFO. One command
    // per made-up token would still be far above it.
    let heartbeats = u64::try_from(started.elapsed().as_millis() / 200).unwrap() + 1;
    assert!(
        heartbeats < made_up.len() as u64 / 10,
        "the requests took {:?}: too slow to tell background work from per-request reads",
        started.elapsed()
    );
    assert!(
        during <= 10 + heartbeats,
        "{} made-up tokens caused {during} Redis commands ({heartbeats} heartbeats allowed)",
        made_up.len() * 3
    );
}

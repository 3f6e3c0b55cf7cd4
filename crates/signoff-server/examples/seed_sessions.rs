//! Fills a signoff SQLite database with live sessions for load tests and
//! writes their tokens to a file, one per line.
//!
//! `cargo run --release -p signoff-server --example seed_sessions -- DB_PATH USER COUNT TOKENS_FILE`
//!
//! USER must exist (`signoff user add`); the sessions are made the way the
//! gateway's login makes them (user id, and the user name under
//! `signoff.user`), with the default policy, so the gateway accepts them.
//!
//! They are dated `SEED_AHEAD_SECS` (default 600) seconds ahead, so that a
//! benchmark's first request to each within that time is a plain read:
//! an older session's first request records activity, and that write drops
//! the gateway's cache entry, so RSS would not measure cached sessions.

use std::io::Write;
use std::sync::Arc;

use signoff::{
    Accounts, Clock, Durability, ManualClock, NewSession, Passwords, Policy, SessionData, Sessions,
    SqliteOptions, SqliteStore, SystemClock,
};

/// The gateway's session data key for the user name.
const USER_NAME_KEY: &str = "signoff.user";
/// Concurrent writers (SQLite serialises commits; this only hides latency).
const WRITERS: usize = 4;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [db, user, count, out] = args.as_slice() else {
        return Err("usage: seed_sessions DB_PATH USER COUNT TOKENS_FILE".into());
    };
    let db = db.strip_prefix("sqlite://").unwrap_or(db);
    let count: usize = count.parse()?;

    let mut options = SqliteOptions::new(db);
    options.durability = Durability::Normal;
    options.max_connections = WRITERS as u32;
    let store = Arc::new(SqliteStore::open_with(options).await?);
    let user = Accounts::new(store.clone(), Passwords::new())
        .user(user)
        .await?;
    let ahead: u64 = std::env::var("SEED_AHEAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let clock = ManualClock::at(
        SystemClock
            .now()
            .plus(std::time::Duration::from_secs(ahead)),
    );
    let sessions = Sessions::with_clock(store.clone(), Policy::default(), Arc::new(clock));

    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let sessions = sessions.clone();
        let user = user.clone();
        let n = count / WRITERS + usize::from(w < count % WRITERS);
        tasks.push(tokio::spawn(async move {
            let mut tokens = Vec::with_capacity(n);
            for _ in 0..n {
                let mut data = SessionData::new();
                data.insert(USER_NAME_KEY.to_owned(), user.name.clone());
                let new = NewSession::for_user(user.id.clone())
                    .ip("127.0.0.1")
                    .user_agent("seed_sessions")
                    .reserved_data(data);
                let issued = sessions.create(new).await?;
                tokens.push(issued.token.expose().to_owned());
            }
            Ok::<_, signoff::SessionError>(tokens)
        }));
    }
    let mut file = std::io::BufWriter::new(std::fs::File::create(out)?);
    let mut written = 0;
    for task in tasks {
        for token in task.await?? {
            writeln!(file, "{token}")?;
            written += 1;
        }
    }
    file.flush()?;
    store.close().await;
    println!(
        "seeded {written} sessions for {} in {:.1?} -> {out}",
        user.name,
        started.elapsed()
    );
    Ok(())
}

//! The store: where it is, how long this node may answer from memory, and
//! whether a SQLite file others can read is accepted.

use clap::ArgAction;

section! {
    /// The store.
    pub struct StoreOptions {
        /// Where sessions, users and the audit trail live: sqlite://PATH (or a
        /// file path) for one node; redis://HOST[:PORT][/DB] (rediss:// for TLS)
        /// or postgres://USER@HOST/DB for many nodes sharing one store
        /// [default: sqlite://signoff.db] [file: db]
        #[arg(long, env = "SIGNOFF_DB", value_name = "URL", hide_env_values = true, display_order = 3)]
        pub db: Option<String>,
        /// Longest a session check may be answered from this node's memory,
        /// e.g. 1s; 0s reads the store on every request. Ends and rotations
        /// elsewhere (other nodes, the CLI) arrive sooner over the revocation
        /// bus [default: 1s] [file: cache_staleness]
        #[arg(long, env = "SIGNOFF_CACHE_STALENESS", value_name = "DURATION", display_order = 23)]
        pub cache_staleness: Option<String>,
        /// Start even if the SQLite file (or its -wal/-shm) is open to other
        /// users or its directory is writable by them, with a warning; by
        /// default that is refused [default: false] [file: allow_readable_db]
        #[arg(long, env = "SIGNOFF_ALLOW_READABLE_DB", value_name = "BOOL",
              num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set,
              display_order = 24)]
        pub allow_readable_db: Option<bool>,
    }
}

//! The admin API, the audit trail and metrics.

use clap::ArgAction;

section! {
    /// Admin API, audit trail and metrics.
    pub struct AuditOptions {
        /// Turns on the admin API: the SHA-256 (hex) of its bearer token, as
        /// printed by `signoff admin-token` [default: off] [file: admin_token_sha256]
        #[arg(long, env = "SIGNOFF_ADMIN_TOKEN_SHA256", value_name = "HEX", display_order = 20)]
        pub admin_token_sha256: Option<String>,
        /// Delete audit events older than this, e.g. 90d [default: 90d] [file: audit_retention]
        #[arg(long, env = "SIGNOFF_AUDIT_RETENTION", value_name = "DURATION", display_order = 21)]
        pub audit_retention: Option<String>,
        /// Also write each audit event as a JSON log line (target
        /// signoff::audit) [default: false] [file: audit_log]
        #[arg(long, env = "SIGNOFF_AUDIT_LOG", value_name = "BOOL",
              num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set,
              display_order = 22)]
        pub audit_log: Option<bool>,
        /// Serve Prometheus metrics at PREFIX/metrics (counts only, no user
        /// data) [default: false] [file: metrics]
        #[arg(long, env = "SIGNOFF_METRICS", value_name = "BOOL",
              num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set,
              display_order = 25)]
        pub metrics: Option<bool>,
    }
}

//! Session lifetimes and limits.

section! {
    /// Session lifetimes, the per-user cap and recent authentication.
    pub struct SessionOptions {
        /// Sign out after this long without a request, e.g. 30m [default: 30m] [file: idle_timeout]
        #[arg(long, env = "SIGNOFF_IDLE_TIMEOUT", value_name = "DURATION", display_order = 4)]
        pub idle_timeout: Option<String>,
        /// Sign out this long after login whatever happens, e.g. 12h [default: 12h] [file: absolute_timeout]
        #[arg(long, env = "SIGNOFF_ABSOLUTE_TIMEOUT", value_name = "DURATION", display_order = 5)]
        pub absolute_timeout: Option<String>,
        /// Most sessions one user may hold at once; a sign-in beyond it ends
        /// the user's oldest session [default: unlimited] [file: max_sessions]
        #[arg(long, env = "SIGNOFF_MAX_SESSIONS", value_name = "N", display_order = 18)]
        pub max_sessions: Option<usize>,
        /// Ending other sessions needs a sign-in or password re-entry within
        /// this long, e.g. 15m [default: 15m] [file: recent_auth]
        #[arg(long, env = "SIGNOFF_RECENT_AUTH", value_name = "DURATION", display_order = 19)]
        pub recent_auth: Option<String>,
        /// Offer "Remember this device" at sign-in: a session whose user
        /// ticks it lasts this long (at most 400d) and its cookie survives a
        /// browser restart, e.g. 30d [default: off] [file: remember_device]
        #[arg(long, env = "SIGNOFF_REMEMBER_DEVICE", value_name = "DURATION", display_order = 40)]
        pub remember_device: Option<String>,
        /// Sign a remembered device out after this long without a request
        /// [default: 7d, or --remember-device if shorter; never below
        /// --idle-timeout] [file: remember_device_idle]
        #[arg(long, env = "SIGNOFF_REMEMBER_DEVICE_IDLE", value_name = "DURATION", display_order = 41)]
        pub remember_device_idle: Option<String>,
    }
}

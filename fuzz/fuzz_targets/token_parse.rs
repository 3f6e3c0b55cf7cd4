//! Token and handle parsing take whatever a client sends: they must never
//! panic, and whatever they accept must be the one canonical spelling. A
//! token the fuzzer makes up must never pass the seal check (whose odds
//! are 2^-120), and checking it must not panic either.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use signoff::{SessionHandle, SessionKeys, SessionToken, Timestamp};

static KEYS: OnceLock<SessionKeys> = OnceLock::new();

/// The keys, once; and, the control, a token they issued passes their
/// check after a round trip through its text.
fn keys() -> &'static SessionKeys {
    KEYS.get_or_init(|| {
        let keys = SessionKeys::ephemeral();
        let issued = keys.issue(Timestamp::from_millis(0));
        assert!(keys.verify(&SessionToken::parse(issued.expose()).expect("issued token parses")));
        keys
    })
}

fuzz_target!(|data: &[u8]| {
    let keys = keys();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(token) = SessionToken::parse(text) {
        assert_eq!(token.expose(), text);
        assert_eq!(SessionToken::parse(token.expose()).map(|t| t.id()), Ok(token.id()));
        assert!(!keys.verify(&token), "a made-up token passed the seal check");
    }
    if let Ok(handle) = text.parse::<SessionHandle>() {
        assert_eq!(handle.to_string(), text, "accepted a non-canonical handle");
    }
});

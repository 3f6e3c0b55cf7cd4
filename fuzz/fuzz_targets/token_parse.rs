//! Token and handle parsing take whatever a client sends: they must never
//! panic, and whatever they accept must be the one canonical spelling.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signoff::{SessionHandle, SessionToken};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(token) = SessionToken::parse(text) {
        assert_eq!(token.expose(), text, "accepted a non-canonical token");
        assert_eq!(SessionToken::parse(token.expose()).map(|t| t.id()), Ok(token.id()));
    }
    if let Ok(handle) = text.parse::<SessionHandle>() {
        assert_eq!(handle.to_string(), text, "accepted a non-canonical handle");
    }
});

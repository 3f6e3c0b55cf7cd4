//! CSRF tokens bound to a session.
//!
//! The token is an HMAC of a fixed label keyed with the session token
//! itself, so it needs no storage, changes whenever the session ID
//! rotates, and cannot be computed from the store (which holds only the
//! session token's SHA-256 digest).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::SessionToken;

const LABEL: &[u8] = b"signoff csrf v1";

/// Length of a CSRF token in characters (base64url of 32 bytes).
pub const CSRF_TOKEN_LEN: usize = 43;

fn mac(session: &SessionToken) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(session.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(LABEL);
    mac
}

/// The CSRF token of a session: what forms and `X-Signoff-Csrf` carry.
///
/// ```
/// use signoff::{csrf, SessionKeys, Timestamp};
/// let keys = SessionKeys::ephemeral();
/// let session = keys.issue(Timestamp::from_millis(0));
/// let token = csrf::token_for(&session);
/// assert!(csrf::verify(&session, &token));
/// assert!(!csrf::verify(&keys.issue(Timestamp::from_millis(0)), &token));
/// ```
pub fn token_for(session: &SessionToken) -> String {
    URL_SAFE_NO_PAD.encode(mac(session).finalize().into_bytes())
}

/// Whether `presented` is this session's CSRF token. Compares in constant
/// time; anything malformed is simply `false`.
pub fn verify(session: &SessionToken, presented: &str) -> bool {
    if presented.len() != CSRF_TOKEN_LEN {
        return false;
    }
    let Ok(bytes) = URL_SAFE_NO_PAD.decode(presented) else {
        return false;
    };
    mac(session).verify_slice(&bytes).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_bound_to_its_session() {
        let a = crate::SessionKeys::ephemeral().issue(crate::Timestamp::from_millis(0));
        let b = crate::SessionKeys::ephemeral().issue(crate::Timestamp::from_millis(0));
        let token = token_for(&a);
        assert_eq!(token.len(), CSRF_TOKEN_LEN);
        assert_eq!(token, token_for(&a), "stable for one session");
        assert!(verify(&a, &token));
        assert!(!verify(&b, &token));
        assert_ne!(token, token_for(&b));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let a = crate::SessionKeys::ephemeral().issue(crate::Timestamp::from_millis(0));
        let good = token_for(&a);
        for bad in [
            String::new(),
            good[..42].to_owned(),
            format!("{good}A"),
            good.replace(|c: char| c.is_ascii_alphanumeric(), "*"),
            "é".repeat(22),
        ] {
            assert!(!verify(&a, &bad), "{bad:?} was accepted");
        }
        // One changed character.
        let mut flipped = good.clone().into_bytes();
        flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
        assert!(!verify(&a, std::str::from_utf8(&flipped).unwrap()));
    }
}

//! CSRF tokens bound to a session.
//!
//! The token is the SHA-256 digest of a fixed label followed by the
//! session token's 256 random bits, so it needs no storage, changes
//! whenever the session ID rotates, and cannot be computed from the store
//! (which holds only the SHA-256 digest of those bits alone; neither
//! digest gives the other, nor the bits).
//!
//! Label and random part fit one SHA-256 block: a token costs one
//! compression, paid by every page the gateway proxies (it hands the
//! token to the app) and every form check. Version 1 of the token was an
//! HMAC keyed with the whole session token, four compressions; since the
//! key is secret and the message fixed, the keyed digest is as good a
//! pseudorandom value here (length extension only makes digests of longer
//! messages, which nothing accepts).
//!
//! [`verify`] still accepts a version 1 token, so that forms on pages
//! open during an upgrade, and posts between the nodes of a rolling
//! upgrade, keep working. It is checked only when the version 2
//! comparison fails, so the common path does not pay for it. Version 1
//! was sound; its acceptance goes in a later release.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::SessionToken;

/// Put before the random part; 16 bytes, so with the random part's 32 and
/// SHA-256's padding (9 bytes) the input is one 64-byte block.
const LABEL: &[u8; 16] = b"signoff csrf v2\0";

/// Length of a CSRF token in characters (base64url of 32 bytes).
pub const CSRF_TOKEN_LEN: usize = 43;

fn digest(session: &SessionToken) -> [u8; 32] {
    let (random, _, _) = session.parts();
    Sha256::new()
        .chain_update(LABEL)
        .chain_update(random)
        .finalize()
        .into()
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
    URL_SAFE_NO_PAD.encode(digest(session))
}

/// Whether `presented` is this session's CSRF token. Compares in constant
/// time; anything malformed is simply `false`.
pub fn verify(session: &SessionToken, presented: &str) -> bool {
    if presented.len() != CSRF_TOKEN_LEN {
        return false;
    }
    let mut bytes = [0u8; 33];
    match URL_SAFE_NO_PAD.decode_slice(presented, &mut bytes) {
        Ok(32) => {
            bool::from(digest(session).ct_eq(&bytes[..32])) || version_1(session, &bytes[..32])
        }
        _ => false,
    }
}

/// Whether `bytes` is the session's version 1 token: an HMAC of
/// `signoff csrf v1` keyed with the whole session token. Compares in
/// constant time.
fn version_1(session: &SessionToken, bytes: &[u8]) -> bool {
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(session.expose().as_bytes()) else {
        return false;
    };
    mac.update(b"signoff csrf v1");
    mac.verify_slice(bytes).is_ok()
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
    fn token_is_the_labelled_digest_of_the_random_part_only() {
        let session = crate::SessionKeys::ephemeral().issue(crate::Timestamp::from_millis(0));
        let (random, _, _) = session.parts();
        let mut input = b"signoff csrf v2\0".to_vec();
        input.extend_from_slice(random);
        // Label and random part fit one SHA-256 block (55 bytes at most).
        assert!(input.len() <= 55, "{} bytes", input.len());
        let expected = URL_SAFE_NO_PAD.encode(Sha256::digest(&input));
        assert_eq!(token_for(&session), expected);
        // Not the store's key, nor derived from it.
        let store_key = URL_SAFE_NO_PAD.encode(session.id().as_bytes());
        assert_ne!(token_for(&session), store_key);
        let from_store_key = {
            let mut input = b"signoff csrf v2\0".to_vec();
            input.extend_from_slice(session.id().as_bytes());
            URL_SAFE_NO_PAD.encode(Sha256::digest(&input))
        };
        assert_ne!(token_for(&session), from_store_key);
    }

    #[test]
    fn version_1_tokens_still_pass_for_their_own_session_only() {
        let session = crate::SessionKeys::ephemeral().issue(crate::Timestamp::from_millis(0));
        let other = crate::SessionKeys::ephemeral().issue(crate::Timestamp::from_millis(0));
        let v1 = |s: &SessionToken| {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(s.expose().as_bytes()).unwrap();
            mac.update(b"signoff csrf v1");
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        };
        let token = v1(&session);
        assert_eq!(token.len(), CSRF_TOKEN_LEN);
        assert_ne!(token, token_for(&session));
        assert!(verify(&session, &token));
        assert!(!verify(&other, &token));
        assert!(!verify(&session, &v1(&other)));
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

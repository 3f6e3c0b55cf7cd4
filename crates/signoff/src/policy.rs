//! Session policy: how long sessions live and how their cookie looks.
//!
//! A [`Policy`] is a plain value: build it, print it, compare it, test it.
//! Nonsense (a zero timeout, an idle timeout longer than the whole lifetime)
//! is refused when it is built, not discovered in production.

use std::time::Duration;

/// Why a policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A duration that must be positive was zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// The idle timeout exceeds the absolute lifetime, so it could never apply.
    #[error("the idle timeout ({idle:?}) is longer than the absolute lifetime ({absolute:?})")]
    IdleLongerThanAbsolute {
        /// The idle timeout asked for.
        idle: Duration,
        /// The absolute lifetime asked for.
        absolute: Duration,
    },
    /// The last-seen write interval is not smaller than the idle timeout,
    /// so an active session could time out between two writes.
    #[error("the last-seen write interval ({interval:?}) must be shorter than the idle timeout ({idle:?})")]
    TouchIntervalTooLong {
        /// The interval asked for.
        interval: Duration,
        /// The idle timeout it must stay below.
        idle: Duration,
    },
    /// A duration is too large to represent as milliseconds in a store.
    #[error("{0} is too long")]
    TooLong(&'static str),
    /// The cookie name is empty or contains characters a cookie name cannot have.
    #[error("invalid cookie name {0:?}")]
    CookieName(String),
    /// A `__Host-` cookie must be `Secure` with path `/`.
    #[error("a __Host- cookie must be Secure with Path=/")]
    HostPrefixRules,
    /// A `__Secure-` cookie must be `Secure`.
    #[error("a __Secure- cookie must be Secure")]
    SecurePrefixRules,
    /// The cookie path must start with `/` and hold no `;` or control characters.
    #[error("invalid cookie path {0:?}")]
    CookiePath(String),
    /// A remembered device's lifetime must be longer than the ordinary
    /// absolute lifetime, or remembering would change nothing.
    #[error("the remembered-device lifetime ({remember:?}) must be longer than the absolute lifetime ({absolute:?})")]
    RememberNotLonger {
        /// The remembered-device lifetime asked for.
        remember: Duration,
        /// The ordinary absolute lifetime.
        absolute: Duration,
    },
    /// A remembered device's lifetime is longer than browsers keep a cookie.
    #[error("the remembered-device lifetime ({0:?}) is longer than 400 days, the most browsers keep a cookie")]
    RememberTooLong(Duration),
    /// A remembered device's idle timeout is longer than its lifetime or
    /// shorter than the ordinary idle timeout.
    #[error("the remembered-device idle timeout ({idle:?}) must be between the idle timeout ({ordinary:?}) and the remembered-device lifetime ({lifetime:?})")]
    RememberIdle {
        /// The remembered-device idle timeout asked for.
        idle: Duration,
        /// The ordinary idle timeout, its floor.
        ordinary: Duration,
        /// The remembered-device lifetime, its ceiling.
        lifetime: Duration,
    },
}

/// The `SameSite` attribute of the session cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SameSite {
    /// Sent on same-site requests and top-level cross-site navigations.
    Lax,
    /// Sent on same-site requests only.
    Strict,
}

impl SameSite {
    /// The attribute's value as written in `Set-Cookie`.
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
        }
    }
}

/// How the session cookie is set. The cookie is always `HttpOnly`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CookiePolicy {
    /// Cookie name. Default `__Host-signoff`.
    pub name: String,
    /// Whether the cookie carries `Secure`. Default `true`.
    pub secure: bool,
    /// The `SameSite` attribute. Default [`SameSite::Lax`].
    pub same_site: SameSite,
    /// The `Path` attribute. Default `/`.
    pub path: String,
}

impl Default for CookiePolicy {
    fn default() -> Self {
        Self {
            name: "__Host-signoff".to_owned(),
            secure: true,
            same_site: SameSite::Lax,
            path: "/".to_owned(),
        }
    }
}

impl CookiePolicy {
    /// The policy for plain HTTP on a loopback address (development and
    /// tests): no `Secure`, so no `__Host-` prefix either.
    pub fn insecure_loopback() -> Self {
        Self {
            name: "signoff".to_owned(),
            secure: false,
            ..Self::default()
        }
    }

    fn check(&self) -> Result<(), PolicyError> {
        // RFC 6265 token characters.
        let valid = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !valid {
            return Err(PolicyError::CookieName(self.name.clone()));
        }
        let path_ok = self.path.starts_with('/')
            && self.path.len() <= 1024
            && self
                .path
                .bytes()
                .all(|b| b != b';' && !b.is_ascii_control() && b.is_ascii());
        if !path_ok {
            return Err(PolicyError::CookiePath(self.path.clone()));
        }
        if self.name.starts_with("__Host-") && (!self.secure || self.path != "/") {
            return Err(PolicyError::HostPrefixRules);
        }
        if self.name.starts_with("__Secure-") && !self.secure {
            return Err(PolicyError::SecurePrefixRules);
        }
        Ok(())
    }
}

/// What logout does with a session's non-authentication data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LogoutBehavior {
    /// Logout deletes the session and everything in it. The default.
    #[default]
    EndSession,
    /// Logout deletes the session and carries the listed data keys (a cart,
    /// a language choice) into a fresh anonymous session under a new token.
    CarryData(Vec<String>),
}

/// "Remember this device": the longer limits of a session whose sign-in
/// asked for them ([`crate::NewSession::remember_device`]). Off unless a
/// policy sets it ([`PolicyBuilder::remember_device`]).
///
/// A remembered session is the same single session as any other: one
/// token, rotated at every privilege change, ended by every logout path.
/// Only its absolute lifetime and idle timeout are its own, and the
/// gateway makes its cookie outlive a browser restart. The policy in force
/// decides at every check: a session created remembered
/// ([`crate::Session::remembered`], stored by every backend) is held to the
/// current remember limits, or to the ordinary ones once remembering is
/// turned off.
///
/// ```
/// use std::time::Duration;
/// use signoff::{Policy, RememberDevice};
///
/// let day = Duration::from_secs(24 * 3600);
/// let policy = Policy::builder()
///     .remember_device(Some(RememberDevice::new(30 * day, 7 * day)))
///     .build()
///     .unwrap();
/// assert_eq!(policy.remember_device().unwrap().lifetime(), 30 * day);
///
/// // Longer than browsers keep a cookie: refused.
/// assert!(Policy::builder()
///     .remember_device(Some(RememberDevice::new(500 * day, 7 * day)))
///     .build()
///     .is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RememberDevice {
    lifetime: Duration,
    idle_timeout: Duration,
}

impl RememberDevice {
    /// Longest lifetime allowed: 400 days, the most Chrome keeps a cookie
    /// (RFC 6265bis caps `Max-Age` at 400 days too).
    pub const MAX_LIFETIME: Duration = Duration::from_secs(400 * 24 * 3600);

    /// A remembered session ends `lifetime` after sign-in, or after
    /// `idle_timeout` without a request. Checked by [`PolicyBuilder::build`].
    pub fn new(lifetime: Duration, idle_timeout: Duration) -> Self {
        Self {
            lifetime,
            idle_timeout,
        }
    }

    /// The absolute lifetime of a remembered session.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// The idle timeout of a remembered session.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    fn check(&self, absolute: Duration, idle: Duration) -> Result<(), PolicyError> {
        if self.lifetime > Self::MAX_LIFETIME {
            return Err(PolicyError::RememberTooLong(self.lifetime));
        }
        if self.lifetime <= absolute {
            return Err(PolicyError::RememberNotLonger {
                remember: self.lifetime,
                absolute,
            });
        }
        if self.idle_timeout < idle || self.idle_timeout > self.lifetime {
            return Err(PolicyError::RememberIdle {
                idle: self.idle_timeout,
                ordinary: idle,
                lifetime: self.lifetime,
            });
        }
        Ok(())
    }
}

/// How long sessions live, how often activity is recorded, and the cookie.
///
/// ```
/// use std::time::Duration;
/// use signoff::Policy;
///
/// let policy = Policy::builder()
///     .idle_timeout(Duration::from_secs(15 * 60))
///     .absolute_lifetime(Duration::from_secs(8 * 3600))
///     .build()
///     .unwrap();
/// assert_eq!(policy.touch_interval(), Duration::from_secs(60));
///
/// // An idle timeout longer than the lifetime is refused.
/// assert!(Policy::builder()
///     .idle_timeout(Duration::from_secs(7200))
///     .absolute_lifetime(Duration::from_secs(3600))
///     .build()
///     .is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    idle_timeout: Duration,
    absolute_lifetime: Duration,
    touch_interval: Duration,
    cookie: CookiePolicy,
    logout: LogoutBehavior,
    carry_on_login: Vec<String>,
    max_sessions_per_user: Option<usize>,
    recent_auth: Duration,
    remember_device: Option<RememberDevice>,
}

impl Default for Policy {
    /// Idle 30 minutes, absolute 12 hours (NIST SP 800-63B, AAL2).
    fn default() -> Self {
        Policy::builder()
            .build()
            .expect("the default policy is valid")
    }
}

impl Policy {
    /// Starts from the defaults: idle 30 min, absolute 12 h.
    pub fn builder() -> PolicyBuilder {
        PolicyBuilder::default()
    }

    /// A session with no activity for this long ends.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// A session ends this long after login, however active.
    pub fn absolute_lifetime(&self) -> Duration {
        self.absolute_lifetime
    }

    /// Activity is written to the store at most once per this interval.
    /// An idle timeout is therefore exact to within this interval, and
    /// errs on the side of ending early.
    pub fn touch_interval(&self) -> Duration {
        self.touch_interval
    }

    /// How the session cookie is set.
    pub fn cookie(&self) -> &CookiePolicy {
        &self.cookie
    }

    /// What logout does with non-authentication data.
    pub fn logout(&self) -> &LogoutBehavior {
        &self.logout
    }

    /// Data keys a login carries over from the session presented before it
    /// (a cart filled before signing in). Empty by default: anything else a
    /// planted session held is dropped.
    pub fn carry_on_login(&self) -> &[String] {
        &self.carry_on_login
    }

    /// Most live sessions one user may hold; a login beyond it ends the
    /// user's oldest sessions (by creation). `None` (the default): no limit.
    pub fn max_sessions_per_user(&self) -> Option<usize> {
        self.max_sessions_per_user
    }

    /// How recent an authentication must be for sensitive actions, such as
    /// ending the user's other sessions. Default 15 minutes.
    pub fn recent_auth(&self) -> Duration {
        self.recent_auth
    }

    /// The limits of sessions whose sign-in asked to remember the device;
    /// `None` (the default): remembering is off, and such sign-ins get an
    /// ordinary session.
    pub fn remember_device(&self) -> Option<RememberDevice> {
        self.remember_device
    }
}

/// Builds a [`Policy`]; see [`Policy::builder`].
#[derive(Debug, Clone, Default)]
pub struct PolicyBuilder {
    idle_timeout: Option<Duration>,
    absolute_lifetime: Option<Duration>,
    touch_interval: Option<Duration>,
    cookie: Option<CookiePolicy>,
    logout: LogoutBehavior,
    carry_on_login: Vec<String>,
    max_sessions_per_user: Option<usize>,
    recent_auth: Option<Duration>,
    remember_device: Option<RememberDevice>,
}

impl PolicyBuilder {
    /// Default 30 minutes.
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = Some(d);
        self
    }

    /// Default 12 hours.
    pub fn absolute_lifetime(mut self, d: Duration) -> Self {
        self.absolute_lifetime = Some(d);
        self
    }

    /// Default: the smaller of 60 s and a tenth of the idle timeout.
    pub fn touch_interval(mut self, d: Duration) -> Self {
        self.touch_interval = Some(d);
        self
    }

    /// Default [`CookiePolicy::default`].
    pub fn cookie(mut self, cookie: CookiePolicy) -> Self {
        self.cookie = Some(cookie);
        self
    }

    /// Default [`LogoutBehavior::EndSession`].
    pub fn logout(mut self, logout: LogoutBehavior) -> Self {
        self.logout = logout;
        self
    }

    /// Default: none. See [`Policy::carry_on_login`].
    pub fn carry_on_login(mut self, keys: Vec<String>) -> Self {
        self.carry_on_login = keys;
        self
    }

    /// Default: no limit. See [`Policy::max_sessions_per_user`].
    pub fn max_sessions_per_user(mut self, max: Option<usize>) -> Self {
        self.max_sessions_per_user = max;
        self
    }

    /// Default 15 minutes. See [`Policy::recent_auth`].
    pub fn recent_auth(mut self, d: Duration) -> Self {
        self.recent_auth = Some(d);
        self
    }

    /// Default: off. See [`RememberDevice`]. Its lifetime must be longer
    /// than the absolute lifetime and at most
    /// [`RememberDevice::MAX_LIFETIME`]; its idle timeout at least the
    /// ordinary one and at most its lifetime.
    pub fn remember_device(mut self, remember: Option<RememberDevice>) -> Self {
        self.remember_device = remember;
        self
    }

    /// Checks the values and builds the policy.
    ///
    /// # Errors
    /// A [`PolicyError`] naming the first rule the values break.
    pub fn build(self) -> Result<Policy, PolicyError> {
        const MAX: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
        let idle = self.idle_timeout.unwrap_or(Duration::from_secs(30 * 60));
        let absolute = self
            .absolute_lifetime
            .unwrap_or(Duration::from_secs(12 * 3600));
        // Stores count whole milliseconds: less than one is zero.
        if idle.as_millis() == 0 {
            return Err(PolicyError::Zero("the idle timeout"));
        }
        if absolute.as_millis() == 0 {
            return Err(PolicyError::Zero("the absolute lifetime"));
        }
        if absolute > MAX {
            return Err(PolicyError::TooLong("the absolute lifetime"));
        }
        if idle > absolute {
            return Err(PolicyError::IdleLongerThanAbsolute { idle, absolute });
        }
        let interval = self
            .touch_interval
            .unwrap_or_else(|| (idle / 10).min(Duration::from_secs(60)));
        if interval.as_millis() == 0 {
            return Err(PolicyError::Zero("the last-seen write interval"));
        }
        if interval >= idle {
            return Err(PolicyError::TouchIntervalTooLong { interval, idle });
        }
        if self.max_sessions_per_user == Some(0) {
            return Err(PolicyError::Zero("the maximum sessions per user"));
        }
        let recent_auth = self.recent_auth.unwrap_or(Duration::from_secs(15 * 60));
        if recent_auth.as_millis() == 0 {
            return Err(PolicyError::Zero("the recent-authentication window"));
        }
        if let Some(remember) = &self.remember_device {
            remember.check(absolute, idle)?;
        }
        let cookie = self.cookie.unwrap_or_default();
        cookie.check()?;
        Ok(Policy {
            idle_timeout: idle,
            absolute_lifetime: absolute,
            touch_interval: interval,
            cookie,
            logout: self.logout,
            carry_on_login: self.carry_on_login,
            max_sessions_per_user: self.max_sessions_per_user,
            recent_auth,
            remember_device: self.remember_device,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_nist_aal2() {
        let p = Policy::default();
        assert_eq!(p.idle_timeout(), Duration::from_secs(1800));
        assert_eq!(p.absolute_lifetime(), Duration::from_secs(43200));
        assert_eq!(p.touch_interval(), Duration::from_secs(60));
        assert_eq!(p.cookie().name, "__Host-signoff");
        assert!(p.cookie().secure);
    }

    #[test]
    fn touch_interval_defaults_to_a_tenth_of_short_idle_timeouts() {
        let p = Policy::builder()
            .idle_timeout(Duration::from_secs(100))
            .build()
            .unwrap();
        assert_eq!(p.touch_interval(), Duration::from_secs(10));
    }

    #[test]
    fn invalid_policies_are_refused() {
        let zero = Policy::builder().idle_timeout(Duration::ZERO).build();
        assert_eq!(zero, Err(PolicyError::Zero("the idle timeout")));
        let zero = Policy::builder().absolute_lifetime(Duration::ZERO).build();
        assert_eq!(zero, Err(PolicyError::Zero("the absolute lifetime")));
        let inverted = Policy::builder()
            .idle_timeout(Duration::from_secs(10))
            .absolute_lifetime(Duration::from_secs(5))
            .build();
        assert!(matches!(
            inverted,
            Err(PolicyError::IdleLongerThanAbsolute { .. })
        ));
        let slow = Policy::builder()
            .idle_timeout(Duration::from_secs(10))
            .touch_interval(Duration::from_secs(10))
            .build();
        assert!(matches!(
            slow,
            Err(PolicyError::TouchIntervalTooLong { .. })
        ));
        let huge = Policy::builder()
            .absolute_lifetime(Duration::from_secs(u64::MAX))
            .build();
        assert!(matches!(huge, Err(PolicyError::TooLong(_))));
    }

    #[test]
    fn remember_device_is_off_by_default_and_checked() {
        assert_eq!(Policy::default().remember_device(), None);
        let day = Duration::from_secs(24 * 3600);
        let with = |lifetime, idle| {
            Policy::builder()
                .remember_device(Some(RememberDevice::new(lifetime, idle)))
                .build()
        };
        let ok = with(30 * day, 7 * day).unwrap();
        assert_eq!(
            ok.remember_device(),
            Some(RememberDevice::new(30 * day, 7 * day))
        );
        assert!(with(RememberDevice::MAX_LIFETIME, day).is_ok());
        assert_eq!(
            with(RememberDevice::MAX_LIFETIME + Duration::from_secs(1), day),
            Err(PolicyError::RememberTooLong(
                RememberDevice::MAX_LIFETIME + Duration::from_secs(1)
            ))
        );
        assert_eq!(
            with(Duration::from_secs(u64::MAX), day),
            Err(PolicyError::RememberTooLong(Duration::from_secs(u64::MAX)))
        );
        // Not longer than the ordinary 12 h: remembering would change nothing.
        for lifetime in [
            Duration::ZERO,
            Duration::from_secs(3600),
            12 * 3600 * Duration::from_secs(1),
        ] {
            assert!(
                matches!(
                    with(lifetime, Duration::from_secs(1800)),
                    Err(PolicyError::RememberNotLonger { .. })
                ),
                "{lifetime:?}"
            );
        }
        // The idle timeout lies between the ordinary one (30 min) and the lifetime.
        for idle in [Duration::ZERO, Duration::from_secs(60), 31 * day] {
            assert!(
                matches!(with(30 * day, idle), Err(PolicyError::RememberIdle { .. })),
                "{idle:?}"
            );
        }
        assert!(with(30 * day, 30 * day).is_ok());
        assert!(with(30 * day, Duration::from_secs(1800)).is_ok());
    }

    #[test]
    fn cookie_rules_are_checked() {
        let bad_name = CookiePolicy {
            name: "a b".into(),
            ..CookiePolicy::default()
        };
        assert!(matches!(
            Policy::builder().cookie(bad_name).build(),
            Err(PolicyError::CookieName(_))
        ));
        let insecure_host = CookiePolicy {
            secure: false,
            ..CookiePolicy::default()
        };
        assert_eq!(
            Policy::builder().cookie(insecure_host).build(),
            Err(PolicyError::HostPrefixRules)
        );
        assert!(Policy::builder()
            .cookie(CookiePolicy::insecure_loopback())
            .build()
            .is_ok());
        for path in ["", "relative", "/a;b", "/a\r\nSet-Cookie: x=y"] {
            let cookie = CookiePolicy {
                path: path.into(),
                ..CookiePolicy::insecure_loopback()
            };
            assert!(
                matches!(
                    Policy::builder().cookie(cookie).build(),
                    Err(PolicyError::CookiePath(_))
                ),
                "{path:?}"
            );
        }
        let insecure_secure = CookiePolicy {
            name: "__Secure-s".into(),
            secure: false,
            ..CookiePolicy::default()
        };
        assert_eq!(
            Policy::builder().cookie(insecure_secure).build(),
            Err(PolicyError::SecurePrefixRules)
        );
    }
}

//! Access rules: who may reach which host, path and method.
//!
//! An ordered list of [`Rule`]s, first match wins, and a default for
//! what none matches. A rule matches on host, path (exact, by prefix or
//! by glob) and method, and decides [`Access`]: public, any signed-in
//! user, members of groups or named users, or nobody; optionally only
//! with a password entered within a window ([`Rule::fresh`]).
//!
//! A request's path is read every way an upstream could read it
//! ([`path::Readings`]: dot segments, encoded separators, `;` parameters,
//! letter case), and the request must pass the rule each reading matches:
//! no spelling of a path reaches it through a looser rule than its plain
//! spelling (docs/security.md, "Access rules"). Only a plain path can be
//! public.
//!
//! ```
//! use signoff::access::{Access, Decision, Member, PathPattern, RequestFacts, Rule, Rules};
//!
//! let rules = Rules::new(
//!     vec![
//!         Rule::new("static files", Access::Public).path(PathPattern::prefix("/static").unwrap()),
//!         Rule::new("admin", Access::members(["admins"], Vec::<String>::new()))
//!             .path(PathPattern::prefix("/admin").unwrap()),
//!         Rule::new("the rest", Access::SignedIn),
//!     ],
//!     Access::Deny,
//! );
//! let needs = rules.needs(&RequestFacts::new(Some("GET"), None, Some("/static/app.css")));
//! assert!(needs.is_public());
//! let needs = rules.needs(&RequestFacts::new(Some("GET"), None, Some("/static/../admin")));
//! assert!(!needs.is_public());
//! let bob = Member::new("bob", "staff");
//! assert!(matches!(needs.decide(Some(&bob)), Decision::Forbidden { .. }));
//! ```

mod path;
mod pattern;

use std::borrow::Cow;
use std::time::Duration;

pub use path::{is_plain, Readings};
pub use pattern::{
    normal_host, valid_host, HostPattern, LetterCase, PathPattern, PatternError, MAX_GLOB_BYTES,
};

use crate::Timestamp;

/// What a rule allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Anyone, signed in or not (plain paths only: [`is_plain`]).
    Public,
    /// Any signed-in user.
    SignedIn,
    /// A signed-in user who is in one of `groups` or is one of `users`.
    Members {
        /// Groups whose members may pass.
        groups: Vec<String>,
        /// Users who may pass.
        users: Vec<String>,
    },
    /// Nobody.
    Deny,
}

impl Access {
    /// [`Access::Members`] from lists.
    pub fn members<G, U>(groups: G, users: U) -> Self
    where
        G: IntoIterator,
        G::Item: Into<String>,
        U: IntoIterator,
        U::Item: Into<String>,
    {
        Access::Members {
            groups: groups.into_iter().map(Into::into).collect(),
            users: users.into_iter().map(Into::into).collect(),
        }
    }
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Access::Public => f.write_str("public: no sign-in needed"),
            Access::SignedIn => f.write_str("any signed-in user"),
            Access::Members { groups, users } => {
                let mut parts = Vec::new();
                if !groups.is_empty() {
                    parts.push(format!("members of {}", groups.join(", ")));
                }
                if !users.is_empty() {
                    parts.push(format!("users {}", users.join(", ")));
                }
                write!(f, "signed in, and {}", parts.join(" or "))
            }
            Access::Deny => f.write_str("nobody (deny)"),
        }
    }
}

/// One rule: what it matches and what it allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// How messages name it, e.g. `rule 3 "admin area"`.
    pub label: String,
    /// Hosts it applies to; empty: every host.
    pub hosts: Vec<HostPattern>,
    /// The paths it applies to; `None`: every path.
    pub path: Option<PathPattern>,
    /// Methods it applies to (upper case); empty: every method.
    pub methods: Vec<String>,
    /// What it allows.
    pub access: Access,
    /// With a signed-in access: the password must have been entered within
    /// this long (re-authentication otherwise).
    pub fresh: Option<Duration>,
}

impl Rule {
    /// A rule for every request, allowing `access`.
    pub fn new(label: impl Into<String>, access: Access) -> Self {
        Self {
            label: label.into(),
            hosts: Vec::new(),
            path: None,
            methods: Vec::new(),
            access,
            fresh: None,
        }
    }

    /// Only for these paths.
    #[must_use]
    pub fn path(mut self, path: PathPattern) -> Self {
        self.path = Some(path);
        self
    }

    /// Only for this host (add more by calling again).
    #[must_use]
    pub fn host(mut self, host: HostPattern) -> Self {
        self.hosts.push(host);
        self
    }

    /// Only for this method (add more by calling again).
    #[must_use]
    pub fn method(mut self, method: &str) -> Self {
        self.methods.push(method.to_ascii_uppercase());
        self
    }

    /// Needs a password entered within `within`.
    #[must_use]
    pub fn fresh(mut self, within: Duration) -> Self {
        self.fresh = Some(within);
        self
    }

    /// Whether it matches every request.
    pub fn matches_everything(&self) -> bool {
        self.hosts.is_empty()
            && self.methods.is_empty()
            && self
                .path
                .as_ref()
                .is_none_or(PathPattern::matches_everything)
    }

    /// Whether every request this matches, `earlier` matches too (so this
    /// rule, after `earlier`, can never decide). Cheap and incomplete: it
    /// may miss a shadowed rule, never flags a live one.
    pub fn shadowed_by(&self, earlier: &Rule) -> bool {
        let hosts = earlier.hosts.is_empty()
            || (!self.hosts.is_empty() && self.hosts.iter().all(|h| earlier.hosts.contains(h)));
        let methods = earlier.methods.is_empty()
            || (!self.methods.is_empty()
                && self.methods.iter().all(|m| earlier.methods.contains(m)));
        let paths = match (&self.path, &earlier.path) {
            (_, None) => true,
            (None, Some(e)) => e.matches_everything(),
            (Some(p), Some(e)) => p.within(e),
        };
        hosts && methods && paths
    }

    fn matches_host_and_method(&self, host: HostReading, method: MethodReading) -> bool {
        let host_ok = self.hosts.is_empty()
            || match host {
                HostReading::Known(h) => self.hosts.iter().any(|p| p.matches(h)),
                HostReading::AnyHost => true,
                HostReading::NoHost => false,
            };
        host_ok
            && (self.methods.is_empty()
                || match method {
                    MethodReading::Known(m) => self.methods.iter().any(|r| {
                        // HEAD is GET without the body.
                        r == m || (m == "HEAD" && r == "GET")
                    }),
                    MethodReading::AnyMethod => true,
                    MethodReading::NoMethod => false,
                })
    }
}

/// Which rule (or the default) decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decider<'r> {
    /// A rule, and its place in the list (from 0).
    Rule(usize, &'r Rule),
    /// No rule matched.
    Default(&'r Access),
}

impl Decider<'_> {
    /// What it allows.
    pub fn access(&self) -> &Access {
        match self {
            Decider::Rule(_, rule) => &rule.access,
            Decider::Default(access) => access,
        }
    }

    /// Its freshness window, if any.
    pub fn fresh(&self) -> Option<Duration> {
        match self {
            Decider::Rule(_, rule) => rule.fresh,
            Decider::Default(_) => None,
        }
    }
}

impl std::fmt::Display for Decider<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Decider::Rule(_, rule) => f.write_str(&rule.label),
            Decider::Default(_) => f.write_str("the default (no rule matched)"),
        }
    }
}

/// The ordered rules and the default.
#[derive(Debug, Clone)]
pub struct Rules {
    rules: Vec<Rule>,
    default: Access,
}

impl Default for Rules {
    /// No rules; everything needs a signed-in user.
    fn default() -> Self {
        Self::new(Vec::new(), Access::SignedIn)
    }
}

/// What a rule check knows of a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    method: Option<&'a str>,
    method_override: Option<&'a str>,
    host: Option<&'a str>,
    path: Option<&'a str>,
}

impl<'a> RequestFacts<'a> {
    /// The method, the host (a `Host` value, port and case as sent) and
    /// the raw path (no query); `None` for what is not known (a proxy
    /// that did not forward it): then rules that test it are taken to
    /// match and not to match, and the request must pass both.
    pub fn new(method: Option<&'a str>, host: Option<&'a str>, path: Option<&'a str>) -> Self {
        Self {
            method,
            method_override: None,
            host,
            path,
        }
    }

    /// A method the app may take instead (`X-HTTP-Method-Override` and
    /// its kin): the request must pass the rules for it too.
    #[must_use]
    pub fn method_override(mut self, method: Option<&'a str>) -> Self {
        self.method_override = method;
        self
    }
}

#[derive(Debug, Clone, Copy)]
enum HostReading<'a> {
    Known(&'a str),
    AnyHost,
    NoHost,
}

#[derive(Debug, Clone, Copy)]
enum MethodReading<'a> {
    Known(&'a str),
    AnyMethod,
    NoMethod,
}

/// Index of the default in a match list.
const DEFAULT: usize = usize::MAX;

/// The rules a request must pass: one per reading of it, without repeats.
#[derive(Debug)]
pub struct Needs<'r> {
    rules: &'r Rules,
    /// Rule indexes ([`DEFAULT`] for the default); the first two inline.
    few: [Option<usize>; 2],
    more: Vec<usize>,
    plain: bool,
}

/// A signed-in user, as a rule check needs them.
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    user: &'a str,
    /// Comma-separated group names.
    groups: &'a str,
    auth_at: Option<Timestamp>,
    now: Option<Timestamp>,
}

impl<'a> Member<'a> {
    /// The user `user` in `groups` (comma-separated).
    pub fn new(user: &'a str, groups: &'a str) -> Self {
        Self {
            user,
            groups,
            auth_at: None,
            now: None,
        }
    }

    /// When they last entered their password, and the time now (for
    /// [`Rule::fresh`]); without it, no window is met.
    #[must_use]
    pub fn authenticated(mut self, at: Option<Timestamp>, now: Timestamp) -> Self {
        self.auth_at = at;
        self.now = Some(now);
        self
    }

    fn in_group(&self, group: &str) -> bool {
        self.groups.split(',').any(|g| g == group)
    }

    fn fresh_within(&self, window: Duration) -> bool {
        match (self.auth_at, self.now) {
            (Some(at), Some(now)) => {
                let age = now.as_millis().saturating_sub(at.as_millis());
                age >= 0 && (age as u128) <= window.as_millis()
            }
            _ => false,
        }
    }
}

/// What a request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'r> {
    /// It may pass.
    Allow,
    /// It needs a signed-in user first.
    SignIn,
    /// The user must enter their password again: the last time was longer
    /// ago than `within`.
    Fresh {
        /// The window.
        within: Duration,
        /// The rule that asks.
        by: Decider<'r>,
    },
    /// Refused, whoever asks (or this user).
    Forbidden {
        /// The rule that refuses.
        by: Decider<'r>,
    },
}

impl Rules {
    /// `rules` in order, then `default` for what none matches.
    pub fn new(rules: Vec<Rule>, default: Access) -> Self {
        Self { rules, default }
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// What no rule matches gets.
    pub fn default_access(&self) -> &Access {
        &self.default
    }

    /// Pairs `(later, earlier)` of rules where `later` can never decide
    /// because `earlier` matches all it would (indexes from 0).
    pub fn shadowed(&self) -> Vec<(usize, usize)> {
        let mut found = Vec::new();
        for (n, rule) in self.rules.iter().enumerate() {
            if let Some(e) = self.rules[..n].iter().position(|e| rule.shadowed_by(e)) {
                found.push((n, e));
            }
        }
        found
    }

    /// The rules `request` must pass.
    pub fn needs<'a>(&self, request: &RequestFacts<'a>) -> Needs<'_> {
        let mut needs = Needs {
            rules: self,
            few: [None, None],
            more: Vec::new(),
            plain: true,
        };
        if self.rules.is_empty() && self.default != Access::Public {
            // Only the default, and it does not ask whether the path is
            // plain: nothing to read.
            needs.add(DEFAULT);
            return needs;
        }
        // A `Host` that is not `name[:port]` or `[v6][:port]` is read
        // differently by each server: it counts as not known.
        let host = request.host.and_then(valid_host);
        let hosts: [Option<HostReading>; 2] = match &host {
            Some(h) => [Some(HostReading::Known(h)), None],
            None => [Some(HostReading::AnyHost), Some(HostReading::NoHost)],
        };
        // Methods are case-sensitive, but rules are written in upper case:
        // an app that folds `get` to GET must not escape them.
        let upper = |m: &'a str| -> Cow<'a, str> {
            if m.bytes().any(|b| b.is_ascii_lowercase()) {
                Cow::Owned(m.to_ascii_uppercase())
            } else {
                Cow::Borrowed(m)
            }
        };
        let method = request.method.map(upper);
        let method_override = request.method_override.map(upper);
        let methods: [Option<MethodReading>; 2] = match (&method, &method_override) {
            (Some(m), o) => [
                Some(MethodReading::Known(m)),
                o.as_deref().filter(|o| o != m).map(MethodReading::Known),
            ],
            (None, _) => [
                Some(MethodReading::AnyMethod),
                Some(MethodReading::NoMethod),
            ],
        };
        let readings = request.path.map(Readings::of).filter(|r| !r.is_unknown());
        needs.plain = readings.as_ref().is_some_and(Readings::is_plain);
        for host in hosts.iter().flatten() {
            for method in methods.iter().flatten() {
                match &readings {
                    Some(readings) => {
                        for path in readings.iter() {
                            self.match_reading(&mut needs, *host, *method, Some(path));
                        }
                    }
                    None => {
                        // No path known: every rule that could match must be passed.
                        for (n, rule) in self.rules.iter().enumerate() {
                            if rule.matches_host_and_method(*host, *method) {
                                needs.add(n);
                            }
                        }
                        needs.add(DEFAULT);
                    }
                }
            }
        }
        needs
    }

    /// The first rule matching one reading as written, and the first one
    /// matching it loosely ([`PathPattern::matches_loosely`]: without
    /// case, a trailing `/`, a `.format` suffix), which must be passed
    /// too.
    fn match_reading(
        &self,
        needs: &mut Needs<'_>,
        host: HostReading,
        method: MethodReading,
        path: Option<&str>,
    ) {
        let mut folded: Option<usize> = None;
        // (A loose match only ever adds a rule to pass.)
        for (n, rule) in self.rules.iter().enumerate() {
            if !rule.matches_host_and_method(host, method) {
                continue;
            }
            let (exact, fold) = match (&rule.path, path) {
                (None, _) => (true, true),
                (Some(p), Some(path)) => {
                    let exact = p.matches(path, LetterCase::Exact);
                    (exact, exact || p.matches_loosely(path))
                }
                (Some(_), None) => (true, true),
            };
            if fold && folded.is_none() {
                folded = Some(n);
            }
            if exact {
                needs.add(n);
                if let Some(f) = folded {
                    needs.add(f);
                }
                return;
            }
        }
        needs.add(DEFAULT);
        if let Some(f) = folded {
            needs.add(f);
        }
    }
}

impl<'r> Needs<'r> {
    fn add(&mut self, n: usize) {
        if self.few.contains(&Some(n)) || self.more.contains(&n) {
            return;
        }
        match self.few.iter_mut().find(|s| s.is_none()) {
            Some(slot) => *slot = Some(n),
            None => self.more.push(n),
        }
    }

    /// Every rule (or the default) the request must pass.
    pub fn deciders(&self) -> impl Iterator<Item = Decider<'r>> + '_ {
        let rules = self.rules;
        self.few
            .iter()
            .flatten()
            .chain(self.more.iter())
            .map(move |&n| match n {
                DEFAULT => Decider::Default(&rules.default),
                n => Decider::Rule(n, &rules.rules[n]),
            })
    }

    /// Whether the path is plain ([`is_plain`]; a path not known is not).
    pub fn plain_path(&self) -> bool {
        self.plain
    }

    /// Whether no sign-in is needed: every rule to pass is public and the
    /// path is plain.
    pub fn is_public(&self) -> bool {
        self.plain && self.deciders().all(|d| *d.access() == Access::Public)
    }

    /// What the request gets from `who` (`None`: nobody signed in). Every
    /// rule must allow it; the strictest answer wins: forbidden, then
    /// sign-in, then the shortest freshness window.
    pub fn decide(&self, who: Option<&Member<'_>>) -> Decision<'r> {
        let mut decision = Decision::Allow;
        for by in self.deciders() {
            let this = match (by.access(), who) {
                (Access::Deny, _) => Decision::Forbidden { by },
                (Access::Public, _) if self.plain => Decision::Allow,
                (_, None) => Decision::SignIn,
                (Access::Public | Access::SignedIn, Some(_)) => Decision::Allow,
                (Access::Members { groups, users }, Some(m)) => {
                    if users.iter().any(|u| u == m.user) || groups.iter().any(|g| m.in_group(g)) {
                        Decision::Allow
                    } else {
                        Decision::Forbidden { by }
                    }
                }
            };
            let this = match (this, by.fresh(), who) {
                (Decision::Allow, Some(within), Some(m)) if !m.fresh_within(within) => {
                    Decision::Fresh { within, by }
                }
                (this, _, _) => this,
            };
            decision = stricter(decision, this);
        }
        decision
    }
}

fn stricter<'r>(a: Decision<'r>, b: Decision<'r>) -> Decision<'r> {
    let rank = |d: &Decision| match d {
        Decision::Allow => 0,
        Decision::Fresh { .. } => 1,
        Decision::SignIn => 2,
        Decision::Forbidden { .. } => 3,
    };
    match (a, b) {
        (Decision::Fresh { within: x, .. }, Decision::Fresh { within: y, .. }) => {
            if y < x {
                b
            } else {
                a
            }
        }
        _ if rank(&b) > rank(&a) => b,
        _ => a,
    }
}

#[cfg(test)]
mod tests;

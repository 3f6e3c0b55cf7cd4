//! The rules, table-driven: matching, readings of tricky paths, decisions.

use super::*;

fn prefix(p: &str) -> PathPattern {
    PathPattern::prefix(p).unwrap()
}

/// The rules most tests use, in order:
/// 0 public /static, 1 public exact /health, 2 /admin for admins with a
/// fresh password, 3 deny DELETE /api, 4 /reports for alice or auditors,
/// 5 deny on host internal.example.com, 6 glob /files/*.pdf public,
/// 7 signed in on *.example.com; default deny.
fn rules() -> Rules {
    Rules::new(
        vec![
            Rule::new("static", Access::Public).path(prefix("/static")),
            Rule::new("health", Access::Public).path(PathPattern::exact("/health").unwrap()),
            Rule::new("admin", Access::members(["admins"], Vec::<String>::new()))
                .path(prefix("/admin"))
                .fresh(Duration::from_secs(300)),
            Rule::new("no deletes", Access::Deny)
                .path(prefix("/api"))
                .method("delete"),
            Rule::new("reports", Access::members(["auditors"], ["alice"])).path(prefix("/reports")),
            Rule::new("internal", Access::Deny)
                .host(HostPattern::parse("internal.example.com").unwrap()),
            Rule::new("pdfs", Access::Public).path(PathPattern::glob("/files/*.pdf").unwrap()),
            Rule::new("app", Access::SignedIn).host(HostPattern::parse("*.example.com").unwrap()),
        ],
        Access::Deny,
    )
}

const HOST: Option<&str> = Some("app.example.com");

fn deciders(
    rules: &Rules,
    method: Option<&str>,
    host: Option<&str>,
    path: Option<&str>,
) -> Vec<String> {
    let mut names: Vec<String> = rules
        .needs(&RequestFacts::new(method, host, path))
        .deciders()
        .map(|d| match d {
            Decider::Rule(_, r) => r.label.clone(),
            Decider::Default(_) => "default".to_owned(),
        })
        .collect();
    names.sort();
    names
}

#[test]
fn the_first_matching_rule_decides() {
    let rules = rules();
    for (method, host, path, expected) in [
        ("GET", HOST, "/static/app.css", vec!["static"]),
        ("GET", HOST, "/static", vec!["static"]),
        ("GET", HOST, "/staticfile", vec!["app"]),
        ("GET", HOST, "/health", vec!["health"]),
        ("GET", HOST, "/health/x", vec!["app"]),
        ("GET", HOST, "/admin/users", vec!["admin"]),
        ("DELETE", HOST, "/api/x", vec!["no deletes"]),
        ("delete", HOST, "/api/x", vec!["no deletes"]),
        ("GET", HOST, "/api/x", vec!["app"]),
        ("GET", HOST, "/reports/1", vec!["reports"]),
        ("GET", Some("internal.example.com"), "/x", vec!["internal"]),
        (
            "GET",
            Some("INTERNAL.example.com:443"),
            "/x",
            vec!["internal"],
        ),
        ("GET", Some("internal.example.com."), "/x", vec!["internal"]),
        ("GET", HOST, "/files/a.pdf", vec!["pdfs"]),
        ("GET", HOST, "/files/a/b.pdf", vec!["app"]),
        ("GET", Some("other.org"), "/x", vec!["default"]),
        // An escape of an ordinary character is read as it came (an app
        // routing on the raw target) and decoded (%61 is `a`): both count.
        ("GET", HOST, "/%61dmin/users", vec!["admin", "app"]),
        ("GET", HOST, "/%73tatic/app.css", vec!["app", "static"]),
    ] {
        assert_eq!(
            deciders(&rules, Some(method), host, Some(path)),
            expected,
            "{method} {host:?} {path}"
        );
    }
}

#[test]
fn every_reading_of_a_tricky_path_must_pass_its_rule() {
    let rules = rules();
    // Each spelling that some upstream reads as /admin/… must meet the
    // admin rule, whatever other rule its literal spelling meets.
    for tricky in [
        "/static/../admin/users",
        "/static/%2e%2e/admin/users",
        "/static/%2E%2E/admin/users",
        "/static/%252e%252e/admin/users",
        "/static%2f..%2fadmin/users",
        "/static/..;/admin/users",
        "/admin;jsessionid=1/users",
        "/static\\..\\admin\\users",
        "//admin/users",
        "/static//../admin/users",
        "/ADMIN/users",
        "/Admin/users",
        // Dots resolved before decoding, and without merging `//`, as
        // WHATWG and RFC 3986 parsers do (Node's URL, java.net.URI).
        "/x%2fy/../%61dmin/users",
        "/static/x//../../admin/users",
        // A `.format` suffix (Rails, Spring) and a trailing slash.
        "/admin.json",
        "/admin/",
    ] {
        let got = deciders(&rules, Some("GET"), HOST, Some(tricky));
        assert!(got.contains(&"admin".to_owned()), "{tricky}: {got:?}");
        let needs = rules.needs(&RequestFacts::new(Some("GET"), HOST, Some(tricky)));
        assert!(!needs.is_public(), "{tricky}");
        let staff = Member::new("bob", "staff");
        assert!(
            matches!(needs.decide(Some(&staff)), Decision::Forbidden { .. }),
            "{tricky}"
        );
        assert_eq!(needs.decide(None), Decision::SignIn, "{tricky}");
    }
}

#[test]
fn a_public_rule_never_opens_a_tricky_path() {
    let rules = rules();
    for tricky in [
        "/static/./app.css",
        "/static//app.css",
        "/static;x/app.css",
        "/static/%2e/app.css",
    ] {
        let needs = rules.needs(&RequestFacts::new(Some("GET"), HOST, Some(tricky)));
        assert!(!needs.is_public(), "{tricky}");
        // It still works for a signed-in user.
        let anyone = Member::new("bob", "");
        assert_eq!(needs.decide(Some(&anyone)), Decision::Allow, "{tricky}");
        assert_eq!(needs.decide(None), Decision::SignIn, "{tricky}");
    }
    let plain = rules.needs(&RequestFacts::new(
        Some("GET"),
        HOST,
        Some("/static/app.css"),
    ));
    assert!(plain.is_public());
    assert_eq!(plain.decide(None), Decision::Allow);
}

#[test]
fn groups_users_and_deny_decide() {
    let rules = rules();
    let needs = |path: &str| rules.needs(&RequestFacts::new(Some("GET"), HOST, Some(path)));
    let now = Timestamp::from_millis(1_000_000_000);
    let just_now = Some(Timestamp::from_millis(1_000_000_000 - 60_000));
    let admin = Member::new("carol", "staff,admins").authenticated(just_now, now);
    let staff = Member::new("bob", "staff").authenticated(just_now, now);
    let alice = Member::new("alice", "").authenticated(just_now, now);
    let auditor = Member::new("dave", "auditors").authenticated(just_now, now);
    // A group name is matched whole, not as part of another.
    let almost = Member::new("eve", "admins2,xadmins").authenticated(just_now, now);

    assert_eq!(needs("/admin/x").decide(Some(&admin)), Decision::Allow);
    assert!(matches!(
        needs("/admin/x").decide(Some(&staff)),
        Decision::Forbidden { .. }
    ));
    assert!(matches!(
        needs("/admin/x").decide(Some(&almost)),
        Decision::Forbidden { .. }
    ));
    assert_eq!(needs("/admin/x").decide(None), Decision::SignIn);
    assert_eq!(needs("/reports/x").decide(Some(&alice)), Decision::Allow);
    assert_eq!(needs("/reports/x").decide(Some(&auditor)), Decision::Allow);
    assert!(matches!(
        needs("/reports/x").decide(Some(&staff)),
        Decision::Forbidden { .. }
    ));
    // Deny refuses everyone, signed in or not.
    let internal = rules.needs(&RequestFacts::new(
        Some("GET"),
        Some("internal.example.com"),
        Some("/"),
    ));
    assert!(matches!(
        internal.decide(Some(&admin)),
        Decision::Forbidden { .. }
    ));
    assert!(matches!(internal.decide(None), Decision::Forbidden { .. }));
    // Deny by default.
    let elsewhere = rules.needs(&RequestFacts::new(
        Some("GET"),
        Some("other.org"),
        Some("/"),
    ));
    assert!(matches!(
        elsewhere.decide(Some(&admin)),
        Decision::Forbidden {
            by: Decider::Default(_)
        }
    ));
}

#[test]
fn a_fresh_rule_wants_a_recent_password() {
    let rules = rules();
    let needs = rules.needs(&RequestFacts::new(Some("GET"), HOST, Some("/admin")));
    let now = Timestamp::from_millis(10_000_000);
    let at = |ago_s: i64| Some(Timestamp::from_millis(10_000_000 - ago_s * 1000));
    let fresh = Member::new("carol", "admins").authenticated(at(299), now);
    let stale = Member::new("carol", "admins").authenticated(at(301), now);
    let never = Member::new("carol", "admins").authenticated(None, now);
    let unknown_time = Member::new("carol", "admins");
    assert_eq!(needs.decide(Some(&fresh)), Decision::Allow);
    for m in [stale, never, unknown_time] {
        assert!(
            matches!(needs.decide(Some(&m)), Decision::Fresh { within, .. } if within == Duration::from_secs(300)),
            "{m:?}"
        );
    }
    // Not a member: forbidden, not asked for a password.
    let staff = Member::new("bob", "staff").authenticated(at(999), now);
    assert!(matches!(
        needs.decide(Some(&staff)),
        Decision::Forbidden { .. }
    ));
}

#[test]
fn methods_head_and_overrides() {
    let rules = Rules::new(
        vec![
            Rule::new("read only", Access::Deny)
                .path(prefix("/ro"))
                .method("POST"),
            Rule::new("no get", Access::Deny)
                .path(prefix("/hidden"))
                .method("GET"),
            Rule::new("rest", Access::SignedIn),
        ],
        Access::Deny,
    );
    let decide = |method: &str, over: Option<&str>, path: &str| {
        let facts = RequestFacts::new(Some(method), HOST, Some(path)).method_override(over);
        let anyone = Member::new("bob", "");
        matches!(rules.needs(&facts).decide(Some(&anyone)), Decision::Allow)
    };
    assert!(decide("GET", None, "/ro/x"));
    assert!(!decide("POST", None, "/ro/x"));
    // An override the app honours is a method too.
    assert!(!decide("GET", Some("POST"), "/ro/x"));
    // HEAD is GET without the body.
    assert!(!decide("HEAD", None, "/hidden"));
    assert!(decide("HEAD", None, "/ro/x"));
}

#[test]
fn what_a_proxy_did_not_forward_counts_both_ways() {
    let rules = rules();
    // No host: the host rules may or may not apply; the strictest wins.
    let needs = rules.needs(&RequestFacts::new(Some("GET"), None, Some("/x")));
    let got: Vec<_> = needs.deciders().map(|d| d.to_string()).collect();
    assert!(got.iter().any(|d| d == "internal"), "{got:?}");
    assert!(matches!(
        needs.decide(Some(&Member::new("carol", "admins"))),
        Decision::Forbidden { .. }
    ));
    // No path: never public, and every rule for the host counts.
    let needs = rules.needs(&RequestFacts::new(Some("GET"), HOST, None));
    assert!(!needs.is_public() && !needs.plain_path());
    // No method: the DELETE rule counts.
    let needs = rules.needs(&RequestFacts::new(None, HOST, Some("/api/x")));
    assert!(needs.deciders().any(|d| d.to_string() == "no deletes"));
}

#[test]
fn no_rules_means_signed_in_as_before() {
    let rules = Rules::default();
    let needs = rules.needs(&RequestFacts::new(Some("GET"), HOST, Some("/anything")));
    assert_eq!(needs.decide(None), Decision::SignIn);
    assert_eq!(needs.decide(Some(&Member::new("bob", ""))), Decision::Allow);
}

#[test]
fn shadowed_rules_are_found() {
    let rules = Rules::new(
        vec![
            Rule::new("api", Access::SignedIn).path(prefix("/api")),
            Rule::new("api admin", Access::Deny).path(prefix("/api/admin")),
            Rule::new("exact", Access::Deny).path(PathPattern::exact("/api/x").unwrap()),
            Rule::new("other", Access::Deny).path(prefix("/other")),
            Rule::new("all", Access::SignedIn),
            Rule::new("after all", Access::Public).path(prefix("/late")),
        ],
        Access::Deny,
    );
    assert_eq!(rules.shadowed(), vec![(1, 0), (2, 0), (5, 4)]);
    assert!(rules.rules()[4].matches_everything());
}

#[test]
fn hostile_inputs_cost_little_and_never_panic() {
    let rules = Rules::new(
        vec![Rule::new("g", Access::Public).path(PathPattern::glob("/**a*a*a*a*a*b").unwrap())],
        Access::Deny,
    );
    // A long tangled path: unknown, so every rule counts, quickly.
    let tangled = format!("/x/../files/{}", "a%2f".repeat(16_000));
    let started = std::time::Instant::now();
    let needs = rules.needs(&RequestFacts::new(Some("GET"), HOST, Some(&tangled)));
    assert!(!needs.is_public());
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    // The longest paths still read, plain and tangled, against a glob that
    // a backtracking matcher would take exponential time on.
    let long = format!("/{}", "a".repeat(path::MAX_PLAIN_PATH_BYTES - 1));
    let tricky = format!("/x/..//{}", "a".repeat(path::MAX_TRICKY_PATH_BYTES - 8));
    let started = std::time::Instant::now();
    for path in [&long, &tricky] {
        let needs = rules.needs(&RequestFacts::new(Some("GET"), HOST, Some(path)));
        assert!(!needs.deciders().any(|d| matches!(d, Decider::Rule(..))));
    }
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    for odd in [
        "",
        "x",
        "%",
        "/%",
        "/%%%",
        "/\u{0}",
        "/é/%ff%fe",
        "/;",
        "/..",
        "/../..",
        "\\",
    ] {
        let _ = rules
            .needs(&RequestFacts::new(Some(""), Some(""), Some(odd)))
            .decide(None);
    }
}

#[test]
fn lenient_routing_and_odd_hosts_only_add_rules() {
    let rules = Rules::new(
        vec![
            Rule::new("static", Access::Public).path(prefix("/static")),
            Rule::new("billing", Access::Deny).path(PathPattern::exact("/billing").unwrap()),
            Rule::new("reports host", Access::Deny)
                .host(HostPattern::parse("reports.example.com").unwrap()),
            Rule::new("rest", Access::SignedIn),
        ],
        Access::Deny,
    );
    let anyone = Member::new("bob", "");
    let decide = |host: &str, path: &str| {
        rules
            .needs(&RequestFacts::new(Some("GET"), Some(host), Some(path)))
            .decide(Some(&anyone))
    };
    for path in ["/billing", "/billing/", "/Billing", "/billing.json"] {
        assert!(
            matches!(decide("app.example.com", path), Decision::Forbidden { .. }),
            "{path}"
        );
    }
    // A loose match never widens: `/static.json` is not public.
    let needs = rules.needs(&RequestFacts::new(
        Some("GET"),
        Some("app.example.com"),
        Some("/static.json"),
    ));
    assert!(!needs.is_public());
    // A Host that servers split differently counts as not known.
    assert!(matches!(
        decide("reports.example.com:1:2", "/x"),
        Decision::Forbidden { .. }
    ));
    assert!(matches!(
        decide("reports.example.com", "/x"),
        Decision::Forbidden { .. }
    ));
    assert_eq!(decide("app.example.com:8080", "/x"), Decision::Allow);
    // A path too long to read: every rule counts.
    let long = format!("/{}", "a".repeat(9000));
    assert!(matches!(
        decide("app.example.com", &long),
        Decision::Forbidden { .. }
    ));
}

//! Access rules on the hot path (docs/benchmarks.md, "Access rules").
//!
//! | figure | baseline |
//! |---|---|
//! | `access/{no_rules, 100_rules_*}` | `baseline/sha256_of_a_token` (what every request pays to look its session up) |
//!
//! The 100 rules are a realistic worst case: prefixes, exact paths and
//! globs on three hosts, some with methods, decided by the last rule or
//! the default, so every rule is tried.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use sha2::{Digest, Sha256};
use signoff::access::{
    Access, Decision, HostPattern, Member, PathPattern, RequestFacts, Rule, Rules,
};

fn hundred_rules() -> Rules {
    let mut rules = Vec::new();
    for n in 0..100 {
        let rule = match n % 4 {
            0 => Rule::new(
                format!("r{n}"),
                Access::members([format!("g{n}")], Vec::<String>::new()),
            )
            .path(PathPattern::prefix(&format!("/area{n}")).unwrap()),
            1 => Rule::new(format!("r{n}"), Access::Public)
                .path(PathPattern::exact(&format!("/static{n}/app.css")).unwrap()),
            2 => Rule::new(format!("r{n}"), Access::Deny)
                .path(PathPattern::glob(&format!("/api/*/v{n}/**")).unwrap())
                .method("DELETE"),
            _ => Rule::new(format!("r{n}"), Access::SignedIn)
                .host(HostPattern::parse(&format!("app{n}.example.com")).unwrap()),
        };
        rules.push(rule);
    }
    Rules::new(rules, Access::SignedIn)
}

fn access(c: &mut Criterion) {
    let none = Rules::default();
    let hundred = hundred_rules();
    let member = Member::new("alice", "staff,ops");
    let decide = |rules: &Rules, path: &str| {
        let needs = rules.needs(&RequestFacts::new(
            Some("GET"),
            Some("app.example.com"),
            Some(path),
        ));
        let allowed = needs.decide(Some(&member)) == Decision::Allow;
        assert!(allowed);
        allowed
    };
    c.bench_function("access/no_rules", |b| {
        b.iter(|| decide(black_box(&none), black_box("/reports/2026/q3")))
    });
    c.bench_function("access/100_rules_default_decides", |b| {
        b.iter(|| decide(black_box(&hundred), black_box("/reports/2026/q3")))
    });
    c.bench_function("access/100_rules_escaped_path", |b| {
        b.iter(|| decide(black_box(&hundred), black_box("/reports/%32026/q3")))
    });
    c.bench_function("access/100_rules_tricky_path", |b| {
        b.iter(|| decide(black_box(&hundred), black_box("/x/../reports//2026;a/q3")))
    });
    let token = [7u8; 32];
    c.bench_function("baseline/sha256_of_a_token", |b| {
        b.iter(|| Sha256::digest(black_box(token)))
    });
}

criterion_group!(benches, access);
criterion_main!(benches);

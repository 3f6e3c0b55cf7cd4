//! The reports of `signoff check`: one line per check for a terminal (in
//! colour when it is one), JSON for CI, Markdown for a pull request.

use std::fmt::Write as _;

use super::{Report, Verdict};

/// How many fixes the end of a report lists.
const TOP_FIXES: usize = 5;

/// The report for a person at a terminal. `colour` adds ANSI colours.
pub fn terminal(report: &Report, colour: bool) -> String {
    let paint = |verdict: Verdict, text: &str| {
        if !colour {
            return text.to_owned();
        }
        let code = match verdict {
            Verdict::Pass => "32",
            Verdict::Fail => "1;31",
            Verdict::CouldNotTell => "33",
            Verdict::NotApplicable | Verdict::NotRun => "2",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "signoff check {}  (the app looks like: {})\n",
        report.target, report.framework
    );
    let width = report.checks.iter().map(|c| c.id.len()).max().unwrap_or(0);
    for c in &report.checks {
        let word = format!("{:<7}", c.verdict.word());
        let _ = writeln!(
            out,
            "  {}  {:<width$}  {}",
            paint(c.verdict, &word),
            c.id,
            c.seen
        );
    }
    let _ = writeln!(out, "\n{}", summary(report));
    let fixes = fixes(report);
    if !fixes.is_empty() {
        let _ = writeln!(out, "\nWhat to fix first:");
        for (i, (id, fix)) in fixes.iter().enumerate() {
            let _ = writeln!(out, "  {}. {id}: {fix}", i + 1);
        }
    }
    out
}

/// The report as JSON (pretty-printed).
pub fn json(report: &Report) -> String {
    serde_json::to_string_pretty(report).expect("a report serialises")
}

/// The report as Markdown, for a pull request comment.
pub fn markdown(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### signoff check: `{}`\n", report.target);
    let _ = writeln!(out, "The app looks like: {}.\n", report.framework);
    let _ = writeln!(out, "| check | verdict | seen |");
    let _ = writeln!(out, "|---|---|---|");
    for c in &report.checks {
        let mark = match c.verdict {
            Verdict::Pass => "✅ pass",
            Verdict::Fail => "❌ **fail**",
            Verdict::NotApplicable => "➖ n/a",
            Verdict::CouldNotTell => "❔ could not tell",
            Verdict::NotRun => "⏭️ not run",
        };
        let _ = writeln!(
            out,
            "| {} | {mark} | {} |",
            c.title.replace('|', "\\|"),
            c.seen.replace('|', "\\|")
        );
    }
    let _ = writeln!(out, "\n{}", summary(report));
    let fixes = fixes(report);
    if !fixes.is_empty() {
        let _ = writeln!(out, "\n**What to fix first**\n");
        for (i, (id, fix)) in fixes.iter().enumerate() {
            let _ = writeln!(out, "{}. `{id}`: {fix}", i + 1);
        }
    }
    let with_evidence: Vec<_> = report
        .checks
        .iter()
        .filter(|c| !c.evidence.is_empty())
        .collect();
    if !with_evidence.is_empty() {
        let _ = writeln!(out, "\n<details><summary>Evidence</summary>\n");
        for c in with_evidence {
            let _ = writeln!(out, "- `{}`", c.id);
            for e in &c.evidence {
                let _ = writeln!(out, "  - `{}`", e.replace('`', "'"));
            }
        }
        let _ = writeln!(out, "\n</details>");
    }
    out
}

/// "11 checks: 4 passed, 5 failed, ... · 97 requests in 2.3 s".
fn summary(report: &Report) -> String {
    let count = |v: Verdict| report.checks.iter().filter(|c| c.verdict == v).count();
    let mut parts = vec![
        format!("{} passed", count(Verdict::Pass)),
        format!("{} failed", count(Verdict::Fail)),
    ];
    for (v, word) in [
        (Verdict::CouldNotTell, "could not tell"),
        (Verdict::NotApplicable, "not applicable"),
        (Verdict::NotRun, "not run"),
    ] {
        if count(v) > 0 {
            parts.push(format!("{} {word}", count(v)));
        }
    }
    format!(
        "{} checks: {} · {} requests in {:.1} s",
        report.checks.len(),
        parts.join(", "),
        report.requests,
        report.seconds
    )
}

/// The fixes of the failed checks, most important first: what lets a
/// signed-out session back in before what weakens it.
fn fixes(report: &Report) -> Vec<(&'static str, String)> {
    const ORDER: &[&str] = &[
        "replay",
        "token-after-logout",
        "refresh-reuse",
        "forged-logout",
        "back-button",
        "server-ended-back",
        "fixation",
        "open-redirect",
        "no-store",
        "logout-cookie",
        "clear-site-data",
        "cookie-flags",
        "idle-timeout",
        "other-sessions",
    ];
    let mut failed: Vec<_> = report
        .checks
        .iter()
        .filter(|c| c.verdict == Verdict::Fail)
        .filter_map(|c| Some((c.id, c.fix.clone()?)))
        .collect();
    failed.sort_by_key(|(id, _)| ORDER.iter().position(|o| o == id).unwrap_or(ORDER.len()));
    failed.truncate(TOP_FIXES);
    failed
}

#[cfg(test)]
mod tests {
    use super::super::Finding;
    use super::*;

    fn report() -> Report {
        let f = |id, verdict, fix: Option<&str>| Finding {
            id,
            title: "a | title",
            verdict,
            seen: format!("{id} seen"),
            evidence: vec!["GET / → 200".into()],
            fix: fix.map(str::to_owned),
        };
        Report {
            target: "http://127.0.0.1:5000/".into(),
            framework: "Flask",
            checks: vec![
                f("no-store", Verdict::Fail, Some("send no-store")),
                f("replay", Verdict::Fail, Some("keep sessions on the server")),
                f("fixation", Verdict::Pass, None),
                f("idle-timeout", Verdict::NotRun, None),
            ],
            requests: 42,
            seconds: 1.25,
        }
    }

    #[test]
    fn reports_put_the_worst_fix_first_and_count_every_verdict() {
        let r = report();
        let text = terminal(&r, false);
        assert!(
            text.contains("2 passed") || text.contains("1 passed"),
            "{text}"
        );
        assert!(
            text.contains("2 failed") && text.contains("1 not run"),
            "{text}"
        );
        assert!(text.contains("42 requests in 1.2 s") || text.contains("42 requests in 1.3 s"));
        let first = text.find("1. replay").expect(&text);
        assert!(first < text.find("2. no-store").expect(&text));
        assert!(!text.contains('\x1b'));
        assert!(terminal(&r, true).contains("\x1b[1;31m"));
        let md = markdown(&r);
        assert!(
            md.contains("a \\| title") && md.contains("❌ **fail**"),
            "{md}"
        );
        let v: serde_json::Value = serde_json::from_str(&json(&r)).unwrap();
        assert_eq!(v["checks"][0]["verdict"], "fail");
        assert_eq!(v["checks"][3]["verdict"], "not-run");
        assert!(v["checks"][2].get("fix").is_none());
    }
}

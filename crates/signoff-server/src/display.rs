//! How sessions are shown to people: the device from the User-Agent, and
//! times. Shared by the sessions page, the admin API and the CLI.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use signoff::Timestamp;

/// "Firefox 128 on Linux", from a User-Agent, parsed with woothee. Falls
/// back to "Unknown device" for an empty or unknown agent.
pub fn device(user_agent: Option<&str>) -> String {
    let Some(ua) = user_agent.filter(|u| !u.trim().is_empty()) else {
        return "Unknown device".to_owned();
    };
    let Some(parsed) = woothee::parser::Parser::new().parse(ua) else {
        return "Unknown device".to_owned();
    };
    let known = |s: &str| !s.is_empty() && s != woothee::woothee::VALUE_UNKNOWN;
    let browser = if known(parsed.name) {
        let major = parsed.version.split('.').next().unwrap_or("");
        if !major.is_empty() && major.bytes().all(|b| b.is_ascii_digit()) {
            format!("{} {major}", parsed.name)
        } else {
            parsed.name.to_owned()
        }
    } else {
        "Unknown browser".to_owned()
    };
    if known(parsed.os) {
        format!("{browser} on {}", parsed.os)
    } else {
        browser
    }
}

/// A time as `2026-11-21 14:16 UTC`.
pub fn time(ts: Timestamp) -> String {
    let millis = u64::try_from(ts.as_millis()).unwrap_or(0);
    let at = UNIX_EPOCH + Duration::from_millis(millis);
    let text = humantime::format_rfc3339_seconds(at).to_string();
    // 2026-11-21T14:16:26Z
    match (text.get(..10), text.get(11..16)) {
        (Some(date), Some(hm)) => format!("{date} {hm} UTC"),
        _ => text,
    }
}

/// `1 second`, `2 seconds`: a count with its noun, singular for one.
pub fn count(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// How long before `now` `at` was, in English: `just now`, `1 minute
/// ago`, `3 hours ago`, `2 days ago`, … (a time after `now`, from a clock
/// a little ahead, is `just now` too).
pub fn ago(at: Timestamp, now: Timestamp) -> String {
    let secs = u64::try_from(now.as_millis().saturating_sub(at.as_millis()) / 1000).unwrap_or(0);
    const UNITS: [(u64, &str, &str); 6] = [
        (365 * 86400, "year", "years"),
        (30 * 86400, "month", "months"),
        (7 * 86400, "week", "weeks"),
        (86400, "day", "days"),
        (3600, "hour", "hours"),
        (60, "minute", "minutes"),
    ];
    match UNITS.iter().find(|(size, _, _)| secs >= *size) {
        Some((size, one, many)) => format!("{} ago", count(secs / size, one, many)),
        None => "just now".to_owned(),
    }
}

/// A time as RFC 3339 (`2026-11-21T14:16:26Z`), for machines.
pub fn rfc3339(ts: Timestamp) -> String {
    let millis = u64::try_from(ts.as_millis()).unwrap_or(0);
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(millis)).to_string()
}

/// A duration as people say it: `30 days`, `1 day`, `36 hours`,
/// `90 minutes`, `6 seconds` (the largest unit that divides it whole).
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (n, unit) = match secs {
        0 => (0, "second"),
        s if s % 86_400 == 0 => (s / 86_400, "day"),
        s if s % 3_600 == 0 => (s / 3_600, "hour"),
        s if s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    count(n, unit, &format!("{unit}s"))
}

/// Now, as a [`Timestamp`].
pub fn now() -> Timestamp {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Timestamp::from_millis(millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_read_like_a_person_would_say_them() {
        let chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";
        assert_eq!(device(Some(chrome)), "Chrome 156 on Linux");
        let iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";
        assert_eq!(device(Some(iphone)), "Safari 17 on iPhone");
        assert_eq!(device(None), "Unknown device");
        assert_eq!(device(Some("  ")), "Unknown device");
        assert_eq!(device(Some("curl/8.5.0")), "HTTP Library");
        assert_eq!(device(Some("\u{0}<script>")), "Unknown device");
    }

    #[test]
    fn durations_read_like_a_person_would_say_them() {
        let secs = Duration::from_secs;
        assert_eq!(duration(secs(30 * 86_400)), "30 days");
        assert_eq!(duration(secs(86_400)), "1 day");
        assert_eq!(duration(secs(36 * 3_600)), "36 hours");
        assert_eq!(duration(secs(90 * 60)), "90 minutes");
        assert_eq!(duration(secs(6)), "6 seconds");
        assert_eq!(duration(secs(1)), "1 second");
        assert_eq!(duration(Duration::from_millis(6_500)), "6 seconds");
        assert_eq!(duration(Duration::ZERO), "0 seconds");
    }

    #[test]
    fn counts_are_singular_for_one_only() {
        assert_eq!(count(1, "second", "seconds"), "1 second");
        assert_eq!(count(2, "second", "seconds"), "2 seconds");
        assert_eq!(count(0, "session", "sessions"), "0 sessions");
    }

    #[test]
    fn ago_reads_like_english_with_plurals() {
        let now = Timestamp::from_millis(1_795_270_586_000);
        let before = |secs: i64| Timestamp::from_millis(now.as_millis() - secs * 1000);
        assert_eq!(ago(now, now), "just now");
        assert_eq!(ago(before(59), now), "just now");
        assert_eq!(ago(before(60), now), "1 minute ago");
        assert_eq!(ago(before(3 * 60 + 30), now), "3 minutes ago");
        assert_eq!(ago(before(3600), now), "1 hour ago");
        assert_eq!(ago(before(5 * 3600), now), "5 hours ago");
        assert_eq!(ago(before(86400), now), "1 day ago");
        assert_eq!(ago(before(8 * 86400), now), "1 week ago");
        assert_eq!(ago(before(40 * 86400), now), "1 month ago");
        assert_eq!(ago(before(800 * 86400), now), "2 years ago");
        // A clock ahead, or nonsense: never "-3 minutes ago".
        assert_eq!(ago(before(-300), now), "just now");
        assert_eq!(
            ago(Timestamp::from_millis(i64::MAX), Timestamp::from_millis(0)),
            "just now"
        );
    }

    #[test]
    fn times_are_utc_minutes() {
        assert_eq!(time(Timestamp::from_millis(0)), "1970-01-01 00:00 UTC");
        assert_eq!(
            time(Timestamp::from_millis(1_795_270_586_000)),
            "2026-11-21 14:16 UTC"
        );
        assert_eq!(rfc3339(Timestamp::from_millis(0)), "1970-01-01T00:00:00Z");
    }
}

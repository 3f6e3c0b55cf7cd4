//! Which stack answered `signoff check`, told from the outside (cookie
//! names, the shape of a Flask session cookie, form fields, headers), and
//! the fix for each failed check written for that stack.

use std::io::Read as _;

use base64::Engine as _;

use super::page::Page;
use super::visitor::Exchange;

/// The stacks `check` writes fixes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framework {
    Signoff,
    FlaskSecurity,
    FlaskLogin,
    Flask,
    Django,
    Express,
    Rails,
    Spring,
    Unknown,
}

impl Framework {
    pub fn label(self) -> &'static str {
        match self {
            Framework::Signoff => "signoff",
            Framework::FlaskSecurity => "Flask with Flask-Security",
            Framework::FlaskLogin => "Flask with Flask-Login",
            Framework::Flask => "Flask",
            Framework::Django => "Django",
            Framework::Express => "Express",
            Framework::Rails => "Rails",
            Framework::Spring => "Spring",
            Framework::Unknown => "unknown",
        }
    }

    /// Tells the stack from what a sign-in showed: the exchanges and the
    /// login page.
    pub fn detect(seen: &[Exchange], login: &Page, login_label: &str) -> Framework {
        let cookies: Vec<_> = seen.iter().flat_map(Exchange::set_cookies).collect();
        let named = |f: &dyn Fn(&str) -> bool| cookies.iter().any(|c| f(&c.name));
        let header_has = |name: &str, word: &str| {
            seen.iter().any(|e| {
                e.header(name)
                    .is_some_and(|v| v.to_ascii_lowercase().contains(word))
            })
        };
        let field = |name: &str| {
            login
                .forms
                .iter()
                .any(|f| f.fields.iter().any(|x| x.name == name))
        };
        if named(&|n| n.starts_with("__Host-signoff") || n.starts_with("signoff"))
            || seen.iter().any(|e| e.url.path().starts_with("/.signoff/"))
        {
            return Framework::Signoff;
        }
        if login_label == "login_user_form" {
            return Framework::FlaskSecurity;
        }
        let flask_sessions: Vec<String> = cookies
            .iter()
            .filter(|c| c.name == "session")
            .filter_map(|c| flask_payload(&c.value))
            .collect();
        if flask_sessions.iter().any(|p| p.contains("\"_user_id\""))
            || named(&|n| n == "remember_token")
        {
            return Framework::FlaskLogin;
        }
        if !flask_sessions.is_empty() || header_has("server", "werkzeug") {
            return Framework::Flask;
        }
        if named(&|n| n == "sessionid" || n == "csrftoken") || field("csrfmiddlewaretoken") {
            return Framework::Django;
        }
        if named(&|n| n == "connect.sid") || header_has("x-powered-by", "express") {
            return Framework::Express;
        }
        if named(&|n| n.ends_with("_session")) || field("authenticity_token") {
            return Framework::Rails;
        }
        if named(&|n| n == "JSESSIONID") {
            return Framework::Spring;
        }
        Framework::Unknown
    }

    /// The fix for a failed check, for this stack.
    pub fn fix(self, check: &str) -> String {
        use Framework::*;
        let put_signoff = "Or put signoff in front of the app (`signoff serve --upstream URL`): \
                           it owns sign-in and sign-out, and every check here passes behind it.";
        let flaskish = matches!(self, Flask | FlaskLogin | FlaskSecurity);
        let text = match (check, self) {
            ("replay", Flask | FlaskLogin) => format!(
                "Flask keeps the session in a signed cookie, so a copy made before sign-out \
                 stays valid: `session.pop()`/`logout_user()` cannot revoke it. Keep sessions \
                 on the server (Flask-Session with Redis or SQL) and delete the record at \
                 sign-out. {put_signoff}"
            ),
            ("replay", FlaskSecurity) => format!(
                "Flask-Security keeps the session in Flask's signed cookie. Turn on \
                 server-side sessions (Flask-Session) so sign-out deletes the record, or \
                 rotate `fs_uniquifier` at sign-out to end every session of the user. \
                 {put_signoff}"
            ),
            ("replay", Django) => "Use a server-side SESSION_ENGINE (db or cache, not \
                 signed_cookies) and call django.contrib.auth.logout(request)."
                .to_owned(),
            ("replay", Express) => "Call req.session.destroy() at sign-out with a server-side \
                 store (connect-redis, connect-pg-simple), not cookie-session."
                .to_owned(),
            ("replay", Rails) => "Use a server-side session store (activerecord-session_store \
                 or Redis) and reset_session at sign-out; the default CookieStore cannot revoke."
                .to_owned(),
            ("replay", _) => format!(
                "Keep sessions on the server and delete the record at sign-out; a signed \
                 cookie cannot be revoked. {put_signoff}"
            ),
            ("fixation", _) if flaskish => "Give a new session at sign-in: clear the session \
                 (session.clear()) before login_user(), and keep sessions on the server."
                .to_owned(),
            ("fixation", Django) => "django.contrib.auth.login() rotates the session key; \
                 make sure custom sign-in code calls it (or request.session.cycle_key())."
                .to_owned(),
            ("fixation", Express) => "Call req.session.regenerate() at sign-in.".to_owned(),
            ("fixation", Rails) => "Call reset_session before signing the user in.".to_owned(),
            ("fixation", _) => "Issue a new session identifier at sign-in and ignore any \
                 identifier the browser brought."
                .to_owned(),
            ("forged-logout", FlaskSecurity) => "Keep SECURITY_LOGOUT_METHODS = [\"POST\"] \
                 with CSRF protection on (SECURITY_CSRF_PROTECT_MECHANISMS), and refuse a POST \
                 whose Origin is not your own."
                .to_owned(),
            ("forged-logout", _) if flaskish => "Sign out with a POST form carrying a CSRF \
                 token (Flask-WTF's CSRFProtect), never a GET route: `@app.post(\"/logout\")`. \
                 Also refuse a POST whose Origin is not your own."
                .to_owned(),
            ("forged-logout", Django) => "Use LogoutView with POST only (Django ≥ 5 refuses \
                 GET) and keep CsrfViewMiddleware on."
                .to_owned(),
            ("forged-logout", _) => "Sign out with a POST that carries a CSRF token, and \
                 refuse a POST whose Origin or Sec-Fetch-Site says another site sent it."
                .to_owned(),
            ("logout-cookie", _) if flaskish => "Clear the whole session at sign-out \
                 (session.clear()), so Flask deletes the cookie instead of re-signing what is \
                 left, and keep SESSION_COOKIE_PATH/DOMAIN the same for setting and deleting."
                .to_owned(),
            ("logout-cookie", _) => "At sign-out, send Set-Cookie for the session cookie \
                 with Max-Age=0 and the same Path, Domain, Secure and SameSite it was set with."
                .to_owned(),
            ("clear-site-data", _) if flaskish => "Add the header to the sign-out response: \
                 `resp.headers[\"Clear-Site-Data\"] = '\"cache\", \"cookies\", \"storage\"'`."
                .to_owned(),
            ("clear-site-data", _) => "Send `Clear-Site-Data: \"cache\", \"cookies\", \
                 \"storage\"` on the sign-out response."
                .to_owned(),
            ("no-store", _) if flaskish => format!(
                "Send `Cache-Control: no-store` on every signed-in response (an \
                 @app.after_request hook). Chromium still restores such pages from its \
                 back/forward cache when the session ended elsewhere (another device, a \
                 timeout); only a page script that checks the session on `pageshow` fixes \
                 that. {put_signoff}"
            ),
            ("no-store", _) => format!(
                "Send `Cache-Control: no-store` on every response to a signed-in request. \
                 {put_signoff}"
            ),
            ("cookie-flags", _) if flaskish => "Set SESSION_COOKIE_HTTPONLY = True, \
                 SESSION_COOKIE_SAMESITE = \"Lax\", SESSION_COOKIE_SECURE = True behind HTTPS, \
                 and the same for REMEMBER_COOKIE_*."
                .to_owned(),
            ("cookie-flags", Django) => "Set SESSION_COOKIE_HTTPONLY, SESSION_COOKIE_SAMESITE \
                 = \"Lax\" and SESSION_COOKIE_SECURE = True."
                .to_owned(),
            ("cookie-flags", _) => "Set the session cookie with HttpOnly, SameSite=Lax, \
                 Secure, Path=/ and no Domain, and name it __Host-… behind HTTPS."
                .to_owned(),
            ("open-redirect", _) if flaskish => "Accept `next` only when it is a path on \
                 your site: it starts with one `/`, not `//` or `/\\`, and \
                 urlsplit(next).netloc is empty after removing backslashes and control \
                 characters."
                .to_owned(),
            ("open-redirect", Django) => "Check `next` with \
                 django.utils.http.url_has_allowed_host_and_scheme before redirecting."
                .to_owned(),
            ("open-redirect", _) => "Redirect after sign-in only to a path on your own \
                 site: refuse `//`, `/\\`, schemes and encoded forms of them."
                .to_owned(),
            ("back-button", _) => format!(
                "Send `Cache-Control: no-store` on signed-in pages, `Clear-Site-Data: \
                 \"cache\"` at sign-out, and a small script on every signed-in page that, on \
                 `pageshow` with `event.persisted`, asks the server whether the session is \
                 alive and leaves for the login page if not: Chromium restores no-store pages \
                 from its back/forward cache without asking the server. {put_signoff}"
            ),
            ("server-ended-back", _) => format!(
                "Only a page script helps here: on `pageshow` with `event.persisted`, ask the \
                 server whether the session is alive and leave if not (signoff's guard does \
                 this). {put_signoff}"
            ),
            ("token-after-logout", _) => format!(
                "Tie every access token to a server-side session and check that session on \
                 each request (not only the JWT's signature and `exp`); end the session at \
                 logout. {put_signoff}"
            ),
            ("refresh-reuse", _) => "Rotate the refresh token on every use, keep only the \
                 live one, and treat a used one presented again as theft: end the whole family \
                 (RFC 9700, 4.14)."
                .to_owned(),
            ("idle-timeout", _) => "End sessions that were not used for a while on the \
                 server, not only in the cookie's lifetime."
                .to_owned(),
            ("other-sessions", _) => format!(
                "Offer a page that lists the user's sessions and ends the others. \
                 {put_signoff}"
            ),
            _ => put_signoff.to_owned(),
        };
        text
    }
}

/// The JSON payload of a Flask (itsdangerous) session cookie, if the value
/// has that shape: `payload.timestamp.signature`, the payload base64url
/// JSON, zlib-compressed after a leading `.` when that is shorter.
fn flask_payload(value: &str) -> Option<String> {
    let (compressed, rest) = match value.strip_prefix('.') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let [payload, _, _] = rest.split('.').collect::<Vec<_>>()[..] else {
        return None;
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let bytes = if compressed {
        let mut out = Vec::new();
        // A session cookie is at most 4 KiB; read no more than 64 KiB of
        // what it inflates to.
        flate2::read::ZlibDecoder::new(&bytes[..])
            .take(64 * 1024)
            .read_to_end(&mut out)
            .ok()?;
        out
    } else {
        bytes
    };
    let text = String::from_utf8(bytes).ok()?;
    text.starts_with('{').then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flask_session_cookie_is_told_by_its_shape() {
        // {"_user_id":"1"} signed by itsdangerous.
        let p = flask_payload("eyJfdXNlcl9pZCI6IjEifQ.Z1abcd.sig").unwrap();
        assert!(p.contains("_user_id"));
        // The same, compressed: "." + base64url(zlib(json)).
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut z, br#"{"_fresh":true,"_user_id":"1"}"#).unwrap();
        let packed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(z.finish().unwrap());
        let p = flask_payload(&format!(".{packed}.Z1abcd.sig")).unwrap();
        assert!(p.contains("_user_id"), "{p}");
        assert!(flask_payload("abc").is_none());
        assert!(flask_payload("not-base64!.x.y").is_none());
        assert!(flask_payload(".bm90IHpsaWI.x.y").is_none());
    }
}

//! The back-button guard's script: when a page comes back from the
//! browser's back/forward cache, it hides the page, asks
//! `{prefix}/status` whether the session is still alive, and shows the
//! page again only on 200; on anything else it replaces the page with
//! the login page (`…?next=`). The gateway inlines it into upstream pages;
//! an app serves it with [`WebSessions::routes`](super::WebSessions::routes)
//! and includes it in its private pages with
//! `<script src="/.signoff/guard.js"></script>`.

use std::fmt::Write as _;

/// Builds the guard script. ES5, pure ASCII, and free of `<` and `&` so it
/// is valid inline in both HTML and XHTML and its hash does not depend on
/// the page's charset.
///
/// `status` is the status check's path (`/.signoff/status`); `login` the
/// login page's, which the guard sends the browser to with `?next=` and the
/// page's own path.
pub fn script(status: &str, login: &str) -> String {
    let status = js_string(status);
    let login = js_string(&format!("{login}?next="));
    format!(
        concat!(
            "(function(){{var h=false,v;",
            "window.addEventListener(\"pageshow\",function(e){{",
            "if(e.persisted!==true){{return;}}",
            "var s=document.documentElement.style,o=location.origin;",
            "function out(){{location.replace(o+{login}+",
            "encodeURIComponent(location.pathname+location.search));}}",
            "if(!h){{v=s.visibility;h=true;}}",
            "s.visibility=\"hidden\";",
            "try{{fetch(o+{status},",
            "{{cache:\"no-store\",credentials:\"same-origin\",redirect:\"manual\"}})",
            ".then(function(r){{if(r.status===200){{s.visibility=v;h=false;}}else{{out();}}}},out);}}",
            "catch(x){{out();}}",
            "}});}})();"
        ),
        login = login,
        status = status
    )
}

/// A double-quoted JavaScript string literal holding `text`, using only
/// printable ASCII other than `<`, `>` and `&`.
fn js_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' if !matches!(c, '<' | '>' | '&') => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
    out
}

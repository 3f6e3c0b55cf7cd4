//! What `signoff check` reads in a page: its forms (with their fields and
//! buttons) and its links, each with the text a person sees. Read with
//! lol_html, the streaming parser the gateway already uses for the guard.

use std::borrow::Cow;
use std::cell::RefCell;
use std::rc::Rc;

use anyhow::{anyhow, Result};
use lol_html::html_content::Element;
use lol_html::{doc_text, ElementContentHandlers, RewriteStrSettings, Selector};

/// A form as a browser would submit it.
#[derive(Debug, Clone, Default)]
pub struct Form {
    /// The `action` attribute as written (empty: the page itself).
    pub action: String,
    /// The `id` or `name` attribute, if any (Flask-Security's login form
    /// is `login_user_form`).
    pub label: String,
    /// `GET` or `POST` (upper case; anything else counts as `GET`, as in
    /// browsers).
    pub method: String,
    pub fields: Vec<Field>,
    /// The text inside the form, button labels included.
    pub text: String,
    /// Whether `--logout SELECTOR` matched the form or an element in it.
    pub selected: bool,
}

/// One `input`, `button`, `select` or `textarea` with a name.
#[derive(Debug, Clone, Default)]
pub struct Field {
    pub name: String,
    /// `text`, `password`, `hidden`, `submit`, `checkbox`, ... (lower case)
    pub kind: String,
    pub value: String,
    pub checked: bool,
    pub autocomplete: String,
}

/// A link: `<a href>`.
#[derive(Debug, Clone, Default)]
pub struct Link {
    pub href: String,
    pub text: String,
    pub selected: bool,
}

/// Everything `check` uses from one page.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub forms: Vec<Form>,
    pub links: Vec<Link>,
    /// Where `<meta http-equiv="refresh" content="N; url=…">` sends the
    /// browser, as written.
    pub refresh: Option<String>,
    /// The page's text, without scripts, styles and templates; one line
    /// per text node or so, as written.
    pub text: String,
}

/// Bounds what one page may hold, whatever the app sends.
const MAX_ITEMS: usize = 2_000;
const MAX_TEXT: usize = 64 * 1024;

#[derive(Default)]
struct Reading {
    page: Page,
    /// Indexes of the form and the link whose start tag was read and whose
    /// end tag was not.
    open_form: Option<usize>,
    open_link: Option<usize>,
    /// Inside a `script`, `style` or `template`: text nobody sees.
    unseen: usize,
}

impl Reading {
    fn add_text(&mut self, text: &str) {
        if self.unseen > 0 {
            return;
        }
        let text = &*html_escape::decode_html_entities(text);
        let push = |to: &mut String| {
            if to.len() < MAX_TEXT {
                to.push_str(text);
            }
        };
        push(&mut self.page.text);
        if let Some(i) = self.open_form {
            push(&mut self.page.forms[i].text);
        }
        if let Some(i) = self.open_link {
            push(&mut self.page.links[i].text);
        }
    }
}

impl Page {
    /// Reads `html`. `selector`, from `--logout`, marks the forms and links
    /// it matches (a button or field it matches marks its form).
    pub fn read(html: &str, selector: Option<&str>) -> Result<Page> {
        let selected: Option<Selector> = selector
            .map(|s| {
                s.parse::<Selector>().map_err(|e| {
                    anyhow!("--logout {s:?} is not a CSS selector this tool reads: {e}")
                })
            })
            .transpose()?;
        let state = Rc::new(RefCell::new(Reading::default()));
        let mut handlers: Vec<(Cow<'_, Selector>, ElementContentHandlers<'_>)> = Vec::new();

        let s = state.clone();
        handlers.push(on("form", move |el| {
            let mut r = s.borrow_mut();
            if r.page.forms.len() >= MAX_ITEMS {
                return;
            }
            r.page.forms.push(Form {
                action: attr(el, "action").unwrap_or_default(),
                label: attr(el, "id")
                    .or_else(|| attr(el, "name"))
                    .unwrap_or_default(),
                method: match attr(el, "method") {
                    Some(m) if m.eq_ignore_ascii_case("post") => "POST".into(),
                    _ => "GET".into(),
                },
                ..Form::default()
            });
            r.open_form = Some(r.page.forms.len() - 1);
            drop(r);
            let s = s.clone();
            let _ = el.on_end_tag(Box::new(move |_| {
                s.borrow_mut().open_form = None;
                Ok(())
            }));
        }));

        let s = state.clone();
        handlers.push(on("input, button, select, textarea", move |el| {
            let mut r = s.borrow_mut();
            let Some(i) = r.open_form else { return };
            let tag = el.tag_name();
            let kind = match tag.as_str() {
                "input" => attr(el, "type")
                    .unwrap_or_else(|| "text".into())
                    .to_ascii_lowercase(),
                "button" => attr(el, "type")
                    .unwrap_or_else(|| "submit".into())
                    .to_ascii_lowercase(),
                other => other.to_owned(),
            };
            let Some(name) = attr(el, "name") else {
                return;
            };
            let form = &mut r.page.forms[i];
            if form.fields.len() < MAX_ITEMS {
                form.fields.push(Field {
                    name,
                    kind,
                    value: attr(el, "value").unwrap_or_default(),
                    checked: el.has_attribute("checked"),
                    autocomplete: attr(el, "autocomplete").unwrap_or_default(),
                });
            }
        }));

        let s = state.clone();
        handlers.push(on("a[href]", move |el| {
            let mut r = s.borrow_mut();
            if r.page.links.len() >= MAX_ITEMS {
                return;
            }
            r.page.links.push(Link {
                href: attr(el, "href").unwrap_or_default(),
                ..Link::default()
            });
            r.open_link = Some(r.page.links.len() - 1);
            drop(r);
            let s = s.clone();
            let _ = el.on_end_tag(Box::new(move |_| {
                s.borrow_mut().open_link = None;
                Ok(())
            }));
        }));

        let s = state.clone();
        handlers.push(on("script, style, template, noscript", move |el| {
            if !el.can_have_content() {
                return;
            }
            s.borrow_mut().unseen += 1;
            let s = s.clone();
            let _ = el.on_end_tag(Box::new(move |_| {
                let mut r = s.borrow_mut();
                r.unseen = r.unseen.saturating_sub(1);
                Ok(())
            }));
        }));

        let s = state.clone();
        handlers.push(on("meta[http-equiv][content]", move |el| {
            let is_refresh =
                attr(el, "http-equiv").is_some_and(|v| v.eq_ignore_ascii_case("refresh"));
            if !is_refresh {
                return;
            }
            let target = refresh_url(&attr(el, "content").unwrap_or_default());
            if let Some(t) = target {
                s.borrow_mut().page.refresh.get_or_insert(t);
            }
        }));

        // Button labels given as `value` or `aria-label` are text too.
        let s = state.clone();
        handlers.push(on("input[value], [aria-label], [title]", move |el| {
            let mut r = s.borrow_mut();
            for name in ["aria-label", "title"] {
                if let Some(v) = attr(el, name) {
                    r.add_text(&format!(" {v} "));
                }
            }
            let is_button = attr(el, "type").is_some_and(|t| {
                t.eq_ignore_ascii_case("submit") || t.eq_ignore_ascii_case("button")
            });
            if el.tag_name() == "input" && is_button {
                if let Some(v) = attr(el, "value") {
                    r.add_text(&format!(" {v} "));
                }
            }
        }));

        // Registered last, so the form or link it marks is already read.
        if let Some(selector) = selected {
            let s = state.clone();
            handlers.push((
                Cow::Owned(selector),
                ElementContentHandlers::default().element(move |el: &mut Element<'_, '_>| {
                    let mut r = s.borrow_mut();
                    let tag = el.tag_name();
                    if tag == "a" {
                        if let Some(l) = r.page.links.last_mut() {
                            l.selected = true;
                        }
                    } else if let Some(i) = r.open_form {
                        r.page.forms[i].selected = true;
                    }
                    Ok(())
                }),
            ));
        }

        let s = state.clone();
        let settings = RewriteStrSettings {
            element_content_handlers: handlers,
            document_content_handlers: vec![doc_text!(move |t| {
                let mut r = s.borrow_mut();
                r.add_text(t.as_str());
                // One line per text node, so a page's lines can be told
                // apart (Page::own_line).
                if t.last_in_text_node() {
                    r.add_text("\n");
                }
                Ok(())
            })],
            ..RewriteStrSettings::new()
        };
        // A page that does not parse still yields what was read before the
        // error; check never needs more than that.
        let _ = lol_html::rewrite_str(html, settings);
        let page = std::mem::take(&mut state.borrow_mut().page);
        Ok(page)
    }

    /// The first form with a password field: the login form.
    pub fn login_form(&self) -> Option<&Form> {
        self.forms.iter().find(|f| f.password_field().is_some())
    }

    /// A line of this page's text that none of `others` has, to tell the
    /// page by what a person sees: the longest such line without digits
    /// (they change between loads), squeezed, at most 80 characters.
    pub fn own_line(&self, others: &[&Page]) -> Option<String> {
        let theirs: Vec<String> = others.iter().map(|p| squeeze(&p.text)).collect();
        let mut lines: Vec<String> = self
            .text
            .lines()
            .map(squeeze)
            .filter(|l| l.chars().count() >= 6 && !l.chars().any(|c| c.is_ascii_digit()))
            .filter(|l| theirs.iter().all(|t| !t.contains(l.as_str())))
            .collect();
        lines.sort_by_key(|l| std::cmp::Reverse(l.chars().count()));
        let line = lines.into_iter().next()?;
        Some(match line.char_indices().nth(80) {
            Some((i, _)) => line[..i].trim_end().to_owned(),
            None => line,
        })
    }

    /// Whether the page asks for a password.
    pub fn asks_for_password(&self) -> bool {
        self.login_form().is_some()
    }
}

/// An attribute's value with its character references decoded (lol_html
/// gives them as written).
fn attr(el: &Element<'_, '_>, name: &str) -> Option<String> {
    el.get_attribute(name)
        .map(|v| html_escape::decode_html_entities(&v).into_owned())
}

/// An element handler that cannot fail.
fn on<'h>(
    selector: &str,
    mut f: impl FnMut(&mut Element<'_, '_>) + 'h,
) -> (Cow<'static, Selector>, ElementContentHandlers<'h>) {
    let selector: Selector = selector.parse().expect("a fixed selector");
    (
        Cow::Owned(selector),
        ElementContentHandlers::default().element(move |el: &mut Element<'_, '_>| {
            f(el);
            Ok(())
        }),
    )
}

impl Form {
    /// The password field's name.
    pub fn password_field(&self) -> Option<&Field> {
        self.fields.iter().find(|f| f.kind == "password")
    }

    /// The field a person types their user name or email into: one whose
    /// name or autocomplete says so, else the first text-like field.
    pub fn user_field(&self) -> Option<&Field> {
        let texty = |f: &&Field| matches!(f.kind.as_str(), "text" | "email" | "tel" | "");
        let named = |f: &&Field| {
            let n = f.name.to_ascii_lowercase();
            f.autocomplete.contains("username")
                || f.autocomplete.contains("email")
                || ["user", "email", "login", "identity", "account"]
                    .iter()
                    .any(|w| n.contains(w))
        };
        self.fields
            .iter()
            .filter(texty)
            .find(named)
            .or_else(|| self.fields.iter().find(texty))
    }

    /// The fields a browser sends when the form is submitted with its
    /// first submit button, as they are on the page.
    pub fn submission(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut clicked = false;
        for f in &self.fields {
            match f.kind.as_str() {
                "submit" | "image" => {
                    if !clicked {
                        clicked = true;
                        out.push((f.name.clone(), f.value.clone()));
                    }
                }
                "checkbox" | "radio" => {
                    if f.checked {
                        let v = if f.value.is_empty() { "on" } else { &f.value };
                        out.push((f.name.clone(), v.to_owned()));
                    }
                }
                "button" | "reset" | "file" => {}
                _ => out.push((f.name.clone(), f.value.clone())),
            }
        }
        out
    }
}

/// The address of a refresh (`Refresh` header or meta refresh content):
/// `5; url=/next`, `0;URL='/next'`, `0, /next`, `0; /next` (HTML's
/// "shared declarative refresh steps", loosely).
pub fn refresh_url(content: &str) -> Option<String> {
    let rest = content
        .trim_start()
        .trim_start_matches(|c: char| c.is_ascii_digit() || c == '.')
        .trim_start();
    let rest = rest.strip_prefix([';', ',']).unwrap_or(rest).trim_start();
    let rest = match rest.get(..3) {
        Some(u) if u.eq_ignore_ascii_case("url") => {
            let after = rest[3..].trim_start();
            after.strip_prefix('=').map_or(rest, str::trim_start)
        }
        _ => rest,
    };
    let url = rest.trim().trim_matches(|c| c == '\'' || c == '"').trim();
    (!url.is_empty()).then(|| url.to_owned())
}

/// Whether `text` says "log out" or "sign out" (and not "sign out other
/// sessions").
pub fn says_sign_out(text: &str) -> bool {
    let t = squash(text);
    ["logout", "logoff", "signout", "logmeout"]
        .iter()
        .any(|w| t.contains(w))
        && !says_other_sessions(text)
}

/// Whether `text` offers to end the user's other sessions: an action
/// ("sign out", "log out", "end", "revoke", "terminate") and a scope
/// ("everywhere", "elsewhere", "other sessions", "all devices").
pub fn says_other_sessions(text: &str) -> bool {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let at = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
    let action = (0..words.len()).any(|i| {
        matches!(
            at(i),
            "logout" | "signout" | "logoff" | "revoke" | "terminate" | "end"
        ) || (matches!(at(i), "sign" | "log") && matches!(at(i + 1), "out" | "off"))
    });
    let things = [
        "session",
        "sessions",
        "device",
        "devices",
        "browser",
        "browsers",
        "computers",
    ];
    let scope = (0..words.len()).any(|i| {
        matches!(at(i), "everywhere" | "elsewhere")
            || (matches!(at(i), "other" | "others" | "all")
                && (1..=3).any(|k| things.contains(&at(i + k))))
    });
    action && scope
}

/// Whitespace squeezed to single spaces, so rendered and written text
/// compare.
pub fn squeeze(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Lower case, letters only: "Sign&nbsp;out" and "sign-out" read alike.
fn squash(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"<html><body>
        <nav><a href="/">Home</a> <a id="out" href="/logout">Sign&nbsp;out</a></nav>
        <form method="post" action="/login?next=%2F">
          <input type="hidden" name="csrf_token" value="abc">
          <label>Email <input name="email" type="email"></label>
          <input name="password" type="password">
          <input type="checkbox" name="remember" value="y">
          <input type="checkbox" name="tos" checked>
          <button name="submit" value="go">Sign in</button>
          <button name="other" value="no">Other</button>
        </form>
        <form action="/sessions/end-others" method="post"><button>Sign out other sessions</button></form>
        <form action="/bye" method="post" class="x"><input type="submit" value="Log out"></form>
        </body></html>"#;

    #[test]
    fn forms_links_and_their_text_are_read() {
        let page = Page::read(PAGE, None).unwrap();
        assert_eq!(page.links.len(), 2);
        assert!(says_sign_out(&page.links[1].text), "{:?}", page.links[1]);
        assert!(!says_sign_out(&page.links[0].text));
        let login = page.login_form().unwrap();
        assert_eq!(login.method, "POST");
        assert_eq!(login.action, "/login?next=%2F");
        assert_eq!(login.user_field().unwrap().name, "email");
        assert_eq!(login.password_field().unwrap().name, "password");
        let sent = login.submission();
        assert_eq!(
            sent,
            [
                ("csrf_token", "abc"),
                ("email", ""),
                ("password", ""),
                ("tos", "on"),
                ("submit", "go")
            ]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        assert!(says_other_sessions(&page.forms[1].text));
        for yes in [
            "Sign out everywhere else",
            "Log out of all other sessions",
            "End all other browser sessions",
        ] {
            assert!(says_other_sessions(yes), "{yes}");
        }
        for no in [
            "Available on all devices",
            "Send to other user",
            "Sessions",
            "Sign out",
        ] {
            assert!(!says_other_sessions(no), "{no}");
        }
        assert!(!says_sign_out(&page.forms[1].text));
        assert!(says_sign_out(&page.forms[2].text), "{:?}", page.forms[2]);
    }

    #[test]
    fn script_and_style_text_is_not_page_text() {
        let page = Page::read(
            "<p>seen</p><script>var hidden = 1;</script><style>p{}</style><p>also &amp; seen</p>",
            None,
        )
        .unwrap();
        assert_eq!(page.text, "seen\nalso & seen\n");
    }

    #[test]
    fn a_page_is_told_by_a_line_the_others_lack() {
        let private = Page::read(
            "<h1>Hello alice</h1><p>Your balance: 12 EUR</p><p>Your private notes are here</p><a href=/>Home</a>",
            None,
        )
        .unwrap();
        let login = Page::read("<h1>Sign in</h1><a href=/>Home</a>", None).unwrap();
        assert_eq!(
            private.own_line(&[&login]).as_deref(),
            Some("Your private notes are here")
        );
        assert_eq!(login.own_line(&[&login]), None);
    }

    #[test]
    fn a_meta_refresh_is_read() {
        let page = Page::read(
            r#"<meta http-equiv="Refresh" content="0; URL='//evil.example/'">"#,
            None,
        )
        .unwrap();
        assert_eq!(page.refresh.as_deref(), Some("//evil.example/"));
        let page = Page::read(r#"<meta http-equiv="refresh" content="5">"#, None).unwrap();
        assert_eq!(page.refresh, None);
        for (content, want) in [
            ("0; url=/next", "/next"),
            ("0;URL='//evil.example/'", "//evil.example/"),
            ("0, //evil.example/", "//evil.example/"),
            ("0; //evil.example/", "//evil.example/"),
            ("3.5 ; url = \"/a b\"", "/a b"),
        ] {
            assert_eq!(refresh_url(content).as_deref(), Some(want), "{content}");
        }
    }

    #[test]
    fn a_selector_marks_the_form_or_link_it_names() {
        let page = Page::read(PAGE, Some("form.x input")).unwrap();
        assert!(page.forms[2].selected);
        assert!(!page.forms[0].selected && !page.forms[1].selected);
        let page = Page::read(PAGE, Some("#out")).unwrap();
        assert!(page.links[1].selected && !page.links[0].selected);
        let err = Page::read(PAGE, Some("a:has(b)")).unwrap_err();
        assert!(err.to_string().contains("--logout"), "{err}");
    }

    #[test]
    fn broken_or_huge_markup_does_not_panic() {
        for html in [
            "<form",
            "<a href=",
            "<<<>>>",
            "\u{0}\u{feff}<form><input name=a>",
        ] {
            let _ = Page::read(html, None).unwrap();
        }
        let many = "<form><input name=a>".repeat(5_000);
        let page = Page::read(&many, None).unwrap();
        assert!(page.forms.len() <= MAX_ITEMS);
    }
}

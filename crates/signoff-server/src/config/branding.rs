//! Branding of signoff's own pages: the product name, a logo, an accent
//! colour, and a directory of stylesheet and logo overrides. Flags and
//! `SIGNOFF_BRAND_*` variables as every setting; in the file, the
//! `[branding]` table. Files are read and checked at start, so a bad one
//! stops the start naming its path and its setting, never a page.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Deserialize;

use super::Layer;

/// The name shown when none is given.
pub const DEFAULT_BRAND_NAME: &str = "signoff";
/// Largest logo, and largest stylesheet in a template directory.
pub const MAX_BRAND_FILE_BYTES: u64 = 256 * 1024;
/// Longest product name, in characters.
const MAX_NAME_CHARS: usize = 64;

/// Branding: flags and variables, and the file's `[branding]` table (its
/// keys without the `brand_` of the flags).
#[derive(Debug, Default, Clone, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrandingOptions {
    /// The product or app name in the header and title of signoff's pages
    /// ("Sign in · NAME") [default: signoff] [file: [branding] name]
    #[arg(
        long,
        env = "SIGNOFF_BRAND_NAME",
        value_name = "NAME",
        display_order = 42
    )]
    #[serde(rename = "name")]
    pub brand_name: Option<String>,
    /// A logo for the header of signoff's pages: PNG, JPEG, WebP or SVG, at
    /// most 256 KiB, read at start [file: [branding] logo]
    #[arg(
        long,
        env = "SIGNOFF_BRAND_LOGO",
        value_name = "FILE",
        display_order = 43
    )]
    #[serde(rename = "logo")]
    pub brand_logo: Option<PathBuf>,
    /// Accent colour of buttons and the header rule, #rgb or #rrggbb
    /// [default: #0b5cad] [file: [branding] accent]
    #[arg(
        long,
        env = "SIGNOFF_BRAND_ACCENT",
        value_name = "COLOR",
        display_order = 44
    )]
    #[serde(rename = "accent")]
    pub brand_accent: Option<String>,
    /// A directory whose signoff.css replaces the built-in stylesheet, whose
    /// extra.css is loaded after it, whose logo.(png|jpg|jpeg|webp|svg) is
    /// the logo, and whose login.html, logout.html, signed_out.html,
    /// message.html, sign_in_refused.html, forbidden.html, sessions.html,
    /// reauth.html or password.html (Jinja templates, optionally extending a base.html
    /// there) replace those whole pages; checked at start; nothing else may
    /// be in it [file: [branding] template_dir]
    #[arg(
        long,
        env = "SIGNOFF_TEMPLATE_DIR",
        value_name = "DIR",
        display_order = 45
    )]
    pub template_dir: Option<PathBuf>,
}

impl Layer for BrandingOptions {
    fn or(self, below: Self) -> Self {
        Self {
            brand_name: self.brand_name.or(below.brand_name),
            brand_logo: self.brand_logo.or(below.brand_logo),
            brand_accent: self.brand_accent.or(below.brand_accent),
            template_dir: self.template_dir.or(below.template_dir),
        }
    }
}

/// An image type a logo may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogoKind {
    Png,
    Jpeg,
    Webp,
    Svg,
}

impl LogoKind {
    /// Its `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            LogoKind::Png => "image/png",
            LogoKind::Jpeg => "image/jpeg",
            LogoKind::Webp => "image/webp",
            LogoKind::Svg => "image/svg+xml",
        }
    }

    fn name(self) -> &'static str {
        match self {
            LogoKind::Png => "PNG",
            LogoKind::Jpeg => "JPEG",
            LogoKind::Webp => "WebP",
            LogoKind::Svg => "SVG",
        }
    }

    /// The type a file name's extension promises, if it is an image's.
    fn of_extension(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "png" => Some(LogoKind::Png),
            "jpg" | "jpeg" => Some(LogoKind::Jpeg),
            "webp" => Some(LogoKind::Webp),
            "svg" => Some(LogoKind::Svg),
            _ => None,
        }
    }

    /// The type the bytes themselves show: the raster formats by their
    /// magic bytes, SVG by an `<svg` element near the start of UTF-8 text.
    fn of_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            return Some(LogoKind::Png);
        }
        if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
            return Some(LogoKind::Jpeg);
        }
        if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
            return Some(LogoKind::Webp);
        }
        let text = std::str::from_utf8(bytes).ok()?;
        let head: String = text.chars().take(4096).collect::<String>().to_lowercase();
        head.contains("<svg").then_some(LogoKind::Svg)
    }
}

/// The first 16 hex digits of the SHA-256 of `bytes`: a file's URL carries
/// it (`?v=…`), so browsers may cache the file for a year and still see a
/// new one at once.
fn version_of(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A logo, read and checked at start.
#[derive(Clone)]
pub struct Logo {
    pub kind: LogoKind,
    /// Shared by every answer that serves it (no copy per request).
    pub bytes: bytes::Bytes,
    /// Of the bytes, for its URL.
    pub version: String,
}

/// A stylesheet from a template directory.
#[derive(Clone)]
pub struct Stylesheet {
    pub text: Arc<str>,
    /// Of the text, for its URL.
    pub version: String,
}

impl std::fmt::Debug for Stylesheet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stylesheet")
            .field("bytes", &self.text.len())
            .field("version", &self.version)
            .finish()
    }
}

impl std::fmt::Debug for Logo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logo")
            .field("kind", &self.kind)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

/// A colour as `#rrggbb`, lowercase: nothing else can reach the stylesheet
/// it is written into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accent(String);

impl Accent {
    /// `#rgb` or `#rrggbb`; anything else is refused.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || {
            anyhow::anyhow!(
                "--brand-accent {text:?}: expected a colour as #rgb or #rrggbb, such as #0b5cad"
            )
        };
        let hex = text.trim().strip_prefix('#').ok_or_else(bad)?;
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let full = match hex.len() {
            3 => hex.chars().flat_map(|c| [c, c]).collect(),
            6 => hex.to_owned(),
            _ => return Err(bad()),
        };
        Ok(Accent(format!("#{}", full.to_ascii_lowercase())))
    }

    /// `#rrggbb`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `rrggbb`, for the URL of the stylesheet that sets it.
    pub fn version(&self) -> &str {
        &self.0[1..]
    }

    /// Black or white, whichever contrasts more with this colour as a
    /// background (at least 4.58:1 either way, so WCAG AA for text).
    pub fn text_on(&self) -> &'static str {
        let channel = |i: usize| {
            let v = f64::from(u8::from_str_radix(&self.0[i..i + 2], 16).unwrap_or(0)) / 255.0;
            if v <= 0.04045 {
                v / 12.92
            } else {
                ((v + 0.055) / 1.055).powf(2.4)
            }
        };
        let luminance = 0.2126 * channel(1) + 0.7152 * channel(3) + 0.0722 * channel(5);
        let with_white = 1.05 / (luminance + 0.05);
        let with_black = (luminance + 0.05) / 0.05;
        if with_black > with_white {
            "#000000"
        } else {
            "#ffffff"
        }
    }
}

/// Branding, checked.
#[derive(Debug, Clone)]
pub struct Branding {
    /// Shown in the header and each page's title.
    pub name: String,
    pub logo: Option<Logo>,
    pub accent: Option<Accent>,
    /// A stylesheet served instead of the built-in one.
    pub stylesheet: Option<Arc<str>>,
    /// A stylesheet loaded after signoff's.
    pub extra_css: Option<Stylesheet>,
    /// Whole-page overrides from the template directory, compiled and
    /// tried at start.
    pub overrides: Option<Arc<Overrides>>,
}

impl Default for Branding {
    fn default() -> Self {
        Self {
            name: DEFAULT_BRAND_NAME.to_owned(),
            logo: None,
            accent: None,
            stylesheet: None,
            extra_css: None,
            overrides: None,
        }
    }
}

/// The pages a template directory may replace: `<name>.html` each, the
/// file names of the built-in templates.
pub const PAGE_NAMES: [&str; 9] = [
    "login",
    "logout",
    "signed_out",
    "message",
    "sign_in_refused",
    "forbidden",
    "sessions",
    "reauth",
    "password",
];

/// The template page overrides may extend (`{% extends "base.html" %}`);
/// the built-in pages never use it.
const OVERRIDE_BASE: &str = "base.html";

/// The page overrides of a template directory: Jinja templates, compiled
/// at start, auto-escaping HTML, refusing undefined variables.
pub struct Overrides {
    env: minijinja::Environment<'static>,
    /// The names (of [`PAGE_NAMES`]) that have an override.
    pages: Vec<&'static str>,
}

impl std::fmt::Debug for Overrides {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overrides")
            .field("pages", &self.pages)
            .finish()
    }
}

impl Overrides {
    /// Is there an override of this page?
    pub fn has(&self, page: &str) -> bool {
        self.pages.contains(&page)
    }

    /// Renders the override of `page` with `context`; `None` when the page
    /// has none.
    pub fn render(
        &self,
        page: &str,
        context: minijinja::Value,
    ) -> Option<Result<String, minijinja::Error>> {
        if !self.has(page) {
            return None;
        }
        let name = format!("{page}.html");
        Some(
            self.env
                .get_template(&name)
                .and_then(|template| template.render(context)),
        )
    }

    /// The names of the pages with an override.
    pub fn pages(&self) -> &[&'static str] {
        &self.pages
    }
}

/// The environment every override is compiled in.
fn override_environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    // Every file is `.html`; escaping is never left to the file name.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env
}

/// "FILE line N: what", for an error in a template of the directory.
fn template_error(dir: &Path, e: &minijinja::Error) -> anyhow::Error {
    let file = e
        .name()
        .map_or_else(|| dir.to_owned(), |name| dir.join(name));
    let what = match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    };
    match e.line() {
        Some(line) => anyhow::anyhow!(
            "--template-dir: {} line {line}: {what}; fix the template or remove it \
             (docs/configuration.md, \"Branding\")",
            file.display()
        ),
        None => anyhow::anyhow!(
            "--template-dir: {}: {what}; fix the template or remove it \
             (docs/configuration.md, \"Branding\")",
            file.display()
        ),
    }
}

/// Reads a file of at most [`MAX_BRAND_FILE_BYTES`], naming it and the
/// setting that named it in every error.
fn read_limited(path: &Path, setting: &str) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("{setting}: cannot read {}", path.display()))?;
    if !meta.is_file() {
        bail!("{setting}: {} is not a file", path.display());
    }
    if meta.len() > MAX_BRAND_FILE_BYTES {
        bail!(
            "{setting}: {} is {} bytes; at most {} KiB is served",
            path.display(),
            meta.len(),
            MAX_BRAND_FILE_BYTES / 1024
        );
    }
    let bytes = std::fs::read(path)
        .with_context(|| format!("{setting}: cannot read {}", path.display()))?;
    if bytes.len() as u64 > MAX_BRAND_FILE_BYTES {
        bail!(
            "{setting}: {} grew past {} KiB while being read",
            path.display(),
            MAX_BRAND_FILE_BYTES / 1024
        );
    }
    Ok(bytes)
}

/// Reads and checks a logo: its bytes must be a PNG, JPEG, WebP or SVG
/// image, of the type its extension names.
pub fn read_logo(path: &Path, setting: &str) -> Result<Logo> {
    let bytes = read_limited(path, setting)?;
    if bytes.is_empty() {
        bail!("{setting}: {} is empty", path.display());
    }
    let Some(kind) = LogoKind::of_bytes(&bytes) else {
        bail!(
            "{setting}: {} is not a PNG, JPEG, WebP or SVG image",
            path.display()
        );
    };
    match LogoKind::of_extension(path) {
        Some(named) if named == kind => {}
        Some(named) => bail!(
            "{setting}: {} is named as a {} but holds a {} image; rename it",
            path.display(),
            named.name(),
            kind.name()
        ),
        // SVG is text: only a file that says it is one is taken as one.
        None if kind == LogoKind::Svg => bail!(
            "{setting}: {} looks like SVG but is not named .svg; rename it",
            path.display()
        ),
        None => {}
    }
    Ok(Logo {
        kind,
        version: version_of(&bytes),
        bytes: bytes.into(),
    })
}

fn read_css(path: &Path, setting: &str) -> Result<Arc<str>> {
    let bytes = read_limited(path, setting)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("{setting}: {} is not UTF-8 text", path.display()))?;
    Ok(text.into())
}

/// What a template directory gives.
#[derive(Default)]
struct TemplateDir {
    stylesheet: Option<Arc<str>>,
    extra_css: Option<Stylesheet>,
    logo: Option<Logo>,
    /// Page overrides (`login.html`, …, and `base.html`), as read: name and
    /// text.
    templates: Vec<(&'static str, String)>,
}

const TEMPLATE_DIR_FILES: &str =
    "signoff.css, extra.css, one logo.png, logo.jpg, logo.jpeg, logo.webp or logo.svg, \
     page overrides named login.html, logout.html, signed_out.html, message.html, \
     sign_in_refused.html, forbidden.html, sessions.html, reauth.html or password.html, \
     and a base.html \
     they may extend";

/// The page (or `base`) an override file name names.
fn override_name(file: &str) -> Option<&'static str> {
    let stem = file.strip_suffix(".html")?;
    PAGE_NAMES
        .iter()
        .chain(&["base"])
        .find(|name| **name == stem)
        .copied()
}

fn read_template(path: &Path, setting: &str) -> Result<String> {
    let bytes = read_limited(path, setting)?;
    String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("{setting}: {} is not UTF-8 text", path.display()))
}

fn read_template_dir(dir: &Path) -> Result<TemplateDir> {
    const FLAG: &str = "--template-dir";
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("{FLAG}: cannot read the directory {}", dir.display()))?;
    // What is in the directory becomes signoff's own pages (a sign-in form
    // included): not every user may change it. (Group-writable is allowed:
    // with a umask of 002 every file is, and the group is often the user's
    // own.)
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir)
            .with_context(|| format!("{FLAG}: cannot read the directory {}", dir.display()))?
            .permissions()
            .mode()
            & 0o7777;
        if mode & 0o002 != 0 {
            bail!(
                "{FLAG}: the directory {} is writable by every user (mode {mode:04o}), who \
                 could replace signoff's sign-in page; take that away (chmod o-w {})",
                dir.display(),
                dir.display()
            );
        }
    }
    let mut found = TemplateDir::default();
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("{FLAG}: cannot read {}", dir.display()))?;
        names.push(entry.file_name());
    }
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let Some(text) = name.to_str() else {
            bail!(
                "{FLAG}: {} has a name that is not UTF-8; it holds only {TEMPLATE_DIR_FILES}",
                path.display()
            );
        };
        if text.starts_with('.') {
            continue;
        }
        // A link could serve any file signoff can read, under a public URL;
        // a file others may write could replace the sign-in page.
        {
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::symlink_metadata(&path)
                .with_context(|| format!("{FLAG}: cannot read {}", path.display()))?;
            if meta.file_type().is_symlink() {
                bail!(
                    "{FLAG}: {} is a symbolic link; put the file itself in the directory",
                    path.display()
                );
            }
            if meta.is_file() && meta.nlink() > 1 {
                bail!(
                    "{FLAG}: {} has other names (hard links); put a copy of its own in the \
                     directory",
                    path.display()
                );
            }
            if meta.mode() & 0o002 != 0 {
                bail!(
                    "{FLAG}: {} is writable by every user (mode {:04o}); take that away \
                     (chmod o-w {})",
                    path.display(),
                    meta.mode() & 0o7777,
                    path.display()
                );
            }
        }
        match text {
            "signoff.css" => found.stylesheet = Some(read_css(&path, FLAG)?),
            "extra.css" => {
                let text = read_css(&path, FLAG)?;
                found.extra_css = Some(Stylesheet {
                    version: version_of(text.as_bytes()),
                    text,
                });
            }
            "logo.png" | "logo.jpg" | "logo.jpeg" | "logo.webp" | "logo.svg" => {
                if found.logo.is_some() {
                    bail!(
                        "{FLAG}: {} holds more than one logo.*; keep one",
                        dir.display()
                    );
                }
                found.logo = Some(read_logo(&path, FLAG)?);
            }
            other => match override_name(other) {
                Some(name) => found.templates.push((name, read_template(&path, FLAG)?)),
                None if other.ends_with(".html") => bail!(
                    "{FLAG}: {} is not a page signoff has; the directory holds only \
                     {TEMPLATE_DIR_FILES} (docs/configuration.md, \"Branding\")",
                    path.display()
                ),
                None => bail!(
                    "{FLAG}: {} is not a file signoff reads; the directory holds only \
                     {TEMPLATE_DIR_FILES}",
                    path.display()
                ),
            },
        }
    }
    Ok(found)
}

impl BrandingOptions {
    /// The defaults applied and every file read and checked.
    pub fn check(self) -> Result<Branding> {
        let name = match self.brand_name {
            None => DEFAULT_BRAND_NAME.to_owned(),
            Some(name) => {
                let name = name.trim().to_owned();
                let chars = name.chars().count();
                if chars == 0 || chars > MAX_NAME_CHARS || name.chars().any(char::is_control) {
                    bail!(
                        "--brand-name {name:?}: expected 1 to {MAX_NAME_CHARS} characters \
                         without control characters"
                    );
                }
                name
            }
        };
        let accent = self
            .brand_accent
            .as_deref()
            .map(Accent::parse)
            .transpose()?;
        let dir = match &self.template_dir {
            Some(dir) => read_template_dir(dir)?,
            None => TemplateDir::default(),
        };
        let logo = match (&self.brand_logo, dir.logo) {
            (Some(_), Some(_)) => {
                bail!("--brand-logo and a logo.* in --template-dir both name a logo; keep one")
            }
            (Some(path), None) => Some(read_logo(path, "--brand-logo")?),
            (None, logo) => logo,
        };
        let mut branding = Branding {
            name,
            logo,
            accent,
            stylesheet: dir.stylesheet,
            extra_css: dir.extra_css,
            overrides: None,
        };
        if let Some(path) = &self.template_dir {
            if !dir.templates.is_empty() {
                branding.overrides =
                    Some(Arc::new(compile_overrides(path, dir.templates, &branding)?));
            }
        }
        Ok(branding)
    }
}

/// Compiles the overrides and renders each one against sample contexts of
/// its page (every optional part present, then every one absent), so a
/// misspelt variable stops the start rather than a request.
fn compile_overrides(
    dir: &Path,
    templates: Vec<(&'static str, String)>,
    branding: &Branding,
) -> Result<Overrides> {
    let mut env = override_environment();
    let mut pages = Vec::new();
    for (name, text) in templates {
        env.add_template_owned(format!("{name}.html"), text)
            .map_err(|e| template_error(dir, &e))?;
        if name != "base" {
            pages.push(name);
        }
    }
    if pages.is_empty() {
        bail!(
            "--template-dir: {} holds {OVERRIDE_BASE} but no page override extends it; \
             add one (such as login.html) or remove {OVERRIDE_BASE}",
            dir.display()
        );
    }
    let overrides = Overrides { env, pages };
    for page in overrides.pages() {
        for context in crate::gateway::pages::sample_contexts(page, branding) {
            if let Some(Err(e)) = overrides.render(page, context) {
                return Err(template_error(dir, &e));
            }
        }
    }
    Ok(overrides)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(options: BrandingOptions) -> Result<Branding> {
        options.check()
    }

    fn err(options: BrandingOptions) -> String {
        format!("{:#}", check(options).unwrap_err())
    }

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    const SVG: &[u8] = b"<?xml version=\"1.0\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\"/>";

    #[test]
    fn the_name_defaults_to_signoff_and_is_checked() {
        assert_eq!(check(BrandingOptions::default()).unwrap().name, "signoff");
        let named = |n: &str| BrandingOptions {
            brand_name: Some(n.to_owned()),
            ..BrandingOptions::default()
        };
        assert_eq!(check(named("  Acme Wiki ")).unwrap().name, "Acme Wiki");
        for bad in ["", "   ", "a\nb", &"x".repeat(65)] {
            assert!(err(named(bad)).contains("--brand-name"), "{bad:?}");
        }
    }

    #[test]
    fn an_accent_is_a_hex_colour_and_nothing_else() {
        assert_eq!(Accent::parse("#0B5CAD").unwrap().as_str(), "#0b5cad");
        assert_eq!(Accent::parse("#abc").unwrap().as_str(), "#aabbcc");
        for bad in [
            "",
            "red",
            "#12",
            "#1234",
            "#12345g",
            "0b5cad",
            "#0b5cad;}body{display:none",
            "#0b5cad}</style>",
            "var(--x)",
            "#ｆｆｆ",
        ] {
            let e = format!("{:#}", Accent::parse(bad).unwrap_err());
            assert!(e.contains("--brand-accent") && e.contains("#rrggbb"), "{e}");
        }
    }

    #[test]
    fn text_on_the_accent_is_the_more_legible_of_black_and_white() {
        assert_eq!(Accent::parse("#000").unwrap().text_on(), "#ffffff");
        assert_eq!(Accent::parse("#fff").unwrap().text_on(), "#000000");
        assert_eq!(Accent::parse("#ffd400").unwrap().text_on(), "#000000");
        assert_eq!(Accent::parse("#0b5cad").unwrap().text_on(), "#ffffff");
    }

    #[test]
    fn a_logo_is_typed_by_its_bytes_and_must_match_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let logo = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            BrandingOptions {
                brand_logo: Some(path),
                ..BrandingOptions::default()
            }
        };
        let ok = check(logo("a.png", PNG)).unwrap().logo.unwrap();
        assert_eq!(ok.kind.content_type(), "image/png");
        let ok = check(logo("a.svg", SVG)).unwrap().logo.unwrap();
        assert_eq!(ok.kind.content_type(), "image/svg+xml");
        let ok = check(logo("a.jpg", b"\xff\xd8\xff\xe0rest")).unwrap().logo;
        assert_eq!(ok.unwrap().kind, LogoKind::Jpeg);
        let ok = check(logo("a.webp", b"RIFF\0\0\0\0WEBPVP8 ")).unwrap().logo;
        assert_eq!(ok.unwrap().kind, LogoKind::Webp);

        let e = err(logo("a.gif", b"GIF89a...."));
        assert!(e.contains("--brand-logo") && e.contains("a.gif"), "{e}");
        assert!(e.contains("not a PNG, JPEG, WebP or SVG"), "{e}");
        let e = err(logo("b.png", SVG));
        assert!(e.contains("named as a PNG but holds a SVG"), "{e}");
        let e = err(logo("b.txt", SVG));
        assert!(e.contains("not named .svg"), "{e}");
        let e = err(logo("empty.png", b""));
        assert!(e.contains("is empty"), "{e}");
        let big = vec![0x89; MAX_BRAND_FILE_BYTES as usize + 1];
        let e = err(logo("big.png", &big));
        assert!(
            e.contains("big.png") && e.contains("at most 256 KiB"),
            "{e}"
        );
        let e = err(BrandingOptions {
            brand_logo: Some(dir.path().join("missing.png")),
            ..BrandingOptions::default()
        });
        assert!(
            e.contains("--brand-logo: cannot read") && e.contains("missing.png"),
            "{e}"
        );
        let e = err(BrandingOptions {
            brand_logo: Some(dir.path().to_owned()),
            ..BrandingOptions::default()
        });
        assert!(e.contains("is not a file"), "{e}");
    }

    #[test]
    fn a_template_dir_gives_stylesheets_and_a_logo_and_nothing_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let opts = || BrandingOptions {
            template_dir: Some(dir.path().to_owned()),
            ..BrandingOptions::default()
        };
        let empty = check(opts()).unwrap();
        assert!(empty.stylesheet.is_none() && empty.extra_css.is_none() && empty.logo.is_none());
        std::fs::write(dir.path().join("signoff.css"), "body{color:red}").unwrap();
        std::fs::write(dir.path().join("extra.css"), ".brand{gap:0}").unwrap();
        std::fs::write(dir.path().join("logo.svg"), SVG).unwrap();
        std::fs::write(dir.path().join(".DS_Store"), "x").unwrap();
        let b = check(opts()).unwrap();
        assert_eq!(b.stylesheet.as_deref(), Some("body{color:red}"));
        assert_eq!(b.extra_css.unwrap().text.as_ref(), ".brand{gap:0}");
        assert_eq!(b.logo.unwrap().kind, LogoKind::Svg);

        let elsewhere = tempfile::tempdir().unwrap();
        let png = elsewhere.path().join("other.png");
        std::fs::write(&png, PNG).unwrap();
        let e = err(BrandingOptions {
            brand_logo: Some(png.clone()),
            ..opts()
        });
        assert!(e.contains("both name a logo"), "{e}");

        std::fs::write(dir.path().join("index.html"), "<p>").unwrap();
        let e = err(opts());
        assert!(
            e.contains("--template-dir") && e.contains("index.html"),
            "{e}"
        );
        assert!(e.contains("is not a page signoff has"), "{e}");
        assert!(e.contains("login.html, logout.html"), "{e}");
        std::fs::remove_file(dir.path().join("index.html")).unwrap();

        std::fs::write(dir.path().join("extra.css"), [0xff, 0xfe]).unwrap();
        let e = err(opts());
        assert!(e.contains("extra.css is not UTF-8"), "{e}");
        std::fs::remove_file(dir.path().join("extra.css")).unwrap();

        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        let e = err(opts());
        assert!(e.contains("notes.txt is not a file signoff reads"), "{e}");
        std::fs::remove_file(dir.path().join("notes.txt")).unwrap();

        // A link could serve any readable file publicly.
        let secret = elsewhere.path().join("secret.toml");
        std::fs::write(&secret, "admin_token_sha256 = \"x\"").unwrap();
        std::os::unix::fs::symlink(&secret, dir.path().join("extra.css")).unwrap();
        let e = err(opts());
        assert!(e.contains("extra.css is a symbolic link"), "{e}");
        std::fs::remove_file(dir.path().join("extra.css")).unwrap();

        // Others who may write the directory could replace the sign-in page.
        use std::os::unix::fs::PermissionsExt;
        for mode in [0o777, 0o757] {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
            let e = err(opts());
            assert!(
                e.contains("writable by every user") && e.contains("chmod o-w"),
                "{e}"
            );
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o775)).unwrap();
        assert!(check(opts()).is_ok());
        // Nor a file in it that others may write, nor one with other names.
        let css = dir.path().join("signoff.css");
        std::fs::set_permissions(&css, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = err(opts());
        assert!(e.contains("signoff.css is writable by every user"), "{e}");
        std::fs::set_permissions(&css, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::hard_link(&css, elsewhere.path().join("same.css")).unwrap();
        let e = err(opts());
        assert!(e.contains("signoff.css has other names"), "{e}");
        std::fs::remove_file(elsewhere.path().join("same.css")).unwrap();
        assert!(check(opts()).is_ok());

        let e = err(BrandingOptions {
            template_dir: Some(dir.path().join("missing")),
            ..BrandingOptions::default()
        });
        assert!(
            e.contains("--template-dir: cannot read the directory") && e.contains("missing"),
            "{e}"
        );
    }

    /// A template directory holding these files.
    fn dir_with(files: &[(&str, &str)]) -> (tempfile::TempDir, BrandingOptions) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let opts = BrandingOptions {
            template_dir: Some(dir.path().to_owned()),
            ..BrandingOptions::default()
        };
        (dir, opts)
    }

    #[test]
    fn page_overrides_are_compiled_at_start() {
        let (_dir, opts) = dir_with(&[("login.html", "<p>Hi {{ username }}</p>")]);
        let b = check(opts).unwrap();
        let o = b.overrides.unwrap();
        assert_eq!(o.pages(), ["login"]);
        assert!(o.has("login") && !o.has("logout"));
        let ctx = minijinja::context! { username => "<script>x</script>" };
        assert_eq!(
            o.render("login", ctx).unwrap().unwrap(),
            "<p>Hi &lt;script&gt;x&lt;&#x2f;script&gt;</p>"
        );
        assert!(o.render("logout", minijinja::context! {}).is_none());

        // No template: no overrides at all.
        let (_dir, opts) = dir_with(&[("extra.css", "h1{}")]);
        assert!(check(opts).unwrap().overrides.is_none());
    }

    #[test]
    fn a_misspelt_variable_stops_the_start_naming_file_and_line() {
        let (dir, opts) = dir_with(&[("sessions.html", "<h1>Sessions</h1>\n{{ usr }}\n")]);
        let e = err(opts);
        let file = dir.path().join("sessions.html");
        assert!(
            e.starts_with(&format!("--template-dir: {} line 2: ", file.display())),
            "{e}"
        );
        assert!(e.contains("undefined"), "{e}");
        // In a branch only some requests take: the samples take both.
        let (_dir, opts) = dir_with(&[(
            "login.html",
            "{% if error %}{{ eror }}{% endif %}{{ username }}",
        )]);
        assert!(err(opts).contains("login.html line 1: "));
        let (_dir, opts) = dir_with(&[(
            "login.html",
            "{% if not remember %}{{ brand.logo_url }}{% endif %}",
        )]);
        assert!(err(opts).contains("login.html line 1: "));
        // An attribute of a row.
        let (_dir, opts) = dir_with(&[(
            "sessions.html",
            "{% for s in rows %}\n{{ s.created.when }}{% endfor %}",
        )]);
        assert!(err(opts).contains("sessions.html line 2: "));
    }

    #[test]
    fn a_syntax_error_stops_the_start_naming_file_and_line() {
        let (dir, opts) = dir_with(&[("password.html", "<p>\n\n{% if user %}<p>")]);
        let e = err(opts);
        let file = dir.path().join("password.html");
        assert!(
            e.starts_with(&format!(
                "--template-dir: {} line 3: syntax error",
                file.display()
            )),
            "{e}"
        );
        assert!(e.contains("fix the template or remove it"), "{e}");
        for bad in ["{{ user", "{% endif %}", "{{ user | nosuchfilter }}"] {
            let (_dir, opts) = dir_with(&[("reauth.html", bad)]);
            let e = err(opts);
            assert!(e.contains("reauth.html line 1: "), "{bad}: {e}");
        }
        let (_dir, opts) = dir_with(&[("login.html", "\u{0}\u{ffff}")]);
        check(opts).unwrap();
        let (dir, opts) = dir_with(&[]);
        std::fs::write(dir.path().join("login.html"), [0xff, 0xfe]).unwrap();
        assert!(err(opts).contains("login.html is not UTF-8"));
        let big = "x".repeat(MAX_BRAND_FILE_BYTES as usize + 1);
        let (_dir, opts) = dir_with(&[("login.html", &big)]);
        assert!(err(opts).contains("at most 256 KiB"));
    }

    #[test]
    fn overrides_may_extend_a_base_html_of_the_directory_only() {
        let (_dir, opts) = dir_with(&[(
            "login.html",
            "{% extends \"base.html\" %}{% block main %}form{% endblock %}",
        )]);
        let e = err(opts);
        assert!(e.contains("login.html") && e.contains("base.html"), "{e}");
        let (_dir, opts) = dir_with(&[
            (
                "base.html",
                "<title>{{ brand.name }}</title>{% block main %}{% endblock %}",
            ),
            (
                "login.html",
                "{% extends \"base.html\" %}{% block main %}form {{ next }}{% endblock %}",
            ),
        ]);
        let o = check(opts).unwrap().overrides.unwrap();
        assert_eq!(o.pages(), ["login"]);
        let ctx =
            minijinja::context! { brand => minijinja::context! { name => "A&B" }, next => "/" };
        assert_eq!(
            o.render("login", ctx).unwrap().unwrap(),
            "<title>A&amp;B</title>form &#x2f;"
        );
        // base.html is not a page.
        assert!(o.render("base", minijinja::context! {}).is_none());
        let (_dir, opts) = dir_with(&[("base.html", "<p>")]);
        assert!(err(opts).contains("no page override extends it"));
        // Nor may a template read other files.
        let (_dir, opts) = dir_with(&[("login.html", "{% include \"/etc/passwd\" %}")]);
        assert!(err(opts).contains("login.html"));
    }

    #[test]
    fn every_page_may_be_overridden_with_the_documented_variables() {
        let common = "{{ prefix }}{{ brand.name }}{{ brand.logo }}{{ brand.accent }}\
                      {% for s in brand.stylesheets %}{{ s }}{% endfor %}";
        let pages = [
            ("login", "{{ next }}{{ username }}{{ error }}{{ remember }}"),
            ("logout", "{{ csrf }}"),
            ("signed_out", ""),
            ("message", "{{ heading }}{{ text }}"),
            ("sign_in_refused", "{{ expected }}{{ arrived }}{{ fix }}"),
            ("forbidden", "{{ user }}{{ csrf }}"),
            (
                "sessions",
                "{{ user }}{{ csrf }}{{ ended }}{% for s in rows %}{{ s.handle }}\
                 {{ s.current }}{{ s.device }}{{ s.ip }}{{ s.created.machine }}\
                 {{ s.created.absolute }}{{ s.created.relative }}{{ s.seen.machine }}\
                 {{ s.seen.absolute }}{{ s.seen.relative }}{{ s.remembered_until }}{% endfor %}",
            ),
            ("reauth", "{{ user }}{{ csrf }}{{ next }}{{ error }}"),
            (
                "password",
                "{{ user }}{{ csrf }}{{ min }}{{ notice }}{{ error }}",
            ),
        ];
        assert_eq!(pages.len(), PAGE_NAMES.len());
        let files: Vec<(String, String)> = pages
            .iter()
            .map(|(name, vars)| (format!("{name}.html"), format!("{common}{vars}")))
            .collect();
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(n, t)| (n.as_str(), t.as_str()))
            .collect();
        let (_dir, opts) = dir_with(&refs);
        let o = check(opts).unwrap().overrides.unwrap();
        let mut all = PAGE_NAMES.to_vec();
        all.sort_unstable();
        assert_eq!(o.pages(), all);
    }
}

//! `signoff user import FILE`: users and their password hashes from
//! another system (Flask-Login with Werkzeug, Django, passlib, …).
//!
//! Every row is checked before any is written, and a file with a single
//! bad row imports nothing. Hashes are never printed.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use signoff::{check_groups, check_name, recognise, AccountError, ImportedUser};

use super::{open, Db};
use crate::backend;

/// Longest line read; a longer one stops the import.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// The layout of an import file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportFormat {
    /// One JSON object per line:
    /// {"name":"alice","hash":"…","groups":["admins"],"disabled":false}
    Jsonl,
    /// A header row `name,hash,groups,disabled` (groups and disabled may
    /// be left out), groups separated by `;`.
    Csv,
}

/// What `signoff user import` was asked.
pub struct ImportRequest<'a> {
    pub file: &'a str,
    pub format: Option<ImportFormat>,
    pub skip_existing: bool,
    pub dry_run: bool,
    pub db: &'a Db,
}

/// One row of the file, as read.
struct Row {
    line: usize,
    name: String,
    hash: String,
    groups: Vec<String>,
    disabled: bool,
}

/// A row's problem, with its line.
struct Problem {
    line: usize,
    text: String,
}

/// Runs `signoff user import`.
pub async fn run(request: ImportRequest<'_>) -> Result<()> {
    let (text, shown_file) = read_input(request.file)?;
    let format = match request.format {
        Some(format) => format,
        None => format_of(request.file, &text)?,
    };
    let (rows, mut problems) = match format {
        ImportFormat::Jsonl => parse_jsonl(&text),
        ImportFormat::Csv => parse_csv(&text),
    };

    // Every row: name, hash, groups, and no name twice in the file.
    let mut first_line: HashMap<&str, usize> = HashMap::new();
    let mut warnings = Vec::new();
    let mut formats: Vec<Option<signoff::HashFormat>> = Vec::with_capacity(rows.len());
    for row in &rows {
        // A name is shown only if it is valid: an invalid one could be a
        // hash in the wrong column, and hashes are never printed.
        let who = if check_name(&row.name).is_ok() {
            format!("line {} ({:?})", row.line, row.name)
        } else {
            problems.push(Problem {
                line: row.line,
                text: format!(
                    "line {}: the user name is not valid ({} characters): {}; rename the user in the file",
                    row.line,
                    row.name.chars().count(),
                    AccountError::InvalidName
                ),
            });
            format!("line {}", row.line)
        };
        if let Some(first) = first_line.insert(&row.name, row.line) {
            problems.push(Problem {
                line: row.line,
                text: format!("{who}: the name is also on line {first}; keep one of the two rows"),
            });
            first_line.insert(&row.name, first);
        }
        match recognise(&row.hash) {
            Ok(recognised) => {
                if let Some(weakness) = recognised.weakness {
                    warnings.push(format!(
                        "warning: {who}: {} hash ({}): {weakness}",
                        recognised.format, recognised.cost
                    ));
                }
                formats.push(Some(recognised.format));
            }
            Err(e) => {
                problems.push(Problem {
                    line: row.line,
                    text: format!(
                        "{who}: the password hash is not importable: {e}; export it exactly as the old system stored it"
                    ),
                });
                formats.push(None);
            }
        }
        if check_groups(&row.groups).is_err() {
            problems.push(Problem {
                line: row.line,
                text: format!("{who}: {}; fix the groups", AccountError::InvalidGroup),
            });
        }
    }

    // Names already in the store: refused unless --skip-existing.
    let choice = request.db.choice()?;
    let store = if request.dry_run && backend::refuse_missing_sqlite(&choice).is_err() {
        // Nothing to compare with, and a dry run creates no database.
        None
    } else {
        Some(open(request.db).await?)
    };
    let shown_store = store
        .as_ref()
        .map_or_else(|| backend::describe_db(&choice.db), |s| s.shown.clone());
    let mut existing = Vec::new();
    if let Some(store) = &store {
        let taken: std::collections::HashSet<String> = store
            .accounts()
            .list()
            .await?
            .into_iter()
            .map(|u| u.name)
            .collect();
        for row in &rows {
            if taken.contains(&row.name) {
                if request.skip_existing {
                    existing.push(row.name.clone());
                } else {
                    problems.push(Problem {
                        line: row.line,
                        text: format!(
                            "line {} ({:?}): a user with this name exists already in {shown_store}; remove the row, or pass --skip-existing to leave existing users as they are",
                            row.line, row.name
                        ),
                    });
                }
            }
        }
    }

    if problems.is_empty() {
        for warning in &warnings {
            eprintln!("{warning}");
        }
    } else {
        problems.sort_by_key(|p| p.line);
        for problem in &problems {
            eprintln!("{}", problem.text);
        }
        bail!(
            "{} problem(s) in {shown_file}: nothing imported into {shown_store}; fix them and run the import again",
            problems.len()
        );
    }
    if rows.is_empty() {
        bail!("{shown_file} has no users to import");
    }

    let mut counts: BTreeMap<signoff::HashFormat, usize> = BTreeMap::new();
    let to_import: Vec<(&Row, signoff::HashFormat)> = rows
        .iter()
        .zip(formats)
        .filter(|(row, _)| !existing.contains(&row.name))
        .filter_map(|(row, format)| Some((row, format?)))
        .collect();
    let mut imported = 0;
    if !request.dry_run {
        let Some(store) = &store else {
            bail!("no store to import into");
        };
        let accounts = store.accounts();
        for (row, format) in &to_import {
            let user = ImportedUser {
                name: row.name.clone(),
                hash: row.hash.clone(),
                groups: row.groups.clone(),
                disabled: row.disabled,
            };
            match accounts.import_user(&user).await {
                Ok(_) => {
                    imported += 1;
                    *counts.entry(*format).or_default() += 1;
                }
                Err(AccountError::NameTaken) => {
                    eprintln!(
                        "line {} ({:?}): added to {shown_store} by someone else meanwhile; left as it is",
                        row.line, row.name
                    );
                }
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!(
                        "line {} ({:?}) could not be imported; {imported} user(s) before it were imported into {shown_store}: run the import again with --skip-existing",
                        row.line, row.name
                    )));
                }
            }
        }
    } else {
        for (_, format) in &to_import {
            *counts.entry(*format).or_default() += 1;
        }
    }

    if request.dry_run {
        println!(
            "dry run: {} user(s) in {shown_file} would be imported into {shown_store}; nothing was changed",
            to_import.len()
        );
    } else {
        println!("imported {imported} user(s) into {shown_store}");
    }
    for (format, count) in &counts {
        println!("  {format}: {count}");
    }
    if !existing.is_empty() {
        println!(
            "skipped {} existing user(s), left as they are: {}",
            existing.len(),
            existing.join(", ")
        );
    }
    if counts.keys().any(|f| *f != signoff::HashFormat::Argon2) {
        println!(
            "Each imported hash is replaced by signoff's Argon2id at the user's first successful sign-in; until then it is as strong as it was in the old system."
        );
    }
    Ok(())
}

/// The whole input, each line at most [`MAX_LINE_BYTES`], as UTF-8; and
/// how to name it in messages.
fn read_input(file: &str) -> Result<(String, String)> {
    if file == "-" {
        let stdin = std::io::stdin();
        let text = read_bounded(stdin.lock(), "standard input")?;
        return Ok((text, "standard input".to_owned()));
    }
    let opened = std::fs::File::open(file).with_context(|| {
        format!(
            "cannot open {file}: give the path of a .jsonl or .csv file, or - for standard input"
        )
    })?;
    let text = read_bounded(BufReader::new(opened), file)?;
    Ok((text, file.to_owned()))
}

fn read_bounded(mut reader: impl BufRead, shown: &str) -> Result<String> {
    let mut text = Vec::new();
    let mut line_no = 0usize;
    loop {
        line_no += 1;
        let start = text.len();
        let read = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut text)
            .with_context(|| format!("cannot read {shown}"))?;
        if read == 0 {
            break;
        }
        let line = &text[start..];
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        if content.len() > MAX_LINE_BYTES {
            bail!(
                "line {line_no} of {shown} is longer than {} KiB: not a user row; nothing imported",
                MAX_LINE_BYTES / 1024
            );
        }
    }
    let text = String::from_utf8(text)
        .map_err(|_| anyhow::anyhow!("{shown} is not UTF-8 text; nothing imported"))?;
    // Spreadsheets often start a CSV export with a byte order mark.
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_owned(),
        None => text,
    })
}

/// The format from the file's extension or, for standard input and other
/// names, from its first line.
fn format_of(file: &str, text: &str) -> Result<ImportFormat> {
    let extension = Path::new(file)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("csv") => return Ok(ImportFormat::Csv),
        Some("jsonl" | "ndjson" | "json") => return Ok(ImportFormat::Jsonl),
        _ => {}
    }
    let first = text.lines().map(str::trim).find(|l| !l.is_empty());
    match first {
        Some(line) if line.starts_with('{') => Ok(ImportFormat::Jsonl),
        Some(line)
            if line
                .split(',')
                .map(|c| c.trim().trim_matches('"'))
                .any(|c| c == "hash") =>
        {
            Ok(ImportFormat::Csv)
        }
        _ => bail!(
            "cannot tell the format of {}: name the file .jsonl or .csv, or pass --format jsonl|csv",
            if file == "-" { "standard input" } else { file }
        ),
    }
}

/// A serde_json message without the values it quotes (which could be a
/// hash in the wrong field).
fn without_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut quoted = false;
    for c in message.chars() {
        if c == '"' {
            if !quoted {
                out.push_str("\"…\"");
            }
            quoted = !quoted;
        } else if !quoted {
            out.push(c);
        }
    }
    out
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRow {
    name: String,
    hash: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    disabled: bool,
}

fn parse_jsonl(text: &str) -> (Vec<Row>, Vec<Problem>) {
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        if trimmed.starts_with('[') {
            problems.push(Problem {
                line: line_no,
                text: format!(
                    "line {line_no}: a JSON array; write one JSON object per line (JSON lines)"
                ),
            });
            break;
        }
        match serde_json::from_str::<JsonRow>(trimmed) {
            Ok(row) => rows.push(Row {
                line: line_no,
                name: row.name,
                hash: row.hash,
                groups: row.groups,
                disabled: row.disabled,
            }),
            Err(e) => problems.push(Problem {
                line: line_no,
                text: format!(
                    "line {line_no}: not a user object ({}); write {{\"name\":…,\"hash\":…}} with optional \"groups\" (a list) and \"disabled\" (true/false)",
                    without_quoted(&e.to_string())
                ),
            }),
        }
    }
    (rows, problems)
}

fn parse_csv(text: &str) -> (Vec<Row>, Vec<Problem>) {
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(text.as_bytes());
    let header: Vec<String> = match reader.headers() {
        Ok(h) => h.iter().map(|c| c.trim().to_ascii_lowercase()).collect(),
        Err(e) => {
            problems.push(Problem {
                line: 1,
                text: format!("line 1: the header row cannot be read ({}); start the file with name,hash,groups,disabled", without_quoted(&e.to_string())),
            });
            return (rows, problems);
        }
    };
    let column = |name: &str| header.iter().position(|c| c == name);
    let unknown: Vec<&String> = header
        .iter()
        .filter(|c| !["name", "hash", "groups", "disabled"].contains(&c.as_str()))
        .collect();
    let (Some(name_at), Some(hash_at)) = (column("name"), column("hash")) else {
        problems.push(Problem {
            line: 1,
            text: "line 1: the header row must name the columns name and hash (and may name groups and disabled): name,hash,groups,disabled".to_owned(),
        });
        return (rows, problems);
    };
    if !unknown.is_empty()
        || header.len() != {
            let mut distinct = header.clone();
            distinct.sort();
            distinct.dedup();
            distinct.len()
        }
    {
        problems.push(Problem {
            line: 1,
            text: format!(
                "line 1: unknown or repeated columns ({}); the columns are name,hash,groups,disabled",
                header.join(",")
            ),
        });
        return (rows, problems);
    }
    let (groups_at, disabled_at) = (column("groups"), column("disabled"));
    // From the byte offset, past the blank lines the csv crate skips (and
    // leaves out of its own line count).
    let line_at = |position: &csv::Position| {
        let bytes = text.as_bytes();
        let mut at = usize::try_from(position.byte())
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        while at < bytes.len() && matches!(bytes[at], b'\n' | b'\r') {
            at += 1;
        }
        bytes[..at].iter().filter(|b| **b == b'\n').count() + 1
    };
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, line_at);
                problems.push(Problem {
                    line,
                    text: format!(
                        "line {line}: not a CSV row of {} columns ({}); quote fields that hold commas",
                        header.len(),
                        without_quoted(&e.to_string())
                    ),
                });
                continue;
            }
        };
        let line = record.position().map_or(0, line_at);
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        let field = |at: Option<usize>| at.and_then(|i| record.get(i)).unwrap_or("").trim();
        let disabled = match field(disabled_at).to_ascii_lowercase().as_str() {
            "" | "false" | "0" | "no" => false,
            "true" | "1" | "yes" => true,
            other => {
                problems.push(Problem {
                    line,
                    // Not quoted: in a misordered file this column may
                    // hold a password hash.
                    text: format!(
                        "line {line}: disabled is not a yes or no ({} characters); write true, \
                         false, 1, 0, yes, no or leave it empty (is the header's column order \
                         name,hash,groups,disabled?)",
                        other.chars().count()
                    ),
                });
                false
            }
        };
        rows.push(Row {
            line,
            name: field(Some(name_at)).to_owned(),
            hash: field(Some(hash_at)).to_owned(),
            groups: field(groups_at)
                .split(';')
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(str::to_owned)
                .collect(),
            disabled,
        });
    }
    (rows, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_come_from_the_extension_or_the_first_line() {
        assert_eq!(format_of("u.CSV", "").unwrap(), ImportFormat::Csv);
        assert_eq!(format_of("u.ndjson", "").unwrap(), ImportFormat::Jsonl);
        assert_eq!(
            format_of("-", "\n{\"name\":1}").unwrap(),
            ImportFormat::Jsonl
        );
        assert_eq!(format_of("-", "name,hash\n").unwrap(), ImportFormat::Csv);
        assert!(format_of("-", "alice pbkdf2\n").is_err());
        assert!(format_of("users.txt", "").is_err());
    }

    #[test]
    fn long_lines_and_binary_input_are_refused() {
        let long = "x".repeat(MAX_LINE_BYTES + 1);
        assert!(read_bounded(long.as_bytes(), "t").is_err());
        let fits = format!("{}\nshort\n", "x".repeat(MAX_LINE_BYTES));
        assert_eq!(read_bounded(fits.as_bytes(), "t").unwrap(), fits);
        assert!(read_bounded(&b"\xff\xfe\n"[..], "t").is_err());
        let bom = read_bounded("\u{feff}name,hash\r\n".as_bytes(), "t").unwrap();
        assert_eq!(bom, "name,hash\r\n");
        assert!(parse_csv(&bom).1.is_empty());
    }

    #[test]
    fn json_errors_do_not_quote_values() {
        let (rows, problems) =
            parse_jsonl("{\"name\":\"a\",\"hash\":\"h\",\"groups\":\"pbkdf2:secret\"}\n");
        assert!(rows.is_empty());
        assert!(!problems[0].text.contains("secret"), "{}", problems[0].text);
    }

    #[test]
    fn csv_rows_groups_and_flags() {
        let (rows, problems) = parse_csv(
            "hash,name,disabled,groups\n\"$2b$x,y\",alice,yes,admins; ops\nh,bob,,\n\nh,carol,maybe,\n",
        );
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].hash, "$2b$x,y");
        assert_eq!(rows[0].groups, ["admins", "ops"]);
        assert!(rows[0].disabled);
        assert!(!rows[1].disabled && rows[1].groups.is_empty());
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].text.starts_with("line 5:"),
            "{}",
            problems[0].text
        );
        let (_, problems) = parse_csv("name,password\nalice,x\n");
        assert!(problems[0].text.contains("name and hash"));
        let (_, problems) = parse_csv("name,hash,hash\n");
        assert!(problems[0].text.contains("repeated"));
        let (_, problems) = parse_csv("name,hash\nalice,h,extra\n");
        assert!(
            problems[0].text.starts_with("line 2:"),
            "{}",
            problems[0].text
        );
    }
}

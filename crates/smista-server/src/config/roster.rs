//! `[roster]` and `[[operators]]`: who each operator is — display name, group (and so supplier
//! and budget), skills with levels, channel capacities, active or retired — as the configuration
//! states it, inline and/or in a CSV file the institute's HR or workforce-management system
//! exports. See `docs/roster.md`.
//!
//! ```toml
//! [roster]
//! mode = "required"       # or "open"; default: "required" with [auth], "open" without
//! file = "roster.csv"     # optional; relative to the working directory, like [tls] files
//! refresh_ms = 2000       # how often a node re-reads roster changes from the ledger
//!
//! [[operators]]
//! id = "op-201"
//! name = "Operator 201"
//! group = "supplier-a"
//! skills = { pensions = 7, naspi = 5 }
//! channels = { voice = 1, chat = 3 }   # optional: one voice contact
//! retired = false                      # optional
//! ```
//!
//! The CSV file: a header line `id,name,group,skills,channels,status`, then one operator per
//! line; `skills` as `pensions:7;naspi:5`, `channels` as `voice:1;chat:3` (empty: one voice
//! contact), `status` `active` or `retired`. A field may be quoted (`"Rossi, Maria"`, with `""`
//! for a quote); empty lines and lines starting with `#` are skipped. Every error names the file,
//! the line and the column.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use smista_core::roster::{channels_text, parse_channels, parse_skills, skills_text, Entitlement};
use smista_core::{Channel, Skill};

/// Whether operators not on the roster may log in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RosterMode {
    /// Operators not on the roster log in with what they state; rostered ones are bound.
    Open,
    /// Only rostered, active operators log in, bound to their entry.
    Required,
}

impl RosterMode {
    /// Its name in the configuration.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            RosterMode::Open => "open",
            RosterMode::Required => "required",
        }
    }
}

/// `[roster]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RosterSection {
    /// `open` or `required`; unset: `required` when `[auth]` configures credentials, else `open`.
    pub mode: Option<RosterMode>,
    /// A CSV roster file (see the module's documentation).
    pub file: Option<PathBuf>,
    /// How often each node re-reads the roster's changes from the ledger, ms (100..=60000): the
    /// longest a change made on another node sharing the ledger (a retirement above all) takes
    /// to reach this one.
    pub refresh_ms: u64,
}

impl Default for RosterSection {
    fn default() -> Self {
        RosterSection { mode: None, file: None, refresh_ms: 2_000 }
    }
}

impl RosterSection {
    /// The mode in force: the configured one, else `required` when credentials are configured.
    #[must_use]
    pub fn mode(&self, auth_configured: bool) -> RosterMode {
        self.mode.unwrap_or(if auth_configured { RosterMode::Required } else { RosterMode::Open })
    }
}

/// `[[operators]]`: one rostered operator, inline in the configuration.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorConfig {
    /// Staff id (as desks and credentials name it).
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Operator group (a `[[groups]]` name).
    pub group: String,
    /// Skills with their highest levels (1..=10).
    #[serde(default)]
    pub skills: BTreeMap<String, u8>,
    /// Channel capacities (empty: one voice contact).
    #[serde(default)]
    pub channels: BTreeMap<String, u8>,
    /// Retired: on the roster but may not log in.
    #[serde(default)]
    pub retired: bool,
}

/// One operator as the roster has them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RosterEntry {
    /// Staff id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Operator group.
    pub group: String,
    /// Skills, sorted by name.
    pub skills: Vec<Skill>,
    /// Channel capacities, in channel order (empty: one voice contact).
    pub channels: Vec<(Channel, u8)>,
    /// Retired: may not log in.
    pub retired: bool,
}

impl RosterEntry {
    /// What the entry grants at login.
    #[must_use]
    pub fn entitlement(&self) -> Entitlement {
        Entitlement { group: self.group.clone(), skills: self.skills.clone(), channels: self.channels.clone() }
    }

    /// The entry as audit records show it (TOML).
    #[must_use]
    pub fn describe(&self) -> String {
        #[derive(serde::Serialize)]
        struct Shown<'a> {
            name: &'a str,
            group: &'a str,
            skills: String,
            channels: String,
            retired: bool,
        }
        let shown = Shown {
            name: &self.name,
            group: &self.group,
            skills: skills_text(&self.skills),
            channels: channels_text(&self.channels),
            retired: self.retired,
        };
        toml::to_string(&shown).unwrap_or_default()
    }

    /// Checks what the text forms cannot: the id, the display name, a known group.
    /// `Err((field, problem))`.
    pub fn check(&self, groups: &[smista_core::config::GroupConfig]) -> Result<(), (&'static str, String)> {
        smista_core::validate_id("id", &self.id).map_err(|e| ("id", e.to_string()))?;
        // A desk's token and every report name the operator by it: no look-alikes differing
        // only by a space.
        if self.id.chars().any(char::is_whitespace) {
            return Err(("id", format!("`{}` contains whitespace", smista_core::error::clip(&self.id))));
        }
        check_name(&self.name).map_err(|p| ("name", p))?;
        if !groups.iter().any(|g| g.name == self.group) {
            return Err(("group", format!("no [[groups]] entry named `{}`", smista_core::error::clip(&self.group))));
        }
        Ok(())
    }
}

/// A display name: at most 128 bytes, no control or invisible characters.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.len() > 128 || name.chars().any(smista_core::error::is_hazard) {
        return Err("at most 128 bytes, no control or invisible characters".into());
    }
    Ok(())
}

impl OperatorConfig {
    /// The entry, checked (`Err((field, problem))`).
    pub fn entry(&self) -> Result<RosterEntry, (&'static str, String)> {
        let skills = self.skills.iter().map(|(k, v)| format!("{k}:{v}")).collect::<Vec<_>>().join(";");
        let channels = self.channels.iter().map(|(k, v)| format!("{k}:{v}")).collect::<Vec<_>>().join(";");
        Ok(RosterEntry {
            id: self.id.clone(),
            name: self.name.clone(),
            group: self.group.clone(),
            skills: parse_skills(&skills).map_err(|p| ("skills", p))?,
            channels: parse_channels(&channels).map_err(|p| ("channels", p))?,
            retired: self.retired,
        })
    }
}

/// The CSV file's header.
pub const CSV_HEADER: &str = "id,name,group,skills,channels,status";

/// A roster file error: where, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {problem}")]
pub struct CsvError {
    /// The file.
    pub file: String,
    /// Line number, from 1.
    pub line: usize,
    /// What is wrong (naming the column).
    pub problem: String,
}

/// The fields of one CSV line: comma-separated, a field optionally in double quotes (`""` a
/// quote inside). `Err` on an unterminated quote or text after a closing quote.
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("a quoted field is not closed".into()),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    out.push(field);
                    return Ok(out);
                }
                Some(',') => out.push(field),
                Some(_) => return Err("text after a closing quote".into()),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        out.push(field.trim().to_owned());
                        return Ok(out);
                    }
                    Some(',') => break,
                    Some('"') => return Err("a quote inside an unquoted field".into()),
                    Some(c) => field.push(c),
                }
            }
            out.push(field.trim().to_owned());
        }
    }
}

/// Parses a roster file's text (`file` names it in errors): strictly, every error with its line.
pub fn parse_csv(
    text: &str,
    file: &str,
    groups: &[smista_core::config::GroupConfig],
) -> Result<Vec<RosterEntry>, CsvError> {
    Ok(parse_csv_lines(text, file, groups)?.into_iter().map(|(_, e)| e).collect())
}

/// [`parse_csv`], each entry with its line number.
pub fn parse_csv_lines(
    text: &str,
    file: &str,
    groups: &[smista_core::config::GroupConfig],
) -> Result<Vec<(usize, RosterEntry)>, CsvError> {
    let err = |line: usize, problem: String| CsvError { file: file.to_owned(), line, problem };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim_end_matches('\r')));
    let header = loop {
        match lines.next() {
            None => return Err(err(1, format!("no header line: the first line must be `{CSV_HEADER}`"))),
            Some((_, l)) if l.trim().is_empty() || l.starts_with('#') => continue,
            Some((n, l)) => break (n, l),
        }
    };
    let names: Vec<String> =
        csv_fields(header.1).map_err(|p| err(header.0, p))?.into_iter().map(|f| f.to_ascii_lowercase()).collect();
    if names.join(",") != CSV_HEADER {
        return Err(err(header.0, format!("the header must be `{CSV_HEADER}`")));
    }
    let mut out: Vec<(usize, RosterEntry)> = Vec::new();
    for (n, line) in lines {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let f = csv_fields(line).map_err(|p| err(n, p))?;
        if f.len() != 6 {
            return Err(err(n, format!("{} fields, the header has 6 ({CSV_HEADER})", f.len())));
        }
        let col = |c: &str, p: String| err(n, format!("column `{c}`: {p}"));
        let retired = match f[5].as_str() {
            "active" | "" => false,
            "retired" => true,
            other => {
                return Err(col(
                    "status",
                    format!("`{}` is not `active` or `retired`", smista_core::error::clip(other)),
                ))
            }
        };
        let e = RosterEntry {
            id: f[0].clone(),
            name: f[1].clone(),
            group: f[2].clone(),
            skills: parse_skills(&f[3]).map_err(|p| col("skills", p))?,
            channels: parse_channels(&f[4]).map_err(|p| col("channels", p))?,
            retired,
        };
        e.check(groups).map_err(|(c, p)| col(c, p))?;
        if let Some((first, _)) = out.iter().find(|(_, x)| x.id == e.id) {
            return Err(col("id", format!("operator `{}` is already on line {first}", e.id)));
        }
        out.push((n, e));
    }
    Ok(out)
}

/// Reads and parses the roster file at `path`, each entry with its line number.
pub fn read_csv(
    path: &Path,
    groups: &[smista_core::config::GroupConfig],
) -> Result<Vec<(usize, RosterEntry)>, CsvError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| CsvError {
        file: name.clone(),
        line: 0,
        problem: format!("cannot read it: {e}"),
    })?;
    parse_csv_lines(&text, &name, groups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use smista_core::config::GroupConfig;

    fn groups() -> Vec<GroupConfig> {
        ["internal", "supplier-a"]
            .into_iter()
            .map(|n| GroupConfig { name: n.into(), supplier: None, budget: None })
            .collect()
    }

    #[test]
    fn a_roster_file_parses_with_quotes_comments_and_defaults() {
        let text = "\u{feff}# exported 2026-11-02\nid,name,group,skills,channels,status\r\n\
                    op-201,\"Rossi, Maria \"\"Mara\"\"\",supplier-a,pensions:7;naspi:5,voice:1;chat:3,active\n\
                    \n\
                    op-101,Bianchi,internal,pensions:9,,retired\n";
        let r = parse_csv(text, "r.csv", &groups()).expect("parses");
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].name, "Rossi, Maria \"Mara\"");
        assert_eq!(r[0].channels, vec![(Channel::Voice, 1), (Channel::Chat, 3)]);
        assert!(r[1].retired && r[1].channels.is_empty());
    }

    #[test]
    fn every_error_names_its_line_and_column() {
        let h = "id,name,group,skills,channels,status\n";
        let cases = [
            ("", 1, "header"),
            ("id,name,group\n", 1, "header"),
            (&*format!("{h}op-1,A,internal,pensions:7,voice:1\n"), 2, "5 fields"),
            (&*format!("{h}op-1,A,internal,pensions:11,,active\n"), 2, "column `skills`"),
            (&*format!("{h}op-1,A,internal,,fax:1,active\n"), 2, "column `channels`"),
            (&*format!("{h}op-1,A,nobody,,,active\n"), 2, "column `group`"),
            (&*format!("{h},A,internal,,,active\n"), 2, "column `id`"),
            (&*format!("{h}op-1,A,internal,,,gone\n"), 2, "column `status`"),
            (&*format!("{h}op-1,A,internal,,,\n\nop-1,B,internal,,,\n"), 4, "already on line 2"),
            (&*format!("{h}op-1,\"A,internal,,,\n"), 2, "not closed"),
        ];
        for (text, line, what) in cases {
            let e = parse_csv(text, "r.csv", &groups()).expect_err(text);
            assert_eq!(e.line, line, "{e}");
            assert!(e.to_string().contains(what) && e.to_string().starts_with(&format!("r.csv:{line}:")), "{e}");
        }
    }
}

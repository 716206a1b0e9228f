//! The filters `search`, `install`, `uninstall`, `hide`, `unhide` and `accept-eula` apply after
//! the search criteria (`--kb`, `--title`, … and their `--not-*` forms), each saying why it
//! leaves an update out.

use std::fmt;

use regex::{Regex, RegexBuilder};
use uuid::Uuid;
use wua::{Category, Update};

use crate::BadInput;
use crate::cli::{FilterArgs, Severity, Size};

/// Why a filter left an update out: the filter as given and what the update has instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The deciding filter, as written on the command line (`--kb 5000001`).
    pub filter: String,
    /// What the update has that the filter does not accept.
    pub reason: String,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "left out by {}: {}", self.filter, self.reason)
    }
}

/// The filters of a command line, ready to apply.
pub struct Filters {
    kb: Vec<String>,
    not_kb: Vec<String>,
    title: Vec<(String, Regex)>,
    not_title: Vec<(String, Regex)>,
    category: Vec<String>,
    not_category: Vec<String>,
    severity: Vec<Severity>,
    not_severity: Vec<Severity>,
    update_id: Vec<Uuid>,
    not_update_id: Vec<Uuid>,
    max_size: Option<Size>,
}

fn compile(flag: &str, patterns: &[String]) -> Result<Vec<(String, Regex)>, BadInput> {
    patterns
        .iter()
        .map(|p| {
            RegexBuilder::new(p)
                .case_insensitive(true)
                .build()
                .map(|re| (p.clone(), re))
                .map_err(|e| {
                    BadInput(format!(
                        "{flag} {p:?} is not a valid regular expression: {e}"
                    ))
                })
        })
        .collect()
}

/// `--flag a --flag b`, each value quoted when it has spaces.
fn label<T: fmt::Display>(flag: &str, values: &[T]) -> String {
    values
        .iter()
        .map(|v| {
            let v = v.to_string();
            if v.is_empty() || v.contains(char::is_whitespace) {
                format!("{flag} {v:?}")
            } else {
                format!("{flag} {v}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn in_category(update: &Update, wanted: &str) -> bool {
    let id = Uuid::parse_str(wanted.trim()).ok();
    update
        .categories()
        .iter()
        .any(|c| Some(c.id) == id || c.name.to_lowercase() == wanted.trim().to_lowercase())
}

fn kbs(update: &Update) -> String {
    if update.kb_article_ids().is_empty() {
        "it has no KB article".to_string()
    } else {
        format!("its KB articles are {}", update.kb_article_ids().join(", "))
    }
}

fn categories(update: &Update) -> String {
    if update.categories().is_empty() {
        "it has no category".to_string()
    } else {
        let names: Vec<&str> = update
            .categories()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        format!("its categories are {}", names.join(", "))
    }
}

fn severity(update: &Update) -> String {
    match update.msrc_severity() {
        Some(s) if !s.trim().is_empty() => format!("its severity is {s}"),
        _ => "it has no severity rating (Unspecified)".to_string(),
    }
}

/// A byte count for people: `980B`, `1.2KB`, `12KB`, `3.4MB` (binary multiples).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KB", "MB", "GB", "TB"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value < 10.0 {
        format!("{value:.1}{}", UNITS[unit])
    } else {
        format!("{value:.0}{}", UNITS[unit])
    }
}

impl Filters {
    /// Checks and compiles the filters: an invalid regular expression is bad input (exit 64),
    /// with the regex crate's message, which points at the error.
    pub fn compile(args: &FilterArgs) -> Result<Filters, BadInput> {
        Ok(Filters {
            kb: args.kb.clone(),
            not_kb: args.not_kb.clone(),
            title: compile("--title", &args.title)?,
            not_title: compile("--not-title", &args.not_title)?,
            category: args.category.clone(),
            not_category: args.not_category.clone(),
            severity: args.severity.clone(),
            not_severity: args.not_severity.clone(),
            update_id: args.update_id.clone(),
            not_update_id: args.not_update_id.clone(),
            max_size: args.max_size.clone(),
        })
    }

    /// True when no filter was given.
    pub fn args_empty(args: &FilterArgs) -> bool {
        args.kb.is_empty()
            && args.not_kb.is_empty()
            && args.title.is_empty()
            && args.not_title.is_empty()
            && args.category.is_empty()
            && args.not_category.is_empty()
            && args.severity.is_empty()
            && args.not_severity.is_empty()
            && args.update_id.is_empty()
            && args.not_update_id.is_empty()
            && args.max_size.is_none()
    }

    /// The filters as given on the command line, one entry per flag, in the order they are
    /// applied.
    pub fn describe(&self) -> Vec<String> {
        let titles = |t: &[(String, Regex)]| t.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
        let names = |s: &[Severity]| s.iter().map(|s| s.name()).collect::<Vec<_>>();
        [
            label("--update-id", &self.update_id),
            label("--not-update-id", &self.not_update_id),
            label("--kb", &self.kb),
            label("--not-kb", &self.not_kb),
            label("--title", &titles(&self.title)),
            label("--not-title", &titles(&self.not_title)),
            label("--category", &self.category),
            label("--not-category", &self.not_category),
            label("--severity", &names(&self.severity)),
            label("--not-severity", &names(&self.not_severity)),
            self.max_size
                .as_ref()
                .map(|s| format!("--max-size {}", s.text))
                .unwrap_or_default(),
        ]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect()
    }

    /// Keeps the update, or says which filter leaves it out and why. Filters are tried in the
    /// order of [`Self::describe`]; the first that rejects decides.
    pub fn check(&self, u: &Update) -> Result<(), Rejection> {
        let reject = |filter: String, reason: String| Err(Rejection { filter, reason });
        let id = u.identity().update_id;
        if !self.update_id.is_empty() && !self.update_id.contains(&id) {
            return reject(
                label("--update-id", &self.update_id),
                format!("its id is {id}"),
            );
        }
        if let Some(not) = self.not_update_id.iter().find(|n| **n == id) {
            return reject(format!("--not-update-id {not}"), "it is that update".into());
        }
        if !self.kb.is_empty() && !u.kb_article_ids().iter().any(|k| self.kb.contains(k)) {
            return reject(label("--kb", &self.kb), kbs(u));
        }
        if let Some(not) = self.not_kb.iter().find(|n| u.kb_article_ids().contains(n)) {
            return reject(
                format!("--not-kb {not}"),
                format!("it has KB article {not}"),
            );
        }
        if !self.title.is_empty() && !self.title.iter().any(|(_, re)| re.is_match(u.title())) {
            let patterns: Vec<String> = self.title.iter().map(|(p, _)| p.clone()).collect();
            return reject(
                label("--title", &patterns),
                format!("its title {:?} does not match", u.title()),
            );
        }
        if let Some((p, _)) = self.not_title.iter().find(|(_, re)| re.is_match(u.title())) {
            return reject(
                label("--not-title", std::slice::from_ref(p)),
                format!("its title {:?} matches", u.title()),
            );
        }
        if !self.category.is_empty() && !self.category.iter().any(|c| in_category(u, c)) {
            return reject(label("--category", &self.category), categories(u));
        }
        if let Some(not) = self.not_category.iter().find(|c| in_category(u, c)) {
            return reject(
                label("--not-category", std::slice::from_ref(not)),
                format!("it is in category {not}"),
            );
        }
        let rating = u.msrc_severity();
        if !self.severity.is_empty() && !self.severity.iter().any(|s| s.matches(rating)) {
            let names: Vec<&str> = self.severity.iter().map(|s| s.name()).collect();
            return reject(label("--severity", &names), severity(u));
        }
        if let Some(not) = self.not_severity.iter().find(|s| s.matches(rating)) {
            return reject(format!("--not-severity {}", not.name()), severity(u));
        }
        if let Some(max) = &self.max_size
            && u.max_download_size() > max.bytes
        {
            return reject(
                format!("--max-size {}", max.text),
                format!(
                    "its download size is {} ({} bytes, more than {})",
                    human_size(u.max_download_size()),
                    u.max_download_size(),
                    max.bytes
                ),
            );
        }
        Ok(())
    }

    /// Category values that name no category of `known` (a typo, most likely): the notes to
    /// print.
    pub fn unknown_categories(&self, known: &[Category]) -> Vec<String> {
        self.category
            .iter()
            .chain(&self.not_category)
            .filter(|wanted| {
                let id = Uuid::parse_str(wanted.trim()).ok();
                !known.iter().any(|c| {
                    Some(c.id) == id || c.name.to_lowercase() == wanted.trim().to_lowercase()
                })
            })
            .map(|wanted| {
                let mut names: Vec<&str> = known.iter().map(|c| c.name.as_str()).collect();
                names.dedup();
                format!(
                    "no catalog update is in a category named {wanted:?} (the catalog's categories: {})",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::parse_size;

    #[test]
    fn sizes_take_binary_suffixes() {
        let b = |s: &str| parse_size(s).map(|s| s.bytes);
        assert_eq!(b("500"), Ok(500));
        assert_eq!(b("10K"), Ok(10 * 1024));
        assert_eq!(b("5MB"), Ok(5 << 20));
        assert_eq!(b("1g"), Ok(1 << 30));
        assert_eq!(b("2GiB"), Ok(2 << 30));
        assert_eq!(b("1.5K"), Ok(1536));
        assert_eq!(b("0"), Ok(0));
        assert!(b("10X").is_err());
        assert!(b("").is_err());
        assert!(b("K").is_err());
        assert!(b("99999999999T").is_err());
    }

    #[test]
    fn human_sizes_are_short() {
        assert_eq!(human_size(980), "980B");
        assert_eq!(human_size(1234), "1.2KB");
        assert_eq!(human_size(12 * 1024), "12KB");
        assert_eq!(human_size(3 << 20), "3.0MB");
    }
}

//! Applicability (detection) rules: whether an update is installed on the machine, and whether
//! it applies to it.
//!
//! An update in the catalog may carry rules, written in JSON, that are evaluated against the
//! agent's target root (a directory; `/` on a real system). A [`Rule`] is a tree: `all`, `any`
//! and `not` combine leaves that look at files, at `os-release`, at the CPU architecture, at the
//! dpkg database, or at another update:
//!
//! ```
//! use wua::rules::{Machine, Rule};
//!
//! let root = tempfile::tempdir()?;
//! std::fs::create_dir_all(root.path().join("etc"))?;
//! std::fs::write(root.path().join("etc/os-release"), "ID=debian\nVERSION_ID=\"12\"\n")?;
//!
//! let rule: Rule = serde_json::from_str(
//!     r#"{"all": [{"os_release": {"field": "VERSION_ID", "op": ">=", "value": "12"}},
//!                 {"not": {"file_exists": "etc/demo.conf"}}]}"#,
//! )?;
//! wua::rules::validate(&rule).map_err(std::io::Error::other)?;
//! assert_eq!(
//!     rule.to_string(),
//!     "all(os_release VERSION_ID >= 12, not(file_exists etc/demo.conf))"
//! );
//!
//! let machine = Machine::new(root.path());
//! let verdict = rule.evaluate(&machine, &mut |_| false)?;
//! assert!(verdict.holds);
//! assert_eq!(verdict.reason, "all 2 rules hold");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The leaves (see [`Rule`] for each one's JSON):
//!
//! * Paths are relative to the target root; a leading `/` is allowed and means the same. Empty
//!   paths, paths naming the root itself and paths with `..` components are refused by
//!   [`validate`] (and never hold if evaluated anyway), so a rule cannot look outside the root
//!   by its own path.
//! * Symbolic links inside the root are followed as the operating system follows them: an
//!   absolute link target is resolved against the real `/`, not against the target root, just
//!   as the installed software would see it at run time.
//! * A missing file is not an error: the leaf does not hold, with the reason `not found`. A path
//!   whose parent is not a directory (`ENOTDIR`) counts as missing. A directory where a file is
//!   expected does not hold (`is a directory`), nor does a FIFO, socket or device for the
//!   leaves that read a file (`is not a regular file`; they are never read, so a FIFO cannot
//!   block a search). `file_exists` holds for any existing entry but a directory.
//! * Any other failure to look at or read a file (permission denied, a symbolic-link loop, an
//!   I/O error), and an `os-release` or dpkg status file that exists but cannot be read, is an
//!   [`Error::Io`](crate::Error::Io): the machine's state is unknown, so no answer is given.
//! * Versions are ordered as Debian orders them ([`compare_versions`]; `1:1.0 > 2.0`,
//!   `1.0~rc1 < 1.0`). A version found on the machine that cannot be parsed makes the leaf not
//!   hold, with a reason saying so.
//!
//! Evaluation never writes anything. A [`Machine`] caches what it reads, so one search reads
//! `os-release` and the dpkg status file at most once, and hashes, and reads the text of, each
//! file at most once: use a new [`Machine`] for each search.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::error::Error;

/// The deepest a rule tree may nest: a lone leaf is depth 1, `not(leaf)` depth 2, and so on.
pub const MAX_DEPTH: usize = 32;

/// How much of a file `file_version` searches: its first MiB.
pub const MAX_TEXT_BYTES: u64 = 1 << 20;

/// An applicability rule.
///
/// JSON: externally tagged, snake_case names, unknown fields refused. Examples:
///
/// * `{"all": [r1, r2]}`, `{"any": [r1, r2]}`, `{"not": r}`
/// * `{"file_exists": "etc/demo.conf"}`
/// * `{"file_sha256": {"path": "usr/bin/tool", "sha256": "<64 lower-case hex>"}}`
/// * `{"file_version": {"path": "opt/app/VERSION", "pattern": "^version=(\\S+)", "op": ">=",
///   "version": "1.2"}}`
/// * `{"os_release": {"field": "VERSION_ID", "op": ">=", "value": "12"}}`
/// * `{"arch": ["x86_64", "aarch64"]}`
/// * `{"package": {"name": "libc6", "op": ">=", "version": "2.36-9"}}`
/// * `{"update_installed": "<uuid>"}`
///
/// `Display` prints a compact one-line form, used in [`Verdict`] reasons:
/// `all(arch [x86_64], not(file_exists etc/x))`, `package libc6 >= 2.36`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Rule {
    /// Every rule holds (short-circuits at the first that does not).
    All(Vec<Rule>),
    /// At least one rule holds (short-circuits at the first that does).
    Any(Vec<Rule>),
    /// The rule does not hold.
    Not(Box<Rule>),
    /// The path exists (following symbolic links) and is not a directory.
    FileExists(String),
    /// The path is a regular file whose SHA-256 digest is `sha256`.
    FileSha256 {
        /// The file, relative to the target root.
        path: String,
        /// Its expected SHA-256 digest: 64 lower-case hex digits.
        sha256: String,
    },
    /// A version found in a regular file's text (its first [`MAX_TEXT_BYTES`], UTF-8 with
    /// invalid sequences replaced).
    ///
    /// `pattern` is searched in the text, multi-line mode on (`^` and `$` match at line
    /// boundaries); its first match gives the version: capture group 1 if the pattern has
    /// one, else the whole match, with surrounding whitespace trimmed. Without `op` and
    /// `version` the rule holds when the pattern matches; with them (always together), when the
    /// found version compares so with `version` in Debian ordering.
    FileVersion {
        /// The file, relative to the target root.
        path: String,
        /// The regular expression finding the version.
        pattern: Pattern,
        /// How the found version must compare with `version`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        op: Option<VersionOp>,
        /// The version compared with.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
    },
    /// A field of `os-release(5)`: `<root>/etc/os-release`, or `<root>/usr/lib/os-release` when
    /// that does not exist.
    ///
    /// `=` and `!=` compare strings exactly; the ordering operators compare Debian versions. A
    /// missing field or file: the rule does not hold.
    OsRelease {
        /// The field, such as `ID` or `VERSION_ID`.
        field: String,
        /// How the field's value must compare with `value`.
        op: VersionOp,
        /// The value compared with.
        value: String,
    },
    /// The machine's CPU architecture is one of these: kernel/Rust names (`x86_64`, `aarch64`,
    /// `x86`, `arm`, `riscv64`, `powerpc64`, `s390x`, …) or their Debian aliases (`amd64`,
    /// `arm64`, `i386`, `armhf`, `ppc64el`, …); see [`canonical_arch`].
    Arch(Vec<String>),
    /// A Debian package is installed: `<root>/var/lib/dpkg/status` has a stanza for it whose
    /// `Status` is `install ok installed` (or `hold ok installed`: held, but installed).
    ///
    /// `name` may carry an `:arch` qualifier (`libc6:amd64`), which the stanza's
    /// `Architecture` must then equal (`all` matches any qualifier). With `op` and `version`
    /// (always together), some installed instance's version must compare so with `version` in
    /// dpkg ordering. A missing status file means no package is installed.
    Package {
        /// The package name, optionally `name:arch`.
        name: String,
        /// How the installed version must compare with `version`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        op: Option<VersionOp>,
        /// The version compared with.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
    },
    /// Another update is installed (prerequisites); the caller answers.
    UpdateInstalled(Uuid),
}

/// A comparison operator: `=`, `!=`, `<`, `<=`, `>`, `>=` in JSON and `Display`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VersionOp {
    /// `=`
    #[serde(rename = "=")]
    Eq,
    /// `!=`
    #[serde(rename = "!=")]
    Ne,
    /// `<`
    #[serde(rename = "<")]
    Lt,
    /// `<=`
    #[serde(rename = "<=")]
    Le,
    /// `>`
    #[serde(rename = ">")]
    Gt,
    /// `>=`
    #[serde(rename = ">=")]
    Ge,
}

impl VersionOp {
    /// The operator as written in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            VersionOp::Eq => "=",
            VersionOp::Ne => "!=",
            VersionOp::Lt => "<",
            VersionOp::Le => "<=",
            VersionOp::Gt => ">",
            VersionOp::Ge => ">=",
        }
    }

    /// Whether `found op wanted` holds, given `found.cmp(wanted)`.
    pub fn holds(self, ordering: Ordering) -> bool {
        match self {
            VersionOp::Eq => ordering == Ordering::Equal,
            VersionOp::Ne => ordering != Ordering::Equal,
            VersionOp::Lt => ordering == Ordering::Less,
            VersionOp::Le => ordering != Ordering::Greater,
            VersionOp::Gt => ordering == Ordering::Greater,
            VersionOp::Ge => ordering != Ordering::Less,
        }
    }
}

impl fmt::Display for VersionOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A regular expression (regex crate syntax, multi-line mode on), compiled once when the rule is
/// deserialized or built.
///
/// Serializes as its source string; `PartialEq` and `Debug` go by the source string. Cloning is
/// cheap (the compiled program is shared).
#[derive(Clone)]
pub struct Pattern(regex::Regex);

impl Pattern {
    /// Compiles `source`; the error names the pattern and says what is wrong with it.
    pub fn new(source: &str) -> Result<Pattern, String> {
        // Catalogs repeat a few patterns across thousands of updates; compiling each once keeps
        // loading fast. Bounded, so a hostile catalog cannot grow it without limit.
        const CACHE_LIMIT: usize = 4096;
        static CACHE: Mutex<Option<HashMap<String, regex::Regex>>> = Mutex::new(None);
        if let Some(compiled) = lock(&CACHE).as_ref().and_then(|c| c.get(source)) {
            return Ok(Pattern(compiled.clone()));
        }
        let compiled = regex::RegexBuilder::new(source)
            .multi_line(true)
            .build()
            .map_err(|e| {
                format!(
                    "pattern {source:?} is not a valid regular expression: {e}; write it in the \
                     regex crate's syntax, such as \"^version=(\\\\S+)\""
                )
            })?;
        let mut cache = lock(&CACHE);
        let cache = cache.get_or_insert_with(HashMap::new);
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(source.to_owned(), compiled.clone());
        Ok(Pattern(compiled))
    }

    /// The source string.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The compiled expression.
    pub fn regex(&self) -> &regex::Regex {
        &self.0
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Pattern {}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Pattern").field(&self.as_str()).finish()
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let source = String::deserialize(deserializer)?;
        Pattern::new(&source).map_err(serde::de::Error::custom)
    }
}

/// Architecture names [`Rule::Arch`] and [`Machine::with_arch`] accept, each with its
/// canonical (kernel/Rust) name.
const ARCHES: &[(&str, &str)] = &[
    ("x86_64", "x86_64"),
    ("amd64", "x86_64"),
    ("x86", "x86"),
    ("i386", "x86"),
    ("i486", "x86"),
    ("i586", "x86"),
    ("i686", "x86"),
    ("aarch64", "aarch64"),
    ("arm64", "aarch64"),
    ("arm", "arm"),
    ("armhf", "arm"),
    ("armel", "arm"),
    ("armv6l", "arm"),
    ("armv7l", "arm"),
    ("riscv64", "riscv64"),
    ("riscv32", "riscv32"),
    ("powerpc64", "powerpc64"),
    ("ppc64el", "powerpc64"),
    ("ppc64le", "powerpc64"),
    ("ppc64", "powerpc64"),
    ("powerpc", "powerpc"),
    ("ppc", "powerpc"),
    ("s390x", "s390x"),
    ("mips", "mips"),
    ("mipsel", "mips"),
    ("mips64", "mips64"),
    ("mips64el", "mips64"),
    ("loongarch64", "loongarch64"),
    ("loong64", "loongarch64"),
    ("sparc64", "sparc64"),
    ("m68k", "m68k"),
];

/// The canonical (kernel/Rust, `std::env::consts::ARCH`) name of an architecture name or Debian
/// alias (`amd64` → `x86_64`, `arm64` → `aarch64`, `i386`/`i686` → `x86`, `armhf`/`armel` →
/// `arm`, `ppc64el` → `powerpc64`, …); `None` for a name it does not know. Names are
/// case-sensitive (lower case).
pub fn canonical_arch(name: &str) -> Option<&'static str> {
    ARCHES
        .iter()
        .find(|(alias, _)| *alias == name)
        .map(|(_, canonical)| *canonical)
}

/// Debian version ordering of two version strings (dpkg's, via the `debversion` crate); the
/// error names the string that is not a Debian version.
pub fn compare_versions(a: &str, b: &str) -> Result<Ordering, String> {
    Ok(parse_version(a)?.cmp(&parse_version(b)?))
}

fn parse_version(s: &str) -> Result<debversion::Version, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not a Debian version"))
}

/// What `[epoch:]upstream[-revision]` looks like, for validation messages.
const VERSION_ADVICE: &str =
    "write a Debian version, [epoch:]upstream[-revision], such as 2.36-9, 1:1.0 or 1.0~rc1";

/// Checks a rule before use: the error says what is wrong, where, and what to write instead.
///
/// Refused: nesting deeper than [`MAX_DEPTH`]; empty `all`, `any` and `arch` lists; empty
/// paths, paths naming the root itself, paths with `..` components; a `sha256` that is not 64
/// lower-case hex digits; `op` without `version` or `version` without `op`; versions Debian
/// ordering cannot parse (`file_version` and `package` versions, and `os_release` values
/// compared with an ordering operator); unknown architectures; empty package names, empty
/// `:arch` qualifiers and field names that are not `os-release(5)` names.
pub fn validate(rule: &Rule) -> Result<(), String> {
    check(rule, 1)
}

fn check(rule: &Rule, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!(
            "the rule nests all/any/not more than {MAX_DEPTH} levels deep; flatten it (all(all(a, \
             b), c) is all(a, b, c)) or split it"
        ));
    }
    let at = |what: String| format!("{rule}: {what}");
    match rule {
        Rule::All(rules) | Rule::Any(rules) => {
            if rules.is_empty() {
                let kind = if matches!(rule, Rule::All(_)) {
                    "all"
                } else {
                    "any"
                };
                return Err(format!(
                    "an empty `{kind}` list; give it at least one rule, or remove it"
                ));
            }
            rules.iter().try_for_each(|r| check(r, depth + 1))
        }
        Rule::Not(inner) => check(inner, depth + 1),
        Rule::FileExists(path) => rel_path(path).map(drop).map_err(at),
        Rule::FileSha256 { path, sha256 } => {
            rel_path(path).map_err(at)?;
            if sha256.len() != 64
                || !sha256
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            {
                return Err(at(format!(
                    "sha256 {sha256:?} is not 64 lower-case hex digits; write the file's SHA-256 \
                     digest as `sha256sum` prints it"
                )));
            }
            Ok(())
        }
        Rule::FileVersion {
            path, op, version, ..
        } => {
            rel_path(path).map_err(at)?;
            check_op_version(*op, version.as_deref()).map_err(at)
        }
        Rule::OsRelease { field, op, value } => {
            if field.is_empty()
                || field.starts_with(|c: char| c.is_ascii_digit())
                || !field
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return Err(at(format!(
                    "field {field:?} is not an os-release(5) field name; write one such as ID, \
                     VERSION_ID or VERSION_CODENAME"
                )));
            }
            if !matches!(op, VersionOp::Eq | VersionOp::Ne) {
                parse_version(value).map_err(|e| {
                    at(format!(
                        "{e}, and `{op}` compares versions; {VERSION_ADVICE}, or use = or !="
                    ))
                })?;
            }
            Ok(())
        }
        Rule::Arch(names) => {
            if names.is_empty() {
                return Err(at(
                    "an empty architecture list; name at least one, such as \
                               [\"x86_64\"]"
                        .to_owned(),
                ));
            }
            for name in names {
                if canonical_arch(name).is_none() {
                    let known: Vec<&str> = ARCHES.iter().map(|(alias, _)| *alias).collect();
                    return Err(at(format!(
                        "unknown architecture {name:?}; write one of {}",
                        known.join(", ")
                    )));
                }
            }
            Ok(())
        }
        Rule::Package { name, op, version } => {
            let (package, qualifier) = split_package(name);
            if package.trim().is_empty() {
                return Err(at(format!(
                    "package name {name:?} is empty; write a Debian package name, such as libc6 \
                     or libc6:amd64"
                )));
            }
            if package.contains(char::is_whitespace) {
                return Err(at(format!(
                    "package name {name:?} contains white space; write one Debian package name"
                )));
            }
            if qualifier.is_some_and(|q| q.is_empty() || q.contains(char::is_whitespace)) {
                return Err(at(format!(
                    "the architecture qualifier of {name:?} is empty; write name:arch with a \
                     Debian architecture, such as libc6:amd64, or just the name"
                )));
            }
            check_op_version(*op, version.as_deref()).map_err(at)
        }
        Rule::UpdateInstalled(_) => Ok(()),
    }
}

fn check_op_version(op: Option<VersionOp>, version: Option<&str>) -> Result<(), String> {
    match (op, version) {
        (None, None) => Ok(()),
        (Some(op), None) => Err(format!(
            "`op` {op} without `version`; give both, such as \"op\": \">=\", \"version\": \"1.2\", \
             or neither"
        )),
        (None, Some(v)) => Err(format!(
            "`version` {v:?} without `op`; give both, such as \"op\": \">=\", \"version\": \
             \"{v}\", or neither"
        )),
        (Some(_), Some(v)) => parse_version(v)
            .map(drop)
            .map_err(|e| format!("{e}; {VERSION_ADVICE}")),
    }
}

/// A rule path made relative to the target root: the leading `/`s stripped; refused when empty,
/// naming the root itself, or with a `..` component (or anything else that is not a plain name).
fn rel_path(path: &str) -> Result<&Path, String> {
    const ADVICE: &str = concat!(
        "write a path inside the target root, relative to it, such as etc/demo.conf ",
        "(a leading / means the same)"
    );
    let stripped = path.trim_start_matches('/');
    if stripped.is_empty() {
        return Err(format!("the path {path:?} is empty; {ADVICE}"));
    }
    if stripped.contains('\0') {
        return Err(format!(
            "the path {path:?} contains a NUL character; {ADVICE}"
        ));
    }
    let rel = Path::new(stripped);
    let mut names = 0;
    for component in rel.components() {
        match component {
            Component::Normal(_) => names += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!("the path {path:?} has a `..` component; {ADVICE}"));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("the path {path:?} is not relative; {ADVICE}"));
            }
        }
    }
    if names == 0 {
        return Err(format!(
            "the path {path:?} names the target root itself; {ADVICE}"
        ));
    }
    Ok(rel)
}

/// Every `update_installed` id in the rule, each once, in order of first appearance (for the
/// catalog's prerequisite cycle check).
pub fn referenced_updates(rule: &Rule) -> Vec<Uuid> {
    fn walk(rule: &Rule, out: &mut Vec<Uuid>) {
        match rule {
            Rule::All(rules) | Rule::Any(rules) => rules.iter().for_each(|r| walk(r, out)),
            Rule::Not(inner) => walk(inner, out),
            Rule::UpdateInstalled(id) if !out.contains(id) => out.push(*id),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(rule, &mut out);
    out
}

fn split_package(name: &str) -> (&str, Option<&str>) {
    match name.split_once(':') {
        Some((package, qualifier)) => (package, Some(qualifier)),
        None => (name, None),
    }
}

/// A string as one word in `Display` output: as is when plain, debug-quoted when empty or
/// holding white space, quotes or control characters.
struct Word<'a>(&'a str);

impl fmt::Display for Word<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = !self.0.is_empty()
            && !self
                .0
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == ',' || c == ')');
        if plain {
            f.write_str(self.0)
        } else {
            write!(f, "{:?}", self.0)
        }
    }
}

fn op_version(
    f: &mut fmt::Formatter<'_>,
    op: Option<VersionOp>,
    version: Option<&str>,
) -> fmt::Result {
    if let Some(op) = op {
        write!(f, " {op}")?;
    }
    if let Some(version) = version {
        write!(f, " {}", Word(version))?;
    }
    Ok(())
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::All(rules) | Rule::Any(rules) => {
                f.write_str(if matches!(self, Rule::All(_)) {
                    "all("
                } else {
                    "any("
                })?;
                for (i, rule) in rules.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{rule}")?;
                }
                f.write_str(")")
            }
            Rule::Not(inner) => write!(f, "not({inner})"),
            Rule::FileExists(path) => write!(f, "file_exists {}", Word(path)),
            Rule::FileSha256 { path, sha256 } => {
                write!(f, "file_sha256 {} ", Word(path))?;
                if sha256.chars().count() > 12 {
                    let short: String = sha256.chars().take(12).collect();
                    write!(f, "{}…", Word(&short))
                } else {
                    write!(f, "{}", Word(sha256))
                }
            }
            Rule::FileVersion {
                path,
                pattern,
                op,
                version,
            } => {
                write!(f, "file_version {} /", Word(path))?;
                for c in pattern.as_str().chars() {
                    if c.is_control() {
                        write!(f, "{}", c.escape_default())?;
                    } else {
                        write!(f, "{c}")?;
                    }
                }
                f.write_str("/")?;
                op_version(f, *op, version.as_deref())
            }
            Rule::OsRelease { field, op, value } => {
                write!(f, "os_release {} {op} {}", Word(field), Word(value))
            }
            Rule::Arch(names) => {
                f.write_str("arch [")?;
                for (i, name) in names.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}", Word(name))?;
                }
                f.write_str("]")
            }
            Rule::Package { name, op, version } => {
                write!(f, "package {}", Word(name))?;
                op_version(f, *op, version.as_deref())
            }
            Rule::UpdateInstalled(id) => write!(f, "update_installed {id}"),
        }
    }
}

/// The outcome of evaluating a rule, with the reason.
///
/// For a leaf, the rule and what was found: `file_exists etc/demo.conf: not found`,
/// `package libc6 >= 2.36: installed 2.31-13`, `arch [aarch64]: this machine is x86_64`,
/// `os_release VERSION_ID >= 12: is 11`. For `all`, `any` and `not`, the deciding child's
/// reason: an `all` that fails gives its first failing child's reason, one that holds
/// `all N rules hold`; an `any` that holds gives its first holding child's reason, one that fails
/// `none of N holds: <first child's reason>`; `not` gives `not (<child's reason>)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the rule holds.
    pub holds: bool,
    /// Why.
    pub reason: String,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = if self.holds { "holds" } else { "does not hold" };
        write!(f, "{word}: {}", self.reason)
    }
}

/// Why a file a leaf looks for is not there to be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Absent {
    /// Not found (or a parent is not a directory).
    Missing,
    /// A directory.
    Directory,
    /// A FIFO, socket or device.
    Special,
}

impl fmt::Display for Absent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Absent::Missing => "not found",
            Absent::Directory => "is a directory",
            Absent::Special => "is not a regular file",
        })
    }
}

/// Errors that mean "not there": not found, or a parent is not a directory.
fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// Opens `path` for reading if it is a regular file, without blocking on a FIFO.
fn open_regular(path: &Path) -> crate::Result<Result<File, Absent>> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = match options.open(path) {
        Ok(file) => file,
        Err(e) if is_absent(&e) => return Ok(Err(Absent::Missing)),
        Err(e) => return Err(Error::io("cannot read", path, e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| Error::io("cannot read", path, e))?;
    Ok(if meta.is_dir() {
        Err(Absent::Directory)
    } else if !meta.is_file() {
        Err(Absent::Special)
    } else {
        Ok(file)
    })
}

/// Reads a whole machine file (os-release, dpkg status); `None` if it does not exist, an error
/// if it is not a regular file or cannot be read.
fn read_machine_file(path: &Path) -> crate::Result<Option<String>> {
    let mut file = match open_regular(path)? {
        Ok(file) => file,
        Err(Absent::Missing) => return Ok(None),
        Err(other) => {
            return Err(Error::io(
                "cannot read",
                path,
                io::Error::new(io::ErrorKind::InvalidInput, other.to_string()),
            ));
        }
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| Error::io("cannot read", path, e))?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// The parsed `os-release` file.
#[derive(Debug)]
struct OsRelease {
    /// Which file was read (relative to the root), `None` if neither exists.
    source: Option<&'static str>,
    fields: HashMap<String, String>,
}

const OS_RELEASE_FILES: [&str; 2] = ["etc/os-release", "usr/lib/os-release"];

fn load_os_release(root: &Path) -> crate::Result<OsRelease> {
    for rel in OS_RELEASE_FILES {
        if let Some(text) = read_machine_file(&root.join(rel))? {
            return Ok(OsRelease {
                source: Some(rel),
                fields: parse_os_release(&text),
            });
        }
    }
    Ok(OsRelease {
        source: None,
        fields: HashMap::new(),
    })
}

/// Parses `os-release(5)`: `KEY=value` lines, blank lines and `#` comments; values may be
/// double-quoted (backslash escapes `\"`, `\\`, `` \` ``, `\$`), single-quoted (no escapes) or
/// bare (backslash escapes any character). Malformed lines are skipped; a later assignment
/// wins.
fn parse_os_release(text: &str) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        let key_ok = !key.is_empty()
            && !key.starts_with(|c: char| c.is_ascii_digit())
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !key_ok {
            continue;
        }
        if let Some(value) = shell_value(raw) {
            fields.insert(key.to_owned(), value);
        }
    }
    fields
}

/// One shell word, as os-release(5) quotes values; `None` when malformed (an unterminated quote
/// or a second word other than a comment).
fn shell_value(raw: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => match chars.next()? {
                        c @ ('"' | '\\' | '$' | '`') => out.push(c),
                        c => {
                            out.push('\\');
                            out.push(c);
                        }
                    },
                    c => out.push(c),
                }
            },
            '\'' => loop {
                match chars.next()? {
                    '\'' => break,
                    c => out.push(c),
                }
            },
            '\\' => {
                if let Some(c) = chars.next() {
                    out.push(c);
                }
            }
            c if c.is_whitespace() => {
                let rest = chars.as_str().trim_start();
                return (rest.is_empty() || rest.starts_with('#')).then_some(out);
            }
            c => out.push(c),
        }
    }
    Some(out)
}

/// One package stanza of the dpkg status file.
#[derive(Clone, Debug)]
struct DpkgEntry {
    architecture: Option<String>,
    version: Option<String>,
    status: String,
}

impl DpkgEntry {
    /// `Status: <want> ok installed`: installed (wanted installed or held).
    fn installed(&self) -> bool {
        let words: Vec<&str> = self.status.split_whitespace().collect();
        matches!(words.as_slice(), [_, "ok", "installed"])
    }

    fn matches_qualifier(&self, qualifier: Option<&str>) -> bool {
        match qualifier {
            None => true,
            Some(q) => matches!(self.architecture.as_deref(), Some(a) if a == q || a == "all"),
        }
    }

    fn version(&self) -> &str {
        self.version.as_deref().unwrap_or("")
    }
}

/// The parsed dpkg status file.
#[derive(Debug)]
struct DpkgStatus {
    /// Whether the file exists.
    present: bool,
    packages: HashMap<String, Vec<DpkgEntry>>,
}

const DPKG_STATUS: &str = "var/lib/dpkg/status";

fn load_dpkg_status(root: &Path) -> crate::Result<DpkgStatus> {
    Ok(match read_machine_file(&root.join(DPKG_STATUS))? {
        Some(text) => DpkgStatus {
            present: true,
            packages: parse_dpkg_status(&text),
        },
        None => DpkgStatus {
            present: false,
            packages: HashMap::new(),
        },
    })
}

/// Parses the dpkg status file's deb822 stanzas (blank-line separated; `Key: value` fields,
/// continuation lines starting with a space or tab). Only Package, Status, Version and
/// Architecture are kept. A stanza with a line that is not a field, a repeated field, or no
/// Package or Status is skipped.
fn parse_dpkg_status(text: &str) -> HashMap<String, Vec<DpkgEntry>> {
    #[derive(Default)]
    struct Stanza {
        package: Option<String>,
        status: Option<String>,
        version: Option<String>,
        architecture: Option<String>,
        malformed: bool,
        started: bool,
    }

    fn flush(stanza: &mut Stanza, out: &mut HashMap<String, Vec<DpkgEntry>>) {
        let done = std::mem::take(stanza);
        if done.malformed {
            return;
        }
        if let (Some(package), Some(status)) = (done.package, done.status) {
            if package.is_empty() {
                return;
            }
            out.entry(package).or_default().push(DpkgEntry {
                architecture: done.architecture,
                version: done.version,
                status,
            });
        }
    }

    let mut out = HashMap::new();
    let mut stanza = Stanza::default();
    for line in text.lines() {
        if line.trim().is_empty() {
            flush(&mut stanza, &mut out);
            continue;
        }
        if line.starts_with([' ', '\t']) {
            // A continuation line: a field we ignore, or garbage before any field.
            if !stanza.started {
                stanza.malformed = true;
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        stanza.started = true;
        let Some((key, value)) = line.split_once(':') else {
            stanza.malformed = true;
            continue;
        };
        let slot = match key.to_ascii_lowercase().as_str() {
            "package" => &mut stanza.package,
            "status" => &mut stanza.status,
            "version" => &mut stanza.version,
            "architecture" => &mut stanza.architecture,
            _ => continue,
        };
        if slot.is_some() {
            stanza.malformed = true;
        } else {
            *slot = Some(value.trim().to_owned());
        }
    }
    flush(&mut stanza, &mut out);
    out
}

/// What a path looked like: device, inode, size, mode, modification and change times (to the
/// nanosecond), following symbolic links; `None` when it could not be examined (missing, or
/// an error). Any write, rename or `chmod` changes the change time, so an unchanged stamp
/// means unchanged content for every file system that keeps ctime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp(Option<[i64; 8]>);

impl Stamp {
    /// True when the path was last changed (ctime) before `t`, or does not exist. A stamp taken
    /// within a timestamp tick of a change may equal the stamp after a second change in the
    /// same tick, so (as git does for its index) answers resting on a stamp that was not
    /// settled when taken are not trusted.
    pub fn settled_before(&self, t: std::time::SystemTime) -> bool {
        let Some(fields) = self.0 else {
            return true;
        };
        let since_epoch = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        (fields[6], fields[7])
            < (
                since_epoch.as_secs() as i64,
                i64::from(since_epoch.subsec_nanos()),
            )
    }

    /// The stamp of `path` now.
    pub fn of(path: &Path) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp(std::fs::metadata(path).ok().map(|m| {
            [
                m.dev() as i64,
                m.ino() as i64,
                m.size() as i64,
                i64::from(m.mode()),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec(),
            ]
        }))
    }
}

/// The machine rules are evaluated against: the target root and the CPU architecture.
///
/// It caches what it reads, so one search reads `os-release` and the dpkg status file at most
/// once, and hashes each file at most once and reads each file's text at most once: make a new
/// one for each search, as the caches never see later changes. `Send + Sync`: a search may run
/// on another thread.
pub struct Machine {
    root: PathBuf,
    arch: String,
    looked_at: Mutex<HashMap<PathBuf, Stamp>>,
    os_release: Mutex<Option<Arc<OsRelease>>>,
    dpkg: Mutex<Option<Arc<DpkgStatus>>>,
    hashes: Mutex<HashMap<PathBuf, Result<[u8; 32], Absent>>>,
    texts: Mutex<HashMap<PathBuf, Result<Arc<str>, Absent>>>,
}

impl fmt::Debug for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Machine")
            .field("root", &self.root)
            .field("arch", &self.arch)
            .finish_non_exhaustive()
    }
}

/// Locks a cache; a panic elsewhere while it was held leaves nothing half-written worth
/// refusing, so poisoning is ignored.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Machine {
    /// The machine at `root`, with this process's CPU architecture (`std::env::consts::ARCH`).
    pub fn new(root: impl Into<PathBuf>) -> Machine {
        Machine {
            root: root.into(),
            arch: String::new(),
            looked_at: Mutex::new(HashMap::new()),
            os_release: Mutex::new(None),
            dpkg: Mutex::new(None),
            hashes: Mutex::new(HashMap::new()),
            texts: Mutex::new(HashMap::new()),
        }
        .with_arch(std::env::consts::ARCH)
    }

    /// The same machine with another CPU architecture (for tests and for checking a root meant
    /// for another machine). Aliases are accepted (`amd64` is `x86_64`); a name
    /// [`canonical_arch`] does not know is kept as given, and matches only itself.
    pub fn with_arch(mut self, arch: &str) -> Machine {
        self.arch = canonical_arch(arch).unwrap_or(arch).to_owned();
        self
    }

    /// The target root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The CPU architecture's canonical name.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// Every path rules looked at so far, with what it looked like just before: if none of
    /// them has changed since, evaluating the same rules again gives the same answers (rules
    /// depend on nothing else but the architecture and the installed updates).
    pub fn looked_at(&self) -> Vec<(PathBuf, Stamp)> {
        lock(&self.looked_at)
            .iter()
            .map(|(p, s)| (p.clone(), *s))
            .collect()
    }

    /// Records `path`'s stamp the first time a rule looks at it, before it is read: a change
    /// after the stamp then shows as a different stamp later.
    ///
    /// A path that does not exist is covered by its deepest existing ancestor instead: creating
    /// anything below a directory changes that directory's stamp, and catalogs test for many
    /// absent files in few directories, so far fewer stamps need checking.
    fn note(&self, path: &Path) {
        let mut looked_at = lock(&self.looked_at);
        if looked_at.contains_key(path) {
            return;
        }
        let mut stamp = Stamp::of(path);
        let mut at = path;
        while stamp.0.is_none() {
            match at.parent() {
                Some(parent) if parent.starts_with(&self.root) => {
                    at = parent;
                    if looked_at.contains_key(at) {
                        return;
                    }
                    stamp = Stamp::of(at);
                }
                _ => break,
            }
        }
        looked_at.insert(at.to_path_buf(), stamp);
    }

    fn os_release(&self) -> crate::Result<Arc<OsRelease>> {
        let mut cache = lock(&self.os_release);
        if let Some(cached) = cache.as_ref() {
            return Ok(Arc::clone(cached));
        }
        for rel in OS_RELEASE_FILES {
            self.note(&self.root.join(rel));
        }
        let loaded = Arc::new(load_os_release(&self.root)?);
        *cache = Some(Arc::clone(&loaded));
        Ok(loaded)
    }

    fn dpkg(&self) -> crate::Result<Arc<DpkgStatus>> {
        let mut cache = lock(&self.dpkg);
        if let Some(cached) = cache.as_ref() {
            return Ok(Arc::clone(cached));
        }
        self.note(&self.root.join(DPKG_STATUS));
        let loaded = Arc::new(load_dpkg_status(&self.root)?);
        *cache = Some(Arc::clone(&loaded));
        Ok(loaded)
    }

    fn sha256(&self, path: &Path) -> crate::Result<Result<[u8; 32], Absent>> {
        let mut cache = lock(&self.hashes);
        if let Some(cached) = cache.get(path) {
            return Ok(*cached);
        }
        self.note(path);
        let digest = match open_regular(path)? {
            Ok(mut file) => {
                use aws_lc_rs::digest;
                let mut ctx = digest::Context::new(&digest::SHA256);
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match file.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => ctx.update(&buf[..n]),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(Error::io("cannot read", path, e)),
                    }
                }
                let mut out = [0u8; 32];
                out.copy_from_slice(ctx.finish().as_ref());
                Ok(out)
            }
            Err(absent) => Err(absent),
        };
        cache.insert(path.to_path_buf(), digest);
        Ok(digest)
    }

    fn text(&self, path: &Path) -> crate::Result<Result<Arc<str>, Absent>> {
        let mut cache = lock(&self.texts);
        if let Some(cached) = cache.get(path) {
            return Ok(cached.clone());
        }
        self.note(path);
        let text = match open_regular(path)? {
            Ok(file) => {
                let mut bytes = Vec::new();
                file.take(MAX_TEXT_BYTES)
                    .read_to_end(&mut bytes)
                    .map_err(|e| Error::io("cannot read", path, e))?;
                Ok(Arc::from(String::from_utf8_lossy(&bytes)))
            }
            Err(absent) => Err(absent),
        };
        cache.insert(path.to_path_buf(), text.clone());
        Ok(text)
    }
}

impl Rule {
    /// Evaluates the rule against `machine`; `installed(id)` answers `update_installed`.
    ///
    /// `all` and `any` stop at the first deciding child. Errors (never panics): a file that
    /// exists but cannot be looked at or read (permission denied, a symbolic-link loop, an I/O
    /// error), and an `os-release` or dpkg status file that cannot be read, give
    /// [`Error::Io`](crate::Error::Io). A missing file is not an error: the leaf does not hold.
    /// A rule [`validate`] would refuse is still evaluated without panicking: its faulty leaves
    /// (and anything nested deeper than [`MAX_DEPTH`]) do not hold, and say why.
    pub fn evaluate(
        &self,
        machine: &Machine,
        installed: &mut dyn FnMut(Uuid) -> bool,
    ) -> crate::Result<Verdict> {
        self.eval(machine, installed, 1)
    }

    fn eval(
        &self,
        machine: &Machine,
        installed: &mut dyn FnMut(Uuid) -> bool,
        depth: usize,
    ) -> crate::Result<Verdict> {
        if depth > MAX_DEPTH {
            return Ok(Verdict {
                holds: false,
                reason: format!("rules nested more than {MAX_DEPTH} levels deep are not evaluated"),
            });
        }
        match self {
            Rule::All(rules) => {
                for rule in rules {
                    let verdict = rule.eval(machine, installed, depth + 1)?;
                    if !verdict.holds {
                        return Ok(verdict);
                    }
                }
                Ok(Verdict {
                    holds: true,
                    reason: format!("all {} rules hold", rules.len()),
                })
            }
            Rule::Any(rules) => {
                let mut first = None;
                for rule in rules {
                    let verdict = rule.eval(machine, installed, depth + 1)?;
                    if verdict.holds {
                        return Ok(verdict);
                    }
                    first.get_or_insert(verdict.reason);
                }
                let reason = match first {
                    Some(first) => format!("none of {} holds: {first}", rules.len()),
                    None => "none of 0 holds: the list is empty".to_owned(),
                };
                Ok(Verdict {
                    holds: false,
                    reason,
                })
            }
            Rule::Not(inner) => {
                let verdict = inner.eval(machine, installed, depth + 1)?;
                Ok(Verdict {
                    holds: !verdict.holds,
                    reason: format!("not ({})", verdict.reason),
                })
            }
            leaf => {
                let (holds, finding) = leaf.leaf(machine, installed)?;
                Ok(Verdict {
                    holds,
                    reason: format!("{leaf}: {finding}"),
                })
            }
        }
    }

    /// A leaf's outcome and what was found.
    fn leaf(
        &self,
        machine: &Machine,
        installed: &mut dyn FnMut(Uuid) -> bool,
    ) -> crate::Result<(bool, String)> {
        let target = |path: &str| -> Result<PathBuf, String> {
            rel_path(path)
                .map(|rel| machine.root.join(rel))
                .map_err(|e| format!("invalid rule: {e}"))
        };
        Ok(match self {
            // `eval` combines these itself and never asks for their leaf outcome.
            Rule::All(_) | Rule::Any(_) | Rule::Not(_) => (false, "not a leaf".to_owned()),
            Rule::FileExists(path) => {
                let path = match target(path) {
                    Ok(path) => path,
                    Err(e) => return Ok((false, e)),
                };
                machine.note(&path);
                match std::fs::metadata(&path) {
                    Ok(meta) if meta.is_dir() => (false, Absent::Directory.to_string()),
                    Ok(_) => (true, "exists".to_owned()),
                    Err(e) if is_absent(&e) => (false, Absent::Missing.to_string()),
                    Err(e) => return Err(Error::io("cannot look at", &path, e)),
                }
            }
            Rule::FileSha256 { path, sha256 } => {
                let path = match target(path) {
                    Ok(path) => path,
                    Err(e) => return Ok((false, e)),
                };
                match machine.sha256(&path)? {
                    Ok(digest) => {
                        let found = hex::encode(digest);
                        if found == *sha256 {
                            (true, "sha256 matches".to_owned())
                        } else {
                            (false, format!("has sha256 {found}"))
                        }
                    }
                    Err(absent) => (false, absent.to_string()),
                }
            }
            Rule::FileVersion {
                path,
                pattern,
                op,
                version,
            } => {
                let path = match target(path) {
                    Ok(path) => path,
                    Err(e) => return Ok((false, e)),
                };
                let text = match machine.text(&path)? {
                    Ok(text) => text,
                    Err(absent) => return Ok((false, absent.to_string())),
                };
                let regex = pattern.regex();
                let Some(captures) = regex.captures(&text) else {
                    return Ok((false, "pattern not found".to_owned()));
                };
                let group = usize::from(regex.captures_len() > 1);
                let Some(found) = captures.get(group) else {
                    return Ok((
                        false,
                        "the pattern matched, but its group 1 captured nothing".to_owned(),
                    ));
                };
                let found = found.as_str().trim();
                compare_found(found, *op, version.as_deref(), "found")
            }
            Rule::OsRelease { field, op, value } => {
                let os = machine.os_release()?;
                let Some(source) = os.source else {
                    return Ok((
                        false,
                        format!("no {} or {}", OS_RELEASE_FILES[0], OS_RELEASE_FILES[1]),
                    ));
                };
                let Some(found) = os.fields.get(field) else {
                    return Ok((false, format!("not set in {source}")));
                };
                let is = format!("is {}", Word(found));
                match op {
                    VersionOp::Eq => (found == value, is),
                    VersionOp::Ne => (found != value, is),
                    op => match compare_versions(found, value) {
                        Ok(ordering) => (op.holds(ordering), is),
                        Err(e) => (false, format!("{is}, which cannot be compared: {e}")),
                    },
                }
            }
            Rule::Arch(names) => {
                let holds = names
                    .iter()
                    .any(|name| canonical_arch(name).unwrap_or(name) == machine.arch);
                (holds, format!("this machine is {}", machine.arch))
            }
            Rule::Package { name, op, version } => {
                let status = machine.dpkg()?;
                package_outcome(&status, name, *op, version.as_deref())
            }
            Rule::UpdateInstalled(id) => {
                if installed(*id) {
                    (true, "installed".to_owned())
                } else {
                    (false, "not installed".to_owned())
                }
            }
        })
    }
}

/// The outcome of comparing a version found on the machine with a rule's `op version`.
fn compare_found(
    found: &str,
    op: Option<VersionOp>,
    version: Option<&str>,
    what: &str,
) -> (bool, String) {
    let said = format!("{what} {}", Word(found));
    match (op, version) {
        (None, None) => (true, said),
        (Some(op), Some(version)) => match compare_versions(found, version) {
            Ok(ordering) => (op.holds(ordering), said),
            Err(e) => (false, format!("{said}, which cannot be compared: {e}")),
        },
        _ => (
            false,
            format!("{said}; invalid rule: op and version must be given together"),
        ),
    }
}

fn package_outcome(
    status: &DpkgStatus,
    name: &str,
    op: Option<VersionOp>,
    version: Option<&str>,
) -> (bool, String) {
    if !status.present {
        return (false, format!("not installed (no {DPKG_STATUS})"));
    }
    let (package, qualifier) = split_package(name);
    let all = status
        .packages
        .get(package)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let matching: Vec<&DpkgEntry> = all
        .iter()
        .filter(|e| e.matches_qualifier(qualifier))
        .collect();
    let installed: Vec<&DpkgEntry> = matching.iter().copied().filter(|e| e.installed()).collect();
    if installed.is_empty() {
        let detail = if let Some(entry) = matching.first() {
            format!(" (status {})", entry.status)
        } else if let (Some(_), Some(other)) = (qualifier, all.iter().find(|e| e.installed())) {
            format!(
                " (installed for {})",
                other.architecture.as_deref().unwrap_or("no architecture")
            )
        } else {
            String::new()
        };
        return (false, format!("not installed{detail}"));
    }
    let describe = |entries: &[&DpkgEntry]| -> String {
        let many = entries.len() > 1;
        entries
            .iter()
            .map(|e| {
                let v = Word(e.version()).to_string();
                match (&e.architecture, many) {
                    (Some(arch), true) => format!("{v} ({arch})"),
                    _ => v,
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let said = format!("installed {}", describe(&installed));
    match (op, version) {
        (None, None) => (true, said),
        (Some(op), Some(version)) => {
            let mut problem = None;
            for entry in &installed {
                match compare_versions(entry.version(), version) {
                    Ok(ordering) if op.holds(ordering) => {
                        return (true, format!("installed {}", describe(&[entry])));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        problem.get_or_insert(e);
                    }
                }
            }
            match problem {
                Some(e) => (false, format!("{said}, which cannot be compared: {e}")),
                None => (false, said),
            }
        }
        _ => (
            false,
            format!("{said}; invalid rule: op and version must be given together"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use proptest::prelude::*;
    use tempfile::TempDir;

    use super::*;

    const DIGEST_HELLO: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    fn rule(json: &str) -> Rule {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    fn write(root: &Path, rel: &str, content: impl AsRef<[u8]>) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    fn eval(rule: &Rule, machine: &Machine) -> Verdict {
        rule.evaluate(machine, &mut |_| false)
            .unwrap_or_else(|e| panic!("{rule}: {e}"))
    }

    /// Evaluates the JSON rule on a fresh machine at `root`.
    fn check(root: &Path, json: &str) -> Verdict {
        eval(&rule(json), &Machine::new(root))
    }

    fn holds(root: &Path, json: &str, reason: &str) {
        let v = check(root, json);
        assert_eq!(
            v,
            Verdict {
                holds: true,
                reason: reason.to_owned()
            },
            "{json}"
        );
    }

    fn fails(root: &Path, json: &str, reason: &str) {
        let v = check(root, json);
        assert_eq!(
            v,
            Verdict {
                holds: false,
                reason: reason.to_owned()
            },
            "{json}"
        );
    }

    fn invalid(json: &str, needle: &str) {
        let e = validate(&rule(json)).expect_err(json);
        assert!(e.contains(needle), "{json}: expected {needle:?} in {e}");
    }

    fn running_as_root() -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    fn tmp() -> TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn file_exists() {
        let dir = tmp();
        let root = dir.path();
        write(root, "etc/demo.conf", "x");
        holds(
            root,
            r#"{"file_exists": "etc/demo.conf"}"#,
            "file_exists etc/demo.conf: exists",
        );
        holds(
            root,
            r#"{"file_exists": "/etc/demo.conf"}"#,
            "file_exists /etc/demo.conf: exists",
        );
        fails(
            root,
            r#"{"file_exists": "etc/other"}"#,
            "file_exists etc/other: not found",
        );
        fails(
            root,
            r#"{"file_exists": "etc"}"#,
            "file_exists etc: is a directory",
        );
        // A parent that is a regular file (ENOTDIR) counts as missing.
        fails(
            root,
            r#"{"file_exists": "etc/demo.conf/x"}"#,
            "file_exists etc/demo.conf/x: not found",
        );
    }

    #[test]
    fn symlinks_are_followed() {
        let dir = tmp();
        let root = dir.path();
        write(root, "real/tool", "hello");
        std::os::unix::fs::symlink("real/tool", root.join("link")).unwrap();
        // An absolute target is the real file system's, not the root's.
        std::os::unix::fs::symlink(root.join("real/tool"), root.join("absolute")).unwrap();
        std::os::unix::fs::symlink("/real/tool", root.join("not-in-root")).unwrap();
        std::os::unix::fs::symlink("nowhere", root.join("dangling")).unwrap();
        holds(
            root,
            r#"{"file_exists": "link"}"#,
            "file_exists link: exists",
        );
        holds(
            root,
            &format!(r#"{{"file_sha256": {{"path": "link", "sha256": "{DIGEST_HELLO}"}}}}"#),
            "file_sha256 link 2cf24dba5fb0…: sha256 matches",
        );
        holds(
            root,
            r#"{"file_exists": "absolute"}"#,
            "file_exists absolute: exists",
        );
        if !Path::new("/real/tool").exists() {
            fails(
                root,
                r#"{"file_exists": "not-in-root"}"#,
                "file_exists not-in-root: not found",
            );
        }
        fails(
            root,
            r#"{"file_exists": "dangling"}"#,
            "file_exists dangling: not found",
        );
    }

    #[test]
    fn file_sha256() {
        let dir = tmp();
        let root = dir.path();
        write(root, "usr/bin/tool", "hello");
        holds(
            root,
            &format!(
                r#"{{"file_sha256": {{"path": "usr/bin/tool", "sha256": "{DIGEST_HELLO}"}}}}"#
            ),
            "file_sha256 usr/bin/tool 2cf24dba5fb0…: sha256 matches",
        );
        let wrong = "0".repeat(64);
        fails(
            root,
            &format!(r#"{{"file_sha256": {{"path": "usr/bin/tool", "sha256": "{wrong}"}}}}"#),
            &format!("file_sha256 usr/bin/tool 000000000000…: has sha256 {DIGEST_HELLO}"),
        );
        fails(
            root,
            &format!(r#"{{"file_sha256": {{"path": "usr/bin/none", "sha256": "{wrong}"}}}}"#),
            "file_sha256 usr/bin/none 000000000000…: not found",
        );
        // A directory where a file is expected does not hold.
        fails(
            root,
            &format!(r#"{{"file_sha256": {{"path": "usr/bin", "sha256": "{wrong}"}}}}"#),
            "file_sha256 usr/bin 000000000000…: is a directory",
        );
    }

    #[test]
    fn a_fifo_is_not_read() {
        let dir = tmp();
        let root = dir.path();
        let fifo = root.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: c is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        fails(
            root,
            &format!(r#"{{"file_sha256": {{"path": "fifo", "sha256": "{DIGEST_HELLO}"}}}}"#),
            "file_sha256 fifo 2cf24dba5fb0…: is not a regular file",
        );
        fails(
            root,
            r#"{"file_version": {"path": "fifo", "pattern": "x"}}"#,
            "file_version fifo /x/: is not a regular file",
        );
        holds(
            root,
            r#"{"file_exists": "fifo"}"#,
            "file_exists fifo: exists",
        );
    }

    #[test]
    fn file_version_with_capture_group_and_each_op() {
        let dir = tmp();
        let root = dir.path();
        write(
            root,
            "opt/app/VERSION",
            "# app\nname=demo\nversion=1.2.3  \nbuild=7\n",
        );
        let r = |op: &str, v: &str| {
            format!(
                r#"{{"file_version": {{"path": "opt/app/VERSION", "pattern": "^version=(\\S+)", "op": "{op}", "version": "{v}"}}}}"#
            )
        };
        let cases = [
            ("=", "1.2.3", true),
            ("=", "1.2.4", false),
            ("!=", "1.2.4", true),
            ("!=", "1.2.3", false),
            ("<", "1.10", true),
            ("<", "1.2.3", false),
            ("<=", "1.2.3", true),
            ("<=", "1.2", false),
            (">", "1.2", true),
            (">", "1.2.3~", true),
            (">", "1.2.3", false),
            (">=", "1.2.3", true),
            (">=", "1:0.1", false),
        ];
        for (op, v, want) in cases {
            let verdict = check(root, &r(op, v));
            assert_eq!(verdict.holds, want, "{op} {v}: {verdict:?}");
            assert_eq!(
                verdict.reason,
                format!(r"file_version opt/app/VERSION /^version=(\S+)/ {op} {v}: found 1.2.3")
            );
        }
        fails(
            root,
            r#"{"file_version": {"path": "opt/app/VERSION", "pattern": "^release=(\\S+)", "op": ">=", "version": "1"}}"#,
            r"file_version opt/app/VERSION /^release=(\S+)/ >= 1: pattern not found",
        );
        fails(
            root,
            r#"{"file_version": {"path": "opt/app/NONE", "pattern": "x"}}"#,
            "file_version opt/app/NONE /x/: not found",
        );
        fails(
            root,
            r#"{"file_version": {"path": "opt/app", "pattern": "x"}}"#,
            "file_version opt/app /x/: is a directory",
        );
        // An optional group that did not take part.
        fails(
            root,
            r#"{"file_version": {"path": "opt/app/VERSION", "pattern": "^name=demo(-\\d)?"}}"#,
            "file_version opt/app/VERSION /^name=demo(-\\d)?/: the pattern matched, but its group 1 captured nothing",
        );
    }

    #[test]
    fn file_version_without_capture_group_or_op() {
        let dir = tmp();
        let root = dir.path();
        write(root, "opt/app/VERSION", "release 2:4.5-1 (stable)\r\n");
        holds(
            root,
            r#"{"file_version": {"path": "opt/app/VERSION", "pattern": "\\d+:[\\d.]+-\\d+", "op": ">", "version": "4.5"}}"#,
            r"file_version opt/app/VERSION /\d+:[\d.]+-\d+/ > 4.5: found 2:4.5-1",
        );
        // Without op and version, the rule holds when the pattern matches.
        holds(
            root,
            r#"{"file_version": {"path": "opt/app/VERSION", "pattern": "stable"}}"#,
            "file_version opt/app/VERSION /stable/: found stable",
        );
        // Multi-line mode: `$` matches before the line end; surrounding white space is trimmed.
        holds(
            root,
            r#"{"file_version": {"path": "opt/app/VERSION", "pattern": "^release (.*)\\(stable\\)", "op": "=", "version": "2:4.5-1"}}"#,
            r"file_version opt/app/VERSION /^release (.*)\(stable\)/ = 2:4.5-1: found 2:4.5-1",
        );
        // A found version Debian ordering cannot parse: does not hold, and says so.
        fails(
            root,
            r#"{"file_version": {"path": "opt/app/VERSION", "pattern": "\\(\\w+\\)", "op": ">=", "version": "1"}}"#,
            r#"file_version opt/app/VERSION /\(\w+\)/ >= 1: found "(stable)", which cannot be compared: "(stable)" is not a Debian version"#,
        );
    }

    #[test]
    fn file_version_reads_only_the_first_mib() {
        let dir = tmp();
        let root = dir.path();
        let mut text = vec![b'.'; MAX_TEXT_BYTES as usize];
        text.extend_from_slice(b"\nversion=9\n");
        write(root, "big", &text);
        fails(
            root,
            r#"{"file_version": {"path": "big", "pattern": "version=(\\d+)"}}"#,
            r"file_version big /version=(\d+)/: pattern not found",
        );
        write(root, "binary", b"\xff\xfe\x00version=3\x00");
        holds(
            root,
            r#"{"file_version": {"path": "binary", "pattern": "version=(\\d+)", "op": "=", "version": "3"}}"#,
            r"file_version binary /version=(\d+)/ = 3: found 3",
        );
    }

    #[test]
    fn os_release_quoting_and_comments() {
        let dir = tmp();
        let root = dir.path();
        write(
            root,
            "etc/os-release",
            concat!(
                "# a comment\n",
                "\n",
                "NAME=\"Debian GNU/Linux\"\n",
                "  # an indented comment\n",
                "ID=debian\n",
                "VERSION_ID=\"12\"\n",
                "VERSION_CODENAME='book worm'\n",
                "PRETTY_NAME=\"Say \\\"hi\\\" \\\\ \\$HOME \\`x\\` \\n\"\n",
                "SINGLE='no \\\"escapes\\\"'\n",
                "BARE=a\\ b # trailing comment\n",
                "BROKEN=\"unterminated\n",
                "NOT A LINE\n",
                "ID_LIKE=ubuntu\n",
                "ID_LIKE=\"later wins\"\n",
            ),
        );
        let os = load_os_release(root).unwrap();
        assert_eq!(os.source, Some("etc/os-release"));
        let f = |k: &str| os.fields.get(k).map(String::as_str);
        assert_eq!(f("NAME"), Some("Debian GNU/Linux"));
        assert_eq!(f("ID"), Some("debian"));
        assert_eq!(f("VERSION_ID"), Some("12"));
        assert_eq!(f("VERSION_CODENAME"), Some("book worm"));
        assert_eq!(f("PRETTY_NAME"), Some(r#"Say "hi" \ $HOME `x` \n"#));
        assert_eq!(f("SINGLE"), Some(r#"no \"escapes\""#));
        assert_eq!(f("BARE"), Some("a b"));
        assert_eq!(f("BROKEN"), None);
        assert_eq!(f("ID_LIKE"), Some("later wins"));
        assert_eq!(os.fields.len(), 8, "{:?}", os.fields);

        holds(
            root,
            r#"{"os_release": {"field": "VERSION_ID", "op": ">=", "value": "12"}}"#,
            "os_release VERSION_ID >= 12: is 12",
        );
        fails(
            root,
            r#"{"os_release": {"field": "VERSION_ID", "op": ">", "value": "12"}}"#,
            "os_release VERSION_ID > 12: is 12",
        );
        holds(
            root,
            r#"{"os_release": {"field": "VERSION_ID", "op": "<", "value": "12.1"}}"#,
            "os_release VERSION_ID < 12.1: is 12",
        );
        holds(
            root,
            r#"{"os_release": {"field": "ID", "op": "=", "value": "debian"}}"#,
            "os_release ID = debian: is debian",
        );
        // = compares strings exactly, not as versions.
        fails(
            root,
            r#"{"os_release": {"field": "VERSION_ID", "op": "=", "value": "12.0"}}"#,
            "os_release VERSION_ID = 12.0: is 12",
        );
        holds(
            root,
            r#"{"os_release": {"field": "ID", "op": "!=", "value": "ubuntu"}}"#,
            "os_release ID != ubuntu: is debian",
        );
        holds(
            root,
            r#"{"os_release": {"field": "VERSION_CODENAME", "op": "=", "value": "book worm"}}"#,
            r#"os_release VERSION_CODENAME = "book worm": is "book worm""#,
        );
        fails(
            root,
            r#"{"os_release": {"field": "NAME", "op": ">=", "value": "1"}}"#,
            r#"os_release NAME >= 1: is "Debian GNU/Linux", which cannot be compared: "Debian GNU/Linux" is not a Debian version"#,
        );
        fails(
            root,
            r#"{"os_release": {"field": "VARIANT_ID", "op": "=", "value": "x"}}"#,
            "os_release VARIANT_ID = x: not set in etc/os-release",
        );
    }

    #[test]
    fn os_release_falls_back_to_usr_lib() {
        let dir = tmp();
        let root = dir.path();
        fails(
            root,
            r#"{"os_release": {"field": "ID", "op": "=", "value": "debian"}}"#,
            "os_release ID = debian: no etc/os-release or usr/lib/os-release",
        );
        write(root, "usr/lib/os-release", "ID=debian\nVERSION_ID=11\n");
        fails(
            root,
            r#"{"os_release": {"field": "VERSION_ID", "op": ">=", "value": "12"}}"#,
            "os_release VERSION_ID >= 12: is 11",
        );
        // The usual relative link from /etc is followed.
        fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink("../usr/lib/os-release", root.join("etc/os-release")).unwrap();
        let os = load_os_release(root).unwrap();
        assert_eq!(os.source, Some("etc/os-release"));
        assert_eq!(os.fields["VERSION_ID"], "11");
        // /etc/os-release wins when it exists.
        fs::remove_file(root.join("etc/os-release")).unwrap();
        write(root, "etc/os-release", "VERSION_ID=13\n");
        holds(
            root,
            r#"{"os_release": {"field": "VERSION_ID", "op": ">=", "value": "12"}}"#,
            "os_release VERSION_ID >= 12: is 13",
        );
    }

    #[test]
    fn arch_with_aliases() {
        let dir = tmp();
        let root = dir.path();
        let x86 = Machine::new(root).with_arch("amd64");
        assert_eq!(x86.arch(), "x86_64");
        assert_eq!(x86.root(), root);
        let v = eval(&rule(r#"{"arch": ["aarch64"]}"#), &x86);
        assert_eq!(
            v,
            Verdict {
                holds: false,
                reason: "arch [aarch64]: this machine is x86_64".into()
            }
        );
        let v = eval(&rule(r#"{"arch": ["arm64", "amd64"]}"#), &x86);
        assert_eq!(
            v,
            Verdict {
                holds: true,
                reason: "arch [arm64, amd64]: this machine is x86_64".into()
            }
        );
        for (alias, canonical) in [
            ("arm64", "aarch64"),
            ("i386", "x86"),
            ("i686", "x86"),
            ("armhf", "arm"),
            ("armel", "arm"),
            ("ppc64el", "powerpc64"),
            ("riscv64", "riscv64"),
            ("s390x", "s390x"),
        ] {
            let m = Machine::new(root).with_arch(alias);
            assert_eq!(m.arch(), canonical);
            assert!(
                eval(&Rule::Arch(vec![canonical.into()]), &m).holds,
                "{alias}"
            );
            assert!(eval(&Rule::Arch(vec![alias.into()]), &m).holds, "{alias}");
            assert!(
                !eval(&Rule::Arch(vec!["x86_64".into()]), &m).holds,
                "{alias}"
            );
        }
        assert_eq!(
            Machine::new(root).arch(),
            canonical_arch(std::env::consts::ARCH).unwrap_or(std::env::consts::ARCH)
        );
        // An unknown machine architecture is kept, and matches only itself.
        let odd = Machine::new(root).with_arch("vax");
        assert_eq!(odd.arch(), "vax");
        assert!(eval(&Rule::Arch(vec!["vax".into()]), &odd).holds);
        assert!(!eval(&Rule::Arch(vec!["x86".into()]), &odd).holds);
    }

    const STATUS: &str = "\
Package: libc6
Status: install ok installed
Priority: optional
Architecture: amd64
Multi-Arch: same
Version: 2.31-13
Description: GNU C Library: Shared libraries
 Contains the standard libraries: used by nearly all programs.
 .
 Package: fake

Package: libc6
Status: install ok installed
Architecture: i386
Version: 2.36-9

Package: oldpkg
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0-1

Package: epochal
Status: hold ok installed
Architecture: all
Version: 1:1.0

Package: tilde
Status: install ok installed
Architecture: amd64
Version: 1.0~rc1

Package: halfinstalled
Status: install ok half-installed
Architecture: amd64
Version: 3

Package: garbage
this line is not a field
Status: install ok installed
Version: 1

Package: twice
Package: twice2
Status: install ok installed
Version: 1

Status: install ok installed
Version: 1

Package: badver
Status: install ok installed
Architecture: amd64
Version: 1.0 beta
";

    fn dpkg_root() -> TempDir {
        let dir = tmp();
        write(dir.path(), DPKG_STATUS, STATUS);
        dir
    }

    #[test]
    fn package_installed_and_versions() {
        let dir = dpkg_root();
        let root = dir.path();
        holds(
            root,
            r#"{"package": {"name": "libc6"}}"#,
            "package libc6: installed 2.31-13 (amd64), 2.36-9 (i386)",
        );
        holds(
            root,
            r#"{"package": {"name": "libc6", "op": ">=", "version": "2.36"}}"#,
            "package libc6 >= 2.36: installed 2.36-9",
        );
        fails(
            root,
            r#"{"package": {"name": "libc6:amd64", "op": ">=", "version": "2.36"}}"#,
            "package libc6:amd64 >= 2.36: installed 2.31-13",
        );
        holds(
            root,
            r#"{"package": {"name": "libc6:i386", "op": ">=", "version": "2.36"}}"#,
            "package libc6:i386 >= 2.36: installed 2.36-9",
        );
        fails(
            root,
            r#"{"package": {"name": "libc6:arm64"}}"#,
            "package libc6:arm64: not installed (installed for amd64)",
        );
        fails(
            root,
            r#"{"package": {"name": "oldpkg"}}"#,
            "package oldpkg: not installed (status deinstall ok config-files)",
        );
        fails(
            root,
            r#"{"package": {"name": "halfinstalled"}}"#,
            "package halfinstalled: not installed (status install ok half-installed)",
        );
        fails(
            root,
            r#"{"package": {"name": "fake"}}"#,
            "package fake: not installed",
        );
        // Architecture: all matches any qualifier; hold ok installed is installed.
        holds(
            root,
            r#"{"package": {"name": "epochal:arm64", "op": ">", "version": "2.0"}}"#,
            "package epochal:arm64 > 2.0: installed 1:1.0",
        );
        holds(
            root,
            r#"{"package": {"name": "tilde", "op": "<", "version": "1.0"}}"#,
            "package tilde < 1.0: installed 1.0~rc1",
        );
        fails(
            root,
            r#"{"package": {"name": "tilde", "op": ">=", "version": "1.0"}}"#,
            "package tilde >= 1.0: installed 1.0~rc1",
        );
        // dpkg equality: 1.0~rc1 = 0:1.0~rc1-0.
        holds(
            root,
            r#"{"package": {"name": "tilde", "op": "=", "version": "0:1.0~rc1-0"}}"#,
            "package tilde = 0:1.0~rc1-0: installed 1.0~rc1",
        );
        fails(
            root,
            r#"{"package": {"name": "badver", "op": ">=", "version": "1"}}"#,
            r#"package badver >= 1: installed "1.0 beta", which cannot be compared: "1.0 beta" is not a Debian version"#,
        );
        // Malformed stanzas are skipped.
        for name in ["garbage", "twice", "twice2"] {
            fails(
                root,
                &format!(r#"{{"package": {{"name": "{name}"}}}}"#),
                &format!("package {name}: not installed"),
            );
        }
        let parsed = parse_dpkg_status(STATUS);
        let mut names: Vec<&str> = parsed.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "badver",
                "epochal",
                "halfinstalled",
                "libc6",
                "oldpkg",
                "tilde"
            ]
        );
    }

    #[test]
    fn package_without_status_file_or_with_crlf() {
        let dir = tmp();
        let root = dir.path();
        fails(
            root,
            r#"{"package": {"name": "libc6"}}"#,
            "package libc6: not installed (no var/lib/dpkg/status)",
        );
        write(root, DPKG_STATUS, STATUS.replace('\n', "\r\n"));
        holds(
            root,
            r#"{"package": {"name": "tilde", "op": "<", "version": "1.0"}}"#,
            "package tilde < 1.0: installed 1.0~rc1",
        );
        // Garbage never panics and yields no packages.
        assert!(parse_dpkg_status("\u{0}\n:\n \n\t\n::::\nPackage:\n\nStatus: x").is_empty());
    }

    #[test]
    fn debian_ordering() {
        assert_eq!(compare_versions("1:1.0", "2.0"), Ok(Ordering::Greater));
        assert_eq!(compare_versions("1.0~rc1", "1.0"), Ok(Ordering::Less));
        assert_eq!(compare_versions("1.0", "1.0-0"), Ok(Ordering::Equal));
        assert_eq!(compare_versions("2.36-9", "2.36-10"), Ok(Ordering::Less));
        assert_eq!(compare_versions("1.10", "1.9"), Ok(Ordering::Greater));
        assert_eq!(compare_versions("1.0+b1", "1.0"), Ok(Ordering::Greater));
        assert_eq!(
            compare_versions("1.0", "not a version"),
            Err(r#""not a version" is not a Debian version"#.to_owned())
        );
        assert_eq!(
            compare_versions("", "1"),
            Err(r#""" is not a Debian version"#.to_owned())
        );
        for (op, ordering, want) in [
            (VersionOp::Eq, Ordering::Equal, true),
            (VersionOp::Ne, Ordering::Equal, false),
            (VersionOp::Lt, Ordering::Less, true),
            (VersionOp::Le, Ordering::Greater, false),
            (VersionOp::Gt, Ordering::Equal, false),
            (VersionOp::Ge, Ordering::Equal, true),
        ] {
            assert_eq!(op.holds(ordering), want, "{op} {ordering:?}");
        }
    }

    #[test]
    fn update_installed_asks_the_caller() {
        let dir = tmp();
        let machine = Machine::new(dir.path());
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        let mut asked = Vec::new();
        let mut installed = |id: Uuid| {
            asked.push(id);
            id == a
        };
        let r = Rule::All(vec![Rule::UpdateInstalled(a), Rule::UpdateInstalled(b)]);
        let v = r.evaluate(&machine, &mut installed).unwrap();
        assert_eq!(
            v,
            Verdict {
                holds: false,
                reason: format!("update_installed {b}: not installed"),
            }
        );
        let v = Rule::UpdateInstalled(a)
            .evaluate(&machine, &mut installed)
            .unwrap();
        assert_eq!(v.reason, format!("update_installed {a}: installed"));
        assert!(v.holds);
        assert_eq!(asked, [a, b, a]);
    }

    #[test]
    fn combinators_give_the_deciding_reason_and_short_circuit() {
        let dir = tmp();
        let root = dir.path();
        write(root, "etc/a", "");
        let machine = Machine::new(root).with_arch("x86_64");
        let id = Uuid::from_u128(7);
        let mut asked = 0;
        let mut installed = |_| {
            asked += 1;
            true
        };
        let mut run = |json: &str| rule(json).evaluate(&machine, &mut installed).unwrap();

        let v = run(r#"{"all": [{"file_exists": "etc/a"}, {"arch": ["x86_64"]}]}"#);
        assert_eq!(
            v,
            Verdict {
                holds: true,
                reason: "all 2 rules hold".into()
            }
        );
        let v = run(&format!(
            r#"{{"all": [{{"file_exists": "etc/a"}}, {{"file_exists": "etc/b"}}, {{"update_installed": "{id}"}}]}}"#
        ));
        assert_eq!(
            v,
            Verdict {
                holds: false,
                reason: "file_exists etc/b: not found".into()
            }
        );
        let v = run(&format!(
            r#"{{"any": [{{"file_exists": "etc/b"}}, {{"file_exists": "etc/a"}}, {{"update_installed": "{id}"}}]}}"#
        ));
        assert_eq!(
            v,
            Verdict {
                holds: true,
                reason: "file_exists etc/a: exists".into()
            }
        );
        let v = run(r#"{"any": [{"file_exists": "etc/b"}, {"arch": ["aarch64"]}]}"#);
        assert_eq!(
            v,
            Verdict {
                holds: false,
                reason: "none of 2 holds: file_exists etc/b: not found".into()
            }
        );
        let v = run(r#"{"not": {"file_exists": "etc/b"}}"#);
        assert_eq!(
            v,
            Verdict {
                holds: true,
                reason: "not (file_exists etc/b: not found)".into()
            }
        );
        let v = run(r#"{"not": {"not": {"file_exists": "etc/a"}}}"#);
        assert_eq!(
            v,
            Verdict {
                holds: true,
                reason: "not (not (file_exists etc/a: exists))".into()
            }
        );
        // update_installed came after the deciding child both times: never asked.
        assert_eq!(asked, 0);
    }

    #[test]
    fn display_is_compact() {
        let r = rule(
            r#"{"all": [{"arch": ["x86_64"]}, {"not": {"file_exists": "etc/x"}},
                {"any": [{"package": {"name": "libc6", "op": ">=", "version": "2.36"}},
                         {"os_release": {"field": "NAME", "op": "=", "value": "Debian GNU/Linux"}}]}]}"#,
        );
        assert_eq!(
            r.to_string(),
            r#"all(arch [x86_64], not(file_exists etc/x), any(package libc6 >= 2.36, os_release NAME = "Debian GNU/Linux"))"#
        );
        let r = rule(r#"{"file_version": {"path": "a b", "pattern": "x\ny"}}"#);
        assert_eq!(r.to_string(), r#"file_version "a b" /x\ny/"#);
        assert_eq!(
            Verdict {
                holds: false,
                reason: "why".into()
            }
            .to_string(),
            "does not hold: why"
        );
    }

    #[test]
    fn machine_caches_reads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Machine>();

        let dir = dpkg_root();
        let root = dir.path();
        write(root, "f", "hello");
        write(root, "etc/os-release", "VERSION_ID=1\n");
        let machine = Machine::new(root);
        let rules = [
            format!(r#"{{"file_sha256": {{"path": "f", "sha256": "{DIGEST_HELLO}"}}}}"#),
            r#"{"file_version": {"path": "f", "pattern": "^hello$"}}"#.to_owned(),
            r#"{"os_release": {"field": "VERSION_ID", "op": "=", "value": "1"}}"#.to_owned(),
            r#"{"package": {"name": "tilde"}}"#.to_owned(),
        ];
        for r in &rules {
            assert!(eval(&rule(r), &machine).holds, "{r}");
        }
        // Change everything: the machine keeps answering from what it read.
        write(root, "f", "bye");
        write(root, "etc/os-release", "VERSION_ID=2\n");
        write(root, DPKG_STATUS, "");
        for r in &rules {
            assert!(eval(&rule(r), &machine).holds, "cached: {r}");
            assert!(!check(root, r).holds, "fresh: {r}");
        }
        // The same file under a leading slash is the same cache entry.
        let slash = format!(r#"{{"file_sha256": {{"path": "/f", "sha256": "{DIGEST_HELLO}"}}}}"#);
        assert!(eval(&rule(&slash), &machine).holds);
    }

    #[test]
    fn unreadable_files_are_errors() {
        use std::os::unix::fs::PermissionsExt;

        let dir = tmp();
        let root = dir.path();
        // A symbolic-link loop cannot be read, even by root.
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        let machine = Machine::new(root);
        for json in [
            r#"{"file_exists": "loop"}"#.to_owned(),
            format!(r#"{{"file_sha256": {{"path": "loop", "sha256": "{DIGEST_HELLO}"}}}}"#),
            r#"{"file_version": {"path": "loop", "pattern": "x"}}"#.to_owned(),
        ] {
            let e = rule(&json)
                .evaluate(&machine, &mut |_| false)
                .expect_err(&json);
            assert!(matches!(e, Error::Io { .. }), "{json}: {e:?}");
            assert!(
                e.to_string()
                    .contains(&*root.join("loop").to_string_lossy()),
                "{e}"
            );
        }
        // An os-release or dpkg status file that exists but cannot be read is an error too.
        fs::create_dir_all(root.join("etc/os-release")).unwrap();
        fs::create_dir_all(root.join(DPKG_STATUS)).unwrap();
        let e = rule(r#"{"os_release": {"field": "ID", "op": "=", "value": "x"}}"#)
            .evaluate(&machine, &mut |_| false)
            .unwrap_err();
        assert!(e.to_string().starts_with("cannot read "), "{e}");
        assert!(e.to_string().contains("etc/os-release"), "{e}");
        let e = rule(r#"{"package": {"name": "x"}}"#)
            .evaluate(&machine, &mut |_| false)
            .unwrap_err();
        assert!(e.to_string().contains(DPKG_STATUS), "{e}");

        // Permission denied: only when not root (root reads through chmod 000).
        write(root, "secret", "hello");
        fs::set_permissions(root.join("secret"), fs::Permissions::from_mode(0o000)).unwrap();
        let r = rule(&format!(
            r#"{{"file_sha256": {{"path": "secret", "sha256": "{DIGEST_HELLO}"}}}}"#
        ));
        let result = r.evaluate(&Machine::new(root), &mut |_| false);
        if running_as_root() {
            assert!(result.unwrap().holds);
        } else {
            let e = result.unwrap_err();
            assert!(e.to_string().starts_with("cannot read "), "{e}");
            assert!(e.to_string().contains("secret"), "{e}");
        }
        // Existence alone needs no read permission.
        holds(
            root,
            r#"{"file_exists": "secret"}"#,
            "file_exists secret: exists",
        );
        fs::set_permissions(root.join("secret"), fs::Permissions::from_mode(0o644)).unwrap();
    }

    #[test]
    fn invalid_rules_evaluate_without_panicking() {
        let dir = tmp();
        let root = dir.path();
        let machine = Machine::new(root);
        let cases = [
            (
                Rule::FileExists("../etc".into()),
                "file_exists ../etc: invalid rule: the path \"../etc\" has a `..` component",
            ),
            (
                Rule::FileExists(String::new()),
                "file_exists \"\": invalid rule: the path \"\" is empty",
            ),
            (Rule::All(vec![]), "all 0 rules hold"),
            (Rule::Any(vec![]), "none of 0 holds: the list is empty"),
            (
                Rule::Package {
                    name: "x".into(),
                    op: Some(VersionOp::Ge),
                    version: None,
                },
                "package x >=: not installed (no var/lib/dpkg/status)",
            ),
        ];
        for (r, reason) in cases {
            let v = eval(&r, &machine);
            assert!(v.reason.starts_with(reason), "{r}: {}", v.reason);
        }
        let mut deep = Rule::FileExists("x".into());
        for _ in 0..40 {
            deep = Rule::Not(Box::new(deep));
        }
        let v = eval(&deep, &machine);
        assert!(
            v.reason.contains("nested more than 32 levels deep"),
            "{}",
            v.reason
        );
    }

    #[test]
    fn validation_accepts_good_rules() {
        let good = format!(
            r#"{{"all": [
                {{"file_exists": "/etc/demo.conf"}},
                {{"file_sha256": {{"path": "usr/bin/tool", "sha256": "{DIGEST_HELLO}"}}}},
                {{"file_version": {{"path": "opt/app/VERSION", "pattern": "^version=(\\S+)", "op": ">=", "version": "1.2"}}}},
                {{"file_version": {{"path": "./opt/app/VERSION", "pattern": "x"}}}},
                {{"os_release": {{"field": "VERSION_ID", "op": ">=", "value": "12"}}}},
                {{"os_release": {{"field": "NAME", "op": "=", "value": "Debian GNU/Linux"}}}},
                {{"any": [{{"arch": ["x86_64", "amd64", "i386", "arm64", "armhf", "ppc64el", "riscv64", "s390x"]}}]}},
                {{"not": {{"package": {{"name": "libc6:amd64", "op": ">=", "version": "1:2.36-9~deb12u1"}}}}}},
                {{"package": {{"name": "libc6"}}}},
                {{"update_installed": "{}"}}
            ]}}"#,
            Uuid::from_u128(3)
        );
        validate(&rule(&good)).unwrap();
        let mut deep = Rule::FileExists("x".into());
        for _ in 1..MAX_DEPTH {
            deep = Rule::Not(Box::new(deep));
        }
        validate(&deep).unwrap();
    }

    #[test]
    fn validation_refuses_each_bad_case() {
        let mut deep = Rule::FileExists("x".into());
        for _ in 0..MAX_DEPTH {
            deep = Rule::Not(Box::new(deep));
        }
        let e = validate(&deep).unwrap_err();
        assert!(e.contains("more than 32 levels deep; flatten it"), "{e}");

        invalid(
            r#"{"all": []}"#,
            "an empty `all` list; give it at least one rule",
        );
        invalid(r#"{"not": {"any": []}}"#, "an empty `any` list");
        invalid(
            r#"{"arch": []}"#,
            "arch []: an empty architecture list; name at least one",
        );
        invalid(
            r#"{"arch": ["x86_64", "vax"]}"#,
            "unknown architecture \"vax\"; write one of x86_64, amd64",
        );
        invalid(
            r#"{"file_exists": ""}"#,
            "the path \"\" is empty; write a path inside the target root",
        );
        invalid(r#"{"file_exists": "/"}"#, "the path \"/\" is empty");
        invalid(r#"{"file_exists": "./."}"#, "names the target root itself");
        invalid(r#"{"file_exists": "etc/../../x"}"#, "has a `..` component");
        invalid(
            r#"{"file_version": {"path": "..", "pattern": "x"}}"#,
            "file_version .. /x/: the path \"..\" has a `..` component",
        );
        invalid(
            r#"{"file_sha256": {"path": "a/../b", "sha256": "00"}}"#,
            "has a `..` component",
        );
        invalid(
            r#"{"file_sha256": {"path": "f", "sha256": "00"}}"#,
            "sha256 \"00\" is not 64 lower-case hex digits; write the file's SHA-256 digest",
        );
        invalid(
            &format!(
                r#"{{"file_sha256": {{"path": "f", "sha256": "{}"}}}}"#,
                DIGEST_HELLO.to_uppercase()
            ),
            "is not 64 lower-case hex digits",
        );
        invalid(
            r#"{"file_version": {"path": "f", "pattern": "x", "op": ">="}}"#,
            "`op` >= without `version`; give both",
        );
        invalid(
            r#"{"file_version": {"path": "f", "pattern": "x", "version": "1"}}"#,
            "`version` \"1\" without `op`; give both",
        );
        invalid(
            r#"{"package": {"name": "libc6", "version": "1"}}"#,
            "package libc6 1: `version` \"1\" without `op`",
        );
        invalid(
            r#"{"package": {"name": "libc6", "op": "<"}}"#,
            "`op` < without `version`",
        );
        invalid(
            r#"{"package": {"name": "libc6", "op": ">=", "version": "two point one"}}"#,
            "\"two point one\" is not a Debian version; write a Debian version",
        );
        invalid(
            r#"{"file_version": {"path": "f", "pattern": "x", "op": "=", "version": "1_0"}}"#,
            "\"1_0\" is not a Debian version",
        );
        invalid(
            r#"{"os_release": {"field": "VERSION_ID", "op": ">=", "value": "twelve!"}}"#,
            "\"twelve!\" is not a Debian version, and `>=` compares versions",
        );
        invalid(
            r#"{"package": {"name": ""}}"#,
            "package name \"\" is empty; write a Debian package name",
        );
        invalid(
            r#"{"package": {"name": ":amd64"}}"#,
            "package name \":amd64\" is empty",
        );
        invalid(
            r#"{"package": {"name": "libc6:"}}"#,
            "the architecture qualifier of \"libc6:\" is empty",
        );
        invalid(r#"{"package": {"name": "lib c6"}}"#, "contains white space");
        invalid(
            r#"{"os_release": {"field": "", "op": "=", "value": "x"}}"#,
            "field \"\" is not an os-release(5) field name; write one such as ID",
        );
        invalid(
            r#"{"os_release": {"field": "VERSION ID", "op": "=", "value": "x"}}"#,
            "is not an os-release(5) field name",
        );
        // = and != on os_release compare strings: any value is fine.
        validate(&rule(
            r#"{"os_release": {"field": "NAME", "op": "!=", "value": "x y!"}}"#,
        ))
        .unwrap();
    }

    #[test]
    fn referenced_updates_lists_each_id_once() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let r = Rule::Any(vec![
            Rule::UpdateInstalled(b),
            Rule::Not(Box::new(Rule::All(vec![
                Rule::UpdateInstalled(a),
                Rule::FileExists("x".into()),
                Rule::UpdateInstalled(b),
            ]))),
        ]);
        assert_eq!(referenced_updates(&r), [b, a]);
        assert!(referenced_updates(&Rule::Arch(vec!["x86".into()])).is_empty());
    }

    #[test]
    fn serde_shapes_and_unknown_fields() {
        let r = rule(
            r#"{"file_version": {"path": "opt/app/VERSION", "pattern": "^version=(\\S+)", "op": ">=", "version": "1.2"}}"#,
        );
        assert_eq!(
            r,
            Rule::FileVersion {
                path: "opt/app/VERSION".into(),
                pattern: Pattern::new(r"^version=(\S+)").unwrap(),
                op: Some(VersionOp::Ge),
                version: Some("1.2".into()),
            }
        );
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"file_version":{"path":"opt/app/VERSION","pattern":"^version=(\\S+)","op":">=","version":"1.2"}}"#
        );
        // Absent op and version are not written.
        let r = Rule::Package {
            name: "libc6".into(),
            op: None,
            version: None,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"package":{"name":"libc6"}}"#
        );
        let id = Uuid::from_u128(9);
        assert_eq!(
            serde_json::to_string(&Rule::Not(Box::new(Rule::UpdateInstalled(id)))).unwrap(),
            format!(r#"{{"not":{{"update_installed":"{id}"}}}}"#)
        );
        for op in ["=", "!=", "<", "<=", ">", ">="] {
            let parsed: VersionOp = serde_json::from_str(&format!("\"{op}\"")).unwrap();
            assert_eq!(parsed.as_str(), op);
            assert_eq!(serde_json::to_string(&parsed).unwrap(), format!("\"{op}\""));
        }
        assert_eq!(
            format!("{:?}", Pattern::new("a+").unwrap()),
            r#"Pattern("a+")"#
        );

        for (bad, needle) in [
            (
                r#"{"file_sha256": {"path": "f", "sha256": "00", "size": 1}}"#,
                "unknown field `size`",
            ),
            (
                r#"{"package": {"name": "x", "versoin": "1"}}"#,
                "unknown field `versoin`",
            ),
            (
                r#"{"os_release": {"field": "ID", "op": "=", "value": "x", "y": 1}}"#,
                "unknown field `y`",
            ),
            (r#"{"file_exist": "x"}"#, "unknown variant `file_exist`"),
            (r#"{"file_exists": "x", "arch": ["x86"]}"#, ""),
            (
                r#"{"os_release": {"field": "ID", "op": "==", "value": "x"}}"#,
                "unknown variant `==`",
            ),
            (r#"{"update_installed": "not-a-uuid"}"#, ""),
            (
                r#"{"file_version": {"path": "f", "pattern": "(unclosed"}}"#,
                "pattern \"(unclosed\" is not a valid regular expression",
            ),
        ] {
            let e = serde_json::from_str::<Rule>(bad)
                .expect_err(bad)
                .to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    fn arb_leaf() -> impl Strategy<Value = Rule> {
        let path = prop_oneof![
            Just("etc/demo.conf".to_owned()),
            Just("/etc/demo.conf".to_owned()),
            Just("etc".to_owned()),
            Just("missing/file".to_owned()),
            Just("etc/demo.conf/x".to_owned()),
            Just("../escape".to_owned()),
            Just(String::new()),
            "[a-z/.]{0,10}",
        ];
        let version = prop_oneof![
            Just("1.0".to_owned()),
            Just("1:1.0".to_owned()),
            Just("1.0~rc1".to_owned()),
            Just("2.36-9".to_owned()),
            Just("not a version".to_owned()),
            "[0-9a-z.:~+-]{0,8}",
            ".{0,6}",
        ];
        let op = prop_oneof![
            Just(VersionOp::Eq),
            Just(VersionOp::Ne),
            Just(VersionOp::Lt),
            Just(VersionOp::Le),
            Just(VersionOp::Gt),
            Just(VersionOp::Ge),
        ];
        let pattern = prop_oneof![
            Just(r"^version=(\S+)"),
            Just(r"\d+"),
            Just("demo"),
            Just("(a)|b"),
            Just("^$"),
        ]
        .prop_map(|s| Pattern::new(s).unwrap());
        let arch = prop_oneof![
            Just("x86_64".to_owned()),
            Just("arm64".to_owned()),
            Just("i386".to_owned()),
            "[a-z0-9_]{0,8}",
        ];
        let name = prop_oneof![
            Just("libc6".to_owned()),
            Just("libc6:amd64".to_owned()),
            Just("libc6:".to_owned()),
            Just("tilde".to_owned()),
            ".{0,8}",
        ];
        let field = prop_oneof![
            Just("ID".to_owned()),
            Just("VERSION_ID".to_owned()),
            ".{0,6}"
        ];
        let sha = prop_oneof![Just(DIGEST_HELLO.to_owned()), "[0-9a-f]{64}", ".{0,8}"];
        let opt_op = proptest::option::of(op.clone());
        let opt_version = proptest::option::of(version.clone());
        prop_oneof![
            path.clone().prop_map(Rule::FileExists),
            (path.clone(), sha).prop_map(|(path, sha256)| Rule::FileSha256 { path, sha256 }),
            (path, pattern, opt_op.clone(), opt_version.clone()).prop_map(
                |(path, pattern, op, version)| Rule::FileVersion {
                    path,
                    pattern,
                    op,
                    version
                }
            ),
            (field, op, version).prop_map(|(field, op, value)| Rule::OsRelease {
                field,
                op,
                value
            }),
            proptest::collection::vec(arch, 0..3).prop_map(Rule::Arch),
            (name, opt_op, opt_version).prop_map(|(name, op, version)| Rule::Package {
                name,
                op,
                version
            }),
            (0u128..4).prop_map(|n| Rule::UpdateInstalled(Uuid::from_u128(n))),
        ]
    }

    fn arb_rule() -> impl Strategy<Value = Rule> {
        arb_leaf().prop_recursive(5, 48, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Rule::All),
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Rule::Any),
                inner.prop_map(|r| Rule::Not(Box::new(r))),
            ]
        })
    }

    proptest! {
        /// Any rule tree serializes and deserializes back equal; validating and evaluating it
        /// never panics, and `not` always flips the outcome.
        #[test]
        fn rules_round_trip_and_evaluate(r in arb_rule()) {
            let json = serde_json::to_string(&r).unwrap();
            let back: Rule = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(&back, &r);
            let _ = validate(&r);
            prop_assert!(!r.to_string().is_empty());

            let dir = tmp();
            let root = dir.path();
            write(root, "etc/demo.conf", "version=1.0\n");
            write(root, "etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n");
            write(root, DPKG_STATUS, STATUS);
            let machine = Machine::new(root);
            let mut installed = |id: Uuid| id.as_u128().is_multiple_of(2);
            let verdict = r.evaluate(&machine, &mut installed).unwrap();
            prop_assert!(!verdict.reason.is_empty());
            let negated = Rule::Not(Box::new(r.clone())).evaluate(&machine, &mut installed).unwrap();
            prop_assert_eq!(negated.holds, !verdict.holds);
            prop_assert_eq!(negated.reason, format!("not ({})", verdict.reason));
        }
    }
}

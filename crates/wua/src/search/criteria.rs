//! The search-criteria language of `IUpdateSearcher::Search` (`iupdatesearcher-search`,
//! DIGEST §5.3, §10 items 12–15).
//!
//! A criteria string is an OR of AND-groups of criteria, each `Name op Value`:
//!
//! ```
//! use wua::search::criteria::parse;
//!
//! let c = parse("(IsInstalled = 0 and Type = 'Software') or CategoryIDs contains \
//!                '0fa1201d-4330-4fa8-8ae9-b877473b6441'")?;
//! assert_eq!(c.groups.len(), 2);
//! assert_eq!(
//!     c.to_string(),
//!     "(IsInstalled = 0 and Type = 'Software') or \
//!      (CategoryIDs contains '0fa1201d-4330-4fa8-8ae9-b877473b6441')"
//! );
//! # Ok::<(), wua::Error>(())
//! ```
//!
//! Rules (`iupdatesearcher-search` and DIGEST §10):
//!
//! * `or` only at the top level; parentheses wrap an AND-group or a single criterion, and
//!   never contain `or`.
//! * Keywords (`and`, `or`, `contains`) and property names are case-insensitive; whitespace
//!   between tokens is optional.
//! * Strings are in single quotes, with `''` for a quote inside ([`escape_string`]); integers
//!   are base 10 with an optional leading `-`.
//! * `!=` only with `Type` and `UpdateID` (§10.12); `contains` only with `CategoryIDs`;
//!   `RevisionNumber` only in an AND-group that also has `UpdateID =` and no `UpdateID !=`.
//! * An empty criteria string means WUA's default, `IsInstalled = 0 and IsHidden = 0`.
//!
//! Every error is `WU_E_INVALID_CRITERIA`, with a message giving the 0-based character position
//! and what was expected and found.

use std::fmt;

use uuid::Uuid;

use crate::error::Error;
use crate::hresult::WU_E_INVALID_CRITERIA;
use crate::model::{DeploymentAction, UpdateType};

/// A parsed criteria string: an OR of [`AndGroup`]s (`iupdatesearcher-search`).
///
/// `Display` prints a canonical criteria string that [`parse`]s back to an equal value (for any
/// value `parse` can produce: at least one group, each with at least one term).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Criteria {
    /// The AND-groups; an update matches if any group matches.
    pub groups: Vec<AndGroup>,
}

/// An AND-group of criteria: an update matches if every term holds and its deployment action
/// is the group's [`AndGroup::deployment_action`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AndGroup {
    /// The criteria, in source order (parenthesised AND-groups are flattened into their parent).
    pub terms: Vec<Term>,
}

/// One criterion, `Name op Value`, in the page's table order (`iupdatesearcher-search`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Term {
    /// `Type = 'Software' | 'Driver'`, or `Type != …` when `negated`.
    Type {
        /// True for `!=`.
        negated: bool,
        /// The update type compared with.
        value: UpdateType,
    },
    /// `DeploymentAction = 'Installation' | 'Uninstallation' | 'Detection' |
    /// 'OptionalInstallation'` (§10.14).
    DeploymentAction(DeploymentAction),
    /// `IsAssigned = 0 | 1`: intended for deployment by Automatic Updates.
    IsAssigned(bool),
    /// `BrowseOnly = 0 | 1`: considered optional.
    BrowseOnly(bool),
    /// `AutoSelectOnWebSites = 0 | 1`.
    AutoSelectOnWebSites(bool),
    /// `UpdateID = '<uuid>'`, or `UpdateID != '<uuid>'` when `negated`.
    UpdateId {
        /// True for `!=`.
        negated: bool,
        /// The update ID compared with.
        id: Uuid,
    },
    /// `RevisionNumber = n`; only in a group that also has `UpdateID =`.
    RevisionNumber(i32),
    /// `CategoryIDs contains '<uuid>'`: the update belongs to the category.
    CategoryId(Uuid),
    /// `IsInstalled = 0 | 1`.
    IsInstalled(bool),
    /// `IsHidden = 0 | 1`.
    IsHidden(bool),
    /// `IsPresent = 0 | 1`: installed for one or more of the products it applies to.
    IsPresent(bool),
    /// `RebootRequired = 0 | 1`.
    RebootRequired(bool),
}

/// What the evaluator needs to know about an update to decide whether criteria match it.
///
/// Each method answers the property of the same name in the criteria table of
/// `iupdatesearcher-search`.
pub trait Facts {
    /// `Type`.
    fn update_type(&self) -> UpdateType;
    /// `DeploymentAction`.
    fn deployment_action(&self) -> DeploymentAction;
    /// `IsAssigned`.
    fn is_assigned(&self) -> bool;
    /// `BrowseOnly`.
    fn browse_only(&self) -> bool;
    /// `AutoSelectOnWebSites`.
    fn auto_select_on_web_sites(&self) -> bool;
    /// `Identity.UpdateID`.
    fn update_id(&self) -> Uuid;
    /// `Identity.RevisionNumber`.
    fn revision_number(&self) -> i32;
    /// The update belongs to this category (`CategoryIDs contains`).
    fn in_category(&self, id: Uuid) -> bool;
    /// `IsInstalled`.
    fn is_installed(&self) -> bool;
    /// `IsHidden`.
    fn is_hidden(&self) -> bool;
    /// `IsPresent`.
    fn is_present(&self) -> bool;
    /// `RebootRequired`.
    fn reboot_required(&self) -> bool;
}

impl Criteria {
    /// WUA's default criteria, used for an empty criteria string:
    /// `IsInstalled = 0 and IsHidden = 0` (`iupdatesearcher-search`).
    pub fn default_search() -> Self {
        Criteria {
            groups: vec![AndGroup {
                terms: vec![Term::IsInstalled(false), Term::IsHidden(false)],
            }],
        }
    }

    /// True if any AND-group matches the update: all of its terms hold and the update's
    /// deployment action is the group's [`AndGroup::deployment_action`] (§10.15).
    pub fn matches(&self, f: &impl Facts) -> bool {
        self.groups.iter().any(|g| g.matches(f))
    }
}

impl AndGroup {
    /// The group's `DeploymentAction` term, or `Installation`, which every AND-group without
    /// one implies (`iupdatesearcher-search`, DIGEST §10.15).
    pub fn deployment_action(&self) -> DeploymentAction {
        self.terms
            .iter()
            .find_map(|t| match t {
                Term::DeploymentAction(d) => Some(*d),
                _ => None,
            })
            .unwrap_or(DeploymentAction::Installation)
    }

    /// True if every term holds for the update and its deployment action is the group's.
    pub fn matches(&self, f: &impl Facts) -> bool {
        self.first_unmet(f).is_none()
    }

    /// The first criterion of this group the update does not meet, in evaluation order (the
    /// implied deployment action first), or `None` if the group matches. `--explain` reports it.
    pub fn first_unmet(&self, f: &impl Facts) -> Option<Unmet<'_>> {
        let wanted = self.deployment_action();
        if wanted != f.deployment_action() {
            let implied = !self
                .terms
                .iter()
                .any(|t| matches!(t, Term::DeploymentAction(_)));
            if implied {
                return Some(Unmet::ImpliedDeploymentAction(wanted));
            }
        }
        self.terms.iter().find(|t| !t.holds(f)).map(Unmet::Term)
    }
}

/// A criterion an update does not meet ([`AndGroup::first_unmet`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unmet<'a> {
    /// The group has no `DeploymentAction` term, so it implies this one (DIGEST §10.15), and the
    /// update is deployed for another action.
    ImpliedDeploymentAction(DeploymentAction),
    /// This term of the group does not hold.
    Term(&'a Term),
}

impl fmt::Display for Unmet<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unmet::ImpliedDeploymentAction(d) => {
                write!(f, "DeploymentAction = '{d}' (implied)")
            }
            Unmet::Term(t) => write!(f, "{t}"),
        }
    }
}

impl Term {
    /// True if this single criterion holds for the update.
    pub fn holds(&self, f: &impl Facts) -> bool {
        match *self {
            Term::Type { negated, value } => (f.update_type() == value) != negated,
            Term::DeploymentAction(d) => f.deployment_action() == d,
            Term::IsAssigned(b) => f.is_assigned() == b,
            Term::BrowseOnly(b) => f.browse_only() == b,
            Term::AutoSelectOnWebSites(b) => f.auto_select_on_web_sites() == b,
            Term::UpdateId { negated, id } => (f.update_id() == id) != negated,
            Term::RevisionNumber(n) => f.revision_number() == n,
            Term::CategoryId(id) => f.in_category(id),
            Term::IsInstalled(b) => f.is_installed() == b,
            Term::IsHidden(b) => f.is_hidden() == b,
            Term::IsPresent(b) => f.is_present() == b,
            Term::RebootRequired(b) => f.reboot_required() == b,
        }
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = |v: bool| u8::from(v);
        let ne = |n: bool| if n { "!=" } else { "=" };
        match self {
            Term::Type { negated, value } => write!(f, "Type {} '{value}'", ne(*negated)),
            Term::DeploymentAction(d) => write!(f, "DeploymentAction = '{d}'"),
            Term::IsAssigned(v) => write!(f, "IsAssigned = {}", b(*v)),
            Term::BrowseOnly(v) => write!(f, "BrowseOnly = {}", b(*v)),
            Term::AutoSelectOnWebSites(v) => write!(f, "AutoSelectOnWebSites = {}", b(*v)),
            Term::UpdateId { negated, id } => write!(f, "UpdateID {} '{id}'", ne(*negated)),
            Term::RevisionNumber(n) => write!(f, "RevisionNumber = {n}"),
            Term::CategoryId(id) => write!(f, "CategoryIDs contains '{id}'"),
            Term::IsInstalled(v) => write!(f, "IsInstalled = {}", b(*v)),
            Term::IsHidden(v) => write!(f, "IsHidden = {}", b(*v)),
            Term::IsPresent(v) => write!(f, "IsPresent = {}", b(*v)),
            Term::RebootRequired(v) => write!(f, "RebootRequired = {}", b(*v)),
        }
    }
}

impl fmt::Display for AndGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(" and ")?;
            }
            write!(f, "{t}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Criteria {
    /// One group prints bare; several print as parenthesised groups joined by ` or `.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let [only] = self.groups.as_slice() {
            return write!(f, "{only}");
        }
        for (i, g) in self.groups.iter().enumerate() {
            if i > 0 {
                f.write_str(" or ")?;
            }
            write!(f, "({g})")?;
        }
        Ok(())
    }
}

/// `EscapeString`: escapes `s` for use inside a single-quoted criteria string by doubling each
/// single quote (DIGEST §10.13; the page `iupdatesearcher-escapestring` gives no rules).
///
/// `format!("'{}'", escape_string(s))` is a string literal that [`parse`] reads back as `s`.
pub fn escape_string(s: &str) -> String {
    s.replace('\'', "''")
}

/// Parses a criteria string for `IUpdateSearcher::Search` (`iupdatesearcher-search`).
///
/// An empty or whitespace-only string gives WUA's default, [`Criteria::default_search`]. Any
/// other invalid string fails with `WU_E_INVALID_CRITERIA`, whose message gives the 0-based
/// character position and what was expected and found.
pub fn parse(criteria: &str) -> Result<Criteria, Error> {
    if criteria.trim().is_empty() {
        return Ok(Criteria::default_search());
    }
    let mut p = Parser {
        chars: criteria.chars().collect(),
        pos: 0,
        peeked: None,
    };
    let mut groups = vec![p.group(true)?];
    loop {
        let tok = p.peek()?;
        match &tok.kind {
            Tok::End => break,
            Tok::Ident(w) if w.eq_ignore_ascii_case("or") => {
                p.bump();
                groups.push(p.group(true)?);
            }
            _ => return Err(p.expected(&tok, "'and', 'or' or the end of the criteria")),
        }
    }
    Ok(Criteria { groups })
}

fn invalid(at: usize, what: impl fmt::Display) -> Error {
    Error::code(
        WU_E_INVALID_CRITERIA,
        format!("invalid search criteria at position {at}: {what}"),
    )
}

#[derive(Clone, Debug)]
enum Tok {
    Ident(String),
    Int(i64),
    Str(String),
    LParen,
    RParen,
    Eq,
    Ne,
    End,
}

#[derive(Clone, Debug)]
struct Token {
    kind: Tok,
    at: usize,
    text: String,
}

impl Token {
    fn found(&self) -> String {
        if matches!(self.kind, Tok::End) {
            return "the end of the criteria".into();
        }
        let mut shown: String = self.text.chars().take(40).collect();
        if shown.len() < self.text.len() {
            shown.push('…');
        }
        if matches!(self.kind, Tok::Str(_)) {
            format!("the string {shown}")
        } else {
            format!("'{shown}'")
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Prop {
    Type,
    DeploymentAction,
    IsAssigned,
    BrowseOnly,
    AutoSelectOnWebSites,
    UpdateId,
    RevisionNumber,
    CategoryIds,
    IsInstalled,
    IsHidden,
    IsPresent,
    RebootRequired,
}

const PROPS: &[(&str, Prop)] = &[
    ("Type", Prop::Type),
    ("DeploymentAction", Prop::DeploymentAction),
    ("IsAssigned", Prop::IsAssigned),
    ("BrowseOnly", Prop::BrowseOnly),
    ("AutoSelectOnWebSites", Prop::AutoSelectOnWebSites),
    ("UpdateID", Prop::UpdateId),
    ("RevisionNumber", Prop::RevisionNumber),
    ("CategoryIDs", Prop::CategoryIds),
    ("IsInstalled", Prop::IsInstalled),
    ("IsHidden", Prop::IsHidden),
    ("IsPresent", Prop::IsPresent),
    ("RebootRequired", Prop::RebootRequired),
];

const PROP_LIST: &str = "Type, DeploymentAction, IsAssigned, BrowseOnly, AutoSelectOnWebSites, \
                         UpdateID, RevisionNumber, CategoryIDs, IsInstalled, IsHidden, IsPresent \
                         or RebootRequired";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Contains,
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    peeked: Option<Token>,
}

impl Parser {
    fn peek(&mut self) -> Result<Token, Error> {
        if self.peeked.is_none() {
            self.peeked = Some(self.lex()?);
        }
        Ok(self.peeked.clone().expect("just set"))
    }

    fn bump(&mut self) {
        self.peeked = None;
    }

    fn next(&mut self) -> Result<Token, Error> {
        let t = self.peek()?;
        self.bump();
        Ok(t)
    }

    fn expected(&self, tok: &Token, what: &str) -> Error {
        invalid(
            tok.at,
            format_args!("expected {what}, found {}", tok.found()),
        )
    }

    fn lex(&mut self) -> Result<Token, Error> {
        let c = &self.chars;
        while self.pos < c.len() && c[self.pos].is_whitespace() {
            self.pos += 1;
        }
        let at = self.pos;
        let Some(&first) = c.get(at) else {
            return Ok(Token {
                kind: Tok::End,
                at,
                text: String::new(),
            });
        };
        let word = |from: usize| {
            let mut end = from;
            while end < c.len() && (c[end].is_alphanumeric() || c[end] == '_') {
                end += 1;
            }
            end
        };
        let (kind, end) = match first {
            '(' => (Tok::LParen, at + 1),
            ')' => (Tok::RParen, at + 1),
            '=' => (Tok::Eq, at + 1),
            '!' if c.get(at + 1) == Some(&'=') => (Tok::Ne, at + 2),
            '\'' => {
                let mut s = String::new();
                let mut i = at + 1;
                loop {
                    match c.get(i) {
                        None => {
                            return Err(invalid(
                                at,
                                "unterminated string: close it with ' (write '' for a quote \
                                 inside it)",
                            ));
                        }
                        Some('\'') if c.get(i + 1) == Some(&'\'') => {
                            s.push('\'');
                            i += 2;
                        }
                        Some('\'') => break,
                        Some(&ch) => {
                            s.push(ch);
                            i += 1;
                        }
                    }
                }
                (Tok::Str(s), i + 1)
            }
            '-' | '0'..='9' => {
                let digits_from = if first == '-' { at + 1 } else { at };
                let end = word(digits_from);
                let text: String = c[at..end].iter().collect();
                let digits = &c[digits_from..end];
                if digits.is_empty() || !digits.iter().all(|d| d.is_ascii_digit()) {
                    return Err(invalid(
                        at,
                        format_args!(
                            "expected an integer (base 10, optional leading -), found '{text}'"
                        ),
                    ));
                }
                match text.parse::<i64>() {
                    Ok(n) => (Tok::Int(n), end),
                    Err(_) => {
                        return Err(invalid(
                            at,
                            format_args!("integer '{text}' is out of range"),
                        ));
                    }
                }
            }
            ch if ch.is_alphabetic() || ch == '_' => {
                let end = word(at);
                (Tok::Ident(c[at..end].iter().collect()), end)
            }
            other => {
                return Err(invalid(
                    at,
                    format_args!(
                        "unexpected character '{other}' (expected a property name, an \
                         operator, a value, 'and', 'or' or a parenthesis)"
                    ),
                ));
            }
        };
        let text = c[at..end].iter().collect();
        self.pos = end;
        Ok(Token { kind, at, text })
    }

    /// An AND-group; `top` is false inside parentheses, where `or` is not allowed.
    fn group(&mut self, top: bool) -> Result<AndGroup, Error> {
        let mut terms = Vec::new();
        self.items(top, &mut terms)?;
        validate_revision(&terms)?;
        Ok(AndGroup {
            terms: terms.into_iter().map(|(_, t)| t).collect(),
        })
    }

    fn items(&mut self, top: bool, terms: &mut Vec<(usize, Term)>) -> Result<(), Error> {
        self.item(terms)?;
        loop {
            let tok = self.peek()?;
            match &tok.kind {
                Tok::Ident(w) if w.eq_ignore_ascii_case("and") => {
                    self.bump();
                    self.item(terms)?;
                }
                Tok::Ident(w) if !top && w.eq_ignore_ascii_case("or") => {
                    return Err(invalid(
                        tok.at,
                        "'or' is allowed only at the top level, not inside parentheses \
                         (write (a and b) or (c and d))",
                    ));
                }
                _ => return Ok(()),
            }
        }
    }

    fn item(&mut self, terms: &mut Vec<(usize, Term)>) -> Result<(), Error> {
        let tok = self.peek()?;
        if !matches!(tok.kind, Tok::LParen) {
            let term = self.criterion()?;
            terms.push((tok.at, term));
            return Ok(());
        }
        self.bump();
        let inner = self.peek()?;
        if matches!(inner.kind, Tok::RParen) {
            return Err(self.expected(&inner, "a criterion inside the parentheses"));
        }
        self.items(false, terms)?;
        let close = self.next()?;
        if !matches!(close.kind, Tok::RParen) {
            return Err(self.expected(&close, "'and' or ')'"));
        }
        Ok(())
    }

    fn criterion(&mut self) -> Result<Term, Error> {
        let name = self.next()?;
        let prop = match &name.kind {
            Tok::Ident(w) => PROPS
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(w))
                .map(|&(_, p)| p)
                .ok_or_else(|| {
                    invalid(
                        name.at,
                        format_args!("unknown property '{w}' (expected {PROP_LIST})"),
                    )
                })?,
            _ => {
                return Err(self.expected(&name, &format!("a property name ({PROP_LIST})")));
            }
        };
        let prop_name = PROPS.iter().find(|(_, p)| *p == prop).expect("listed").0;
        let op_tok = self.next()?;
        let op = match &op_tok.kind {
            Tok::Eq => Op::Eq,
            Tok::Ne => Op::Ne,
            Tok::Ident(w) if w.eq_ignore_ascii_case("contains") => Op::Contains,
            _ => return Err(self.expected(&op_tok, "an operator (=, != or contains)")),
        };
        let allowed = match prop {
            Prop::Type | Prop::UpdateId => op != Op::Contains,
            Prop::CategoryIds => op == Op::Contains,
            _ => op == Op::Eq,
        };
        if !allowed {
            let ok = match prop {
                Prop::Type | Prop::UpdateId => "= or !=",
                Prop::CategoryIds => "contains",
                _ => "=",
            };
            return Err(invalid(
                op_tok.at,
                format_args!(
                    "operator '{}' cannot be used with {prop_name} (it takes {ok})",
                    op_tok.text
                ),
            ));
        }
        let negated = op == Op::Ne;
        let value = self.next()?;
        let string = |what: &str| match &value.kind {
            Tok::Str(s) => Ok(s.clone()),
            _ => Err(self.expected(&value, &format!("{what} for {prop_name}"))),
        };
        let uuid = |what: &str| {
            let s = string(what)?;
            Uuid::parse_str(&s).map_err(|e| {
                invalid(
                    value.at,
                    format_args!("{prop_name} needs a UUID, found '{s}': {e}"),
                )
            })
        };
        let flag = || match value.kind {
            Tok::Int(0) => Ok(false),
            Tok::Int(1) => Ok(true),
            _ => Err(self.expected(&value, &format!("0 or 1 for {prop_name}"))),
        };
        Ok(match prop {
            Prop::Type => {
                let s = string("'Software' or 'Driver'")?;
                let value_type = UpdateType::ALL
                    .iter()
                    .copied()
                    .find(|t| t.to_string().eq_ignore_ascii_case(&s))
                    .ok_or_else(|| {
                        invalid(
                            value.at,
                            format_args!("Type must be 'Software' or 'Driver', found '{s}'"),
                        )
                    })?;
                Term::Type {
                    negated,
                    value: value_type,
                }
            }
            Prop::DeploymentAction => {
                let s = string(
                    "'Installation', 'Uninstallation', 'Detection' or 'OptionalInstallation'",
                )?;
                let action = DeploymentAction::ALL
                    .iter()
                    .copied()
                    .filter(|d| *d != DeploymentAction::None)
                    .find(|d| d.to_string().eq_ignore_ascii_case(&s))
                    .ok_or_else(|| {
                        invalid(
                            value.at,
                            format_args!(
                                "DeploymentAction must be 'Installation', 'Uninstallation', \
                                 'Detection' or 'OptionalInstallation', found '{s}'"
                            ),
                        )
                    })?;
                Term::DeploymentAction(action)
            }
            Prop::IsAssigned => Term::IsAssigned(flag()?),
            Prop::BrowseOnly => Term::BrowseOnly(flag()?),
            Prop::AutoSelectOnWebSites => Term::AutoSelectOnWebSites(flag()?),
            Prop::UpdateId => Term::UpdateId {
                negated,
                id: uuid("a quoted UUID")?,
            },
            Prop::RevisionNumber => match value.kind {
                Tok::Int(n) => Term::RevisionNumber(i32::try_from(n).map_err(|_| {
                    invalid(value.at, format_args!("RevisionNumber {n} is out of range"))
                })?),
                _ => return Err(self.expected(&value, "an integer for RevisionNumber")),
            },
            Prop::CategoryIds => Term::CategoryId(uuid("a quoted UUID")?),
            Prop::IsInstalled => Term::IsInstalled(flag()?),
            Prop::IsHidden => Term::IsHidden(flag()?),
            Prop::IsPresent => Term::IsPresent(flag()?),
            Prop::RebootRequired => Term::RebootRequired(flag()?),
        })
    }
}

/// `RevisionNumber` must be combined with `UpdateID =`, never with `UpdateID !=`
/// (`iupdatesearcher-search`).
fn validate_revision(terms: &[(usize, Term)]) -> Result<(), Error> {
    let Some(at) = terms
        .iter()
        .find(|(_, t)| matches!(t, Term::RevisionNumber(_)))
        .map(|(at, _)| *at)
    else {
        return Ok(());
    };
    if let Some((ne_at, _)) = terms
        .iter()
        .find(|(_, t)| matches!(t, Term::UpdateId { negated: true, .. }))
    {
        return Err(invalid(
            at,
            format_args!(
                "RevisionNumber cannot be combined with UpdateID != (at position {ne_at}); \
                 use UpdateID = '<id>' and RevisionNumber = n"
            ),
        ));
    }
    if !terms
        .iter()
        .any(|(_, t)| matches!(t, Term::UpdateId { negated: false, .. }))
    {
        return Err(invalid(
            at,
            "RevisionNumber must be combined with an UpdateID = '<id>' criterion in the same \
             AND-group",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::hresult::WU_E_INVALID_CRITERIA;

    const ID: &str = "12345678-9abc-def0-1234-56789abcdef0";
    const CAT: &str = "0fa1201d-4330-4fa8-8ae9-b877473b6441";

    fn id() -> Uuid {
        Uuid::parse_str(ID).unwrap()
    }

    fn one(s: &str) -> Vec<Term> {
        let c = parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(c.groups.len(), 1, "{s}");
        c.groups.into_iter().next().unwrap().terms
    }

    /// Asserts `s` is rejected with WU_E_INVALID_CRITERIA at `pos`, with `needle` in the message.
    fn rejects(s: &str, pos: usize, needle: &str) {
        let e = parse(s).expect_err(s);
        assert_eq!(e.hresult(), WU_E_INVALID_CRITERIA, "{s}: {e}");
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("at position {pos}:")),
            "{s}: expected position {pos} in {msg}"
        );
        assert!(msg.contains(needle), "{s}: expected {needle:?} in {msg}");
    }

    #[test]
    fn every_criterion_and_operator() {
        let cases: Vec<(String, Term)> = vec![
            (
                "Type='Software'".into(),
                Term::Type {
                    negated: false,
                    value: UpdateType::Software,
                },
            ),
            (
                "Type!='Driver'".into(),
                Term::Type {
                    negated: true,
                    value: UpdateType::Driver,
                },
            ),
            (
                "DeploymentAction='Installation'".into(),
                Term::DeploymentAction(DeploymentAction::Installation),
            ),
            (
                "DeploymentAction='Uninstallation'".into(),
                Term::DeploymentAction(DeploymentAction::Uninstallation),
            ),
            (
                "DeploymentAction='Detection'".into(),
                Term::DeploymentAction(DeploymentAction::Detection),
            ),
            (
                "DeploymentAction='OptionalInstallation'".into(),
                Term::DeploymentAction(DeploymentAction::OptionalInstallation),
            ),
            ("IsAssigned=1".into(), Term::IsAssigned(true)),
            ("BrowseOnly=0".into(), Term::BrowseOnly(false)),
            (
                "AutoSelectOnWebSites = 1".into(),
                Term::AutoSelectOnWebSites(true),
            ),
            (
                format!("UpdateID='{ID}'"),
                Term::UpdateId {
                    negated: false,
                    id: id(),
                },
            ),
            (
                format!("UpdateID!='{ID}'"),
                Term::UpdateId {
                    negated: true,
                    id: id(),
                },
            ),
            (
                format!("CategoryIDs contains '{CAT}'"),
                Term::CategoryId(Uuid::parse_str(CAT).unwrap()),
            ),
            ("IsInstalled=1".into(), Term::IsInstalled(true)),
            ("IsHidden=0".into(), Term::IsHidden(false)),
            ("IsPresent=1".into(), Term::IsPresent(true)),
            ("RebootRequired=1".into(), Term::RebootRequired(true)),
        ];
        for (s, term) in cases {
            assert_eq!(one(&s), vec![term.clone()], "{s}");
            assert_eq!(one(&term.to_string()), vec![term], "{s}");
        }
        assert_eq!(
            one(&format!("UpdateID='{ID}' and RevisionNumber=-100")),
            vec![
                Term::UpdateId {
                    negated: false,
                    id: id()
                },
                Term::RevisionNumber(-100)
            ]
        );
    }

    #[test]
    fn keywords_names_and_values_are_case_insensitive() {
        let a = parse(&format!(
            "ISINSTALLED = 0 AND type = 'software' Or categoryids CONTAINS '{CAT}' aNd \
             deploymentaction = 'UNINSTALLATION'"
        ))
        .unwrap();
        let b = parse(&format!(
            "IsInstalled = 0 and Type = 'Software' or CategoryIDs contains '{CAT}' and \
             DeploymentAction = 'Uninstallation'"
        ))
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.groups.len(), 2);
        assert_eq!(
            one(&format!("updateid='{}'", ID.to_uppercase())),
            vec![Term::UpdateId {
                negated: false,
                id: id()
            }]
        );
    }

    #[test]
    fn whitespace_is_flexible() {
        let want = one("IsInstalled = 0 and IsHidden = 0");
        for s in [
            "IsInstalled=0 and IsHidden=0",
            "  IsInstalled\t=\n0   and\tIsHidden =0  ",
            "(IsInstalled=0)and(IsHidden=0)",
            "( IsInstalled = 0 and IsHidden = 0 )",
        ] {
            assert_eq!(one(s), want, "{s}");
        }
    }

    #[test]
    fn parentheses_forms() {
        let flat = one("IsInstalled=0 and IsHidden=0 and IsPresent=1");
        for s in [
            "(IsInstalled=0 and IsHidden=0 and IsPresent=1)",
            "(IsInstalled=0) and (IsHidden=0) and (IsPresent=1)",
            "((IsInstalled=0 and IsHidden=0)) and IsPresent=1",
            "IsInstalled=0 and (IsHidden=0 and (IsPresent=1))",
            "(((IsInstalled=0))) and IsHidden=0 and IsPresent=1",
        ] {
            assert_eq!(one(s), flat, "{s}");
        }
        let c = parse("(IsInstalled=0 and IsHidden=0) or (Type='Driver') or IsPresent=1").unwrap();
        assert_eq!(c.groups.len(), 3);
        assert_eq!(
            c.groups[1].terms,
            vec![Term::Type {
                negated: false,
                value: UpdateType::Driver
            }]
        );
    }

    #[test]
    fn documented_examples_parse() {
        for s in [
            "IsInstalled=0 and Type='Software' and IsHidden=0",
            "Type='Software'",
            "UpdateID='12345678-9abc-def0-1234-56789abcdef0'",
            "UpdateID!='12345678-9abc-def0-1234-56789abcdef0'",
            "UpdateID='12345678-9abc-def0-1234-56789abcdef0' and RevisionNumber=100",
            "AutoSelectOnWebSites = 1",
            "IsAssigned=1",
            "BrowseOnly=1",
            "DeploymentAction='Uninstallation'",
            "IsPresent=1",
            "RebootRequired=1",
            "( IsInstalled = 0 and IsHidden = 0 )",
            "( IsHidden = 1 )",
            "(IsInstalled=0 and IsHidden=0) or (IsPresent=1)",
        ] {
            let c = parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(parse(&c.to_string()).unwrap(), c, "{s}");
        }
    }

    #[test]
    fn empty_criteria_is_the_default_search() {
        for s in ["", "   ", "\t\n"] {
            assert_eq!(parse(s).unwrap(), Criteria::default_search());
        }
        assert_eq!(
            Criteria::default_search(),
            parse("IsInstalled = 0 and IsHidden = 0").unwrap()
        );
    }

    #[test]
    fn rejections_carry_the_code_and_position() {
        rejects(
            "(IsInstalled=0) and (IsHidden=0 or IsPresent=1)",
            32,
            "'or' is allowed only at the top level",
        );
        rejects("(IsInstalled=0 or IsHidden=0)", 15, "only at the top level");
        rejects(
            "IsInstalled=0 and Colour='red'",
            18,
            "unknown property 'Colour'",
        );
        rejects(
            "Type contains 'Software'",
            5,
            "operator 'contains' cannot be used with Type",
        );
        rejects(
            "IsInstalled contains 1",
            12,
            "cannot be used with IsInstalled",
        );
        rejects(&format!("CategoryIDs = '{CAT}'"), 12, "it takes contains");
        rejects(
            "IsInstalled != 0",
            12,
            "operator '!=' cannot be used with IsInstalled",
        );
        rejects("DeploymentAction != 'Installation'", 17, "'!='");
        rejects("RevisionNumber=1", 0, "must be combined with an UpdateID =");
        rejects(
            &format!("IsHidden=0 and RevisionNumber=1 or UpdateID='{ID}'"),
            15,
            "must be combined",
        );
        rejects(
            &format!("UpdateID!='{ID}' and RevisionNumber=1"),
            53,
            "cannot be combined with UpdateID !=",
        );
        rejects("UpdateID='not-a-uuid'", 9, "needs a UUID");
        rejects("CategoryIDs contains '1234'", 21, "needs a UUID");
        rejects("Type='Software", 5, "unterminated string");
        rejects("Type='It''s", 5, "unterminated string");
        rejects("IsInstalled=0 IsHidden=0", 14, "found 'IsHidden'");
        rejects("IsInstalled=0 )", 14, "found ')'");
        rejects("IsInstalled=0 and", 17, "found the end of the criteria");
        rejects(
            "()",
            1,
            "expected a criterion inside the parentheses, found ')'",
        );
        rejects("IsInstalled=0 and ( )", 20, "found ')'");
        rejects("(IsInstalled=0", 14, "expected 'and' or ')'");
        rejects("IsInstalled=0 is", 14, "expected 'and', 'or' or the end");
        rejects(
            "IsInstalled is 0",
            12,
            "expected an operator (=, != or contains), found 'is'",
        );
        rejects("IsInstalled = 2", 14, "expected 0 or 1 for IsInstalled");
        rejects("IsInstalled = '0'", 14, "expected 0 or 1");
        rejects("Type = 1", 7, "'Software' or 'Driver'");
        rejects("Type = 'Firmware'", 7, "found 'Firmware'");
        rejects("DeploymentAction = 'None'", 19, "DeploymentAction must be");
        rejects(
            &format!("UpdateID='{ID}' and RevisionNumber='1'"),
            67,
            "an integer for RevisionNumber",
        );
        rejects(
            &format!("UpdateID='{ID}' and RevisionNumber=99999999999"),
            67,
            "out of range",
        );
        rejects("IsInstalled = 0x1", 14, "expected an integer");
        rejects("IsInstalled = -", 14, "expected an integer");
        rejects("IsInstalled = 0 @", 16, "unexpected character '@'");
        rejects("IsInstalled ! 0", 12, "unexpected character '!'");
        rejects("= 0", 0, "expected a property name");
        // Positions count characters, not bytes.
        rejects("\u{3000}IsInstalled=0 and x=1", 19, "unknown property 'x'");
        rejects(&format!("UpdateID=' {ID}'"), 9, "needs a UUID");
    }

    #[test]
    fn escape_string_doubles_quotes() {
        assert_eq!(escape_string("it's"), "it''s");
        assert_eq!(escape_string("''"), "''''");
        assert_eq!(escape_string("plain"), "plain");
    }

    #[derive(Clone)]
    struct Upd {
        ty: UpdateType,
        action: DeploymentAction,
        id: Uuid,
        rev: i32,
        cats: Vec<Uuid>,
        installed: bool,
        hidden: bool,
        flags: bool,
    }

    impl Facts for Upd {
        fn update_type(&self) -> UpdateType {
            self.ty
        }
        fn deployment_action(&self) -> DeploymentAction {
            self.action
        }
        fn is_assigned(&self) -> bool {
            self.flags
        }
        fn browse_only(&self) -> bool {
            self.flags
        }
        fn auto_select_on_web_sites(&self) -> bool {
            self.flags
        }
        fn update_id(&self) -> Uuid {
            self.id
        }
        fn revision_number(&self) -> i32 {
            self.rev
        }
        fn in_category(&self, id: Uuid) -> bool {
            self.cats.contains(&id)
        }
        fn is_installed(&self) -> bool {
            self.installed
        }
        fn is_hidden(&self) -> bool {
            self.hidden
        }
        fn is_present(&self) -> bool {
            self.installed
        }
        fn reboot_required(&self) -> bool {
            self.flags
        }
    }

    fn upd() -> Upd {
        Upd {
            ty: UpdateType::Software,
            action: DeploymentAction::Installation,
            id: id(),
            rev: 3,
            cats: vec![Uuid::parse_str(CAT).unwrap()],
            installed: false,
            hidden: false,
            flags: true,
        }
    }

    #[test]
    fn matches_evaluates_groups_and_the_implied_deployment_action() {
        let u = upd();
        let m = |s: &str, u: &Upd| parse(s).unwrap().matches(u);
        assert!(m("", &u));
        assert!(m("Type='Software'", &u));
        assert!(!m("Type!='Software'", &u));
        assert!(m("Type!='Driver' and IsAssigned=1 and BrowseOnly=1", &u));
        assert!(m(
            "AutoSelectOnWebSites=1 and RebootRequired=1 and IsPresent=0",
            &u
        ));
        assert!(m(&format!("UpdateID='{ID}' and RevisionNumber=3"), &u));
        assert!(!m(&format!("UpdateID='{ID}' and RevisionNumber=4"), &u));
        assert!(!m(&format!("UpdateID!='{ID}'"), &u));
        assert!(m(&format!("CategoryIDs contains '{CAT}'"), &u));
        assert!(!m(&format!("CategoryIDs contains '{ID}'"), &u));
        assert!(!m("IsInstalled=1 or IsHidden=1", &u));
        assert!(m("IsInstalled=1 or IsHidden=0", &u));

        // No DeploymentAction term: every group implies 'Installation'.
        let mut un = upd();
        un.action = DeploymentAction::Uninstallation;
        assert!(!m("Type='Software'", &un));
        assert!(!m("", &un));
        assert!(m(
            "Type='Software' and DeploymentAction='Uninstallation'",
            &un
        ));
        assert!(!m("DeploymentAction='Installation'", &un));
        // Per group: the second group states its action, the first implies Installation.
        let c = "IsHidden=0 or (IsHidden=0 and DeploymentAction='Uninstallation')";
        assert!(m(c, &un));
        assert!(m(c, &u));
        let parsed = parse(c).unwrap();
        assert_eq!(
            parsed.groups[0].deployment_action(),
            DeploymentAction::Installation
        );
        assert_eq!(
            parsed.groups[1].deployment_action(),
            DeploymentAction::Uninstallation
        );
        let mut det = upd();
        det.action = DeploymentAction::Detection;
        assert!(!m(c, &det));
    }

    fn flag_term() -> impl Strategy<Value = Term> {
        (0usize..7, any::<bool>()).prop_map(|(k, b)| match k {
            0 => Term::IsAssigned(b),
            1 => Term::BrowseOnly(b),
            2 => Term::AutoSelectOnWebSites(b),
            3 => Term::IsInstalled(b),
            4 => Term::IsHidden(b),
            5 => Term::IsPresent(b),
            _ => Term::RebootRequired(b),
        })
    }

    fn term() -> impl Strategy<Value = Term> {
        prop_oneof![
            flag_term(),
            (any::<bool>(), prop::sample::select(UpdateType::ALL))
                .prop_map(|(negated, value)| Term::Type { negated, value }),
            prop::sample::select(&DeploymentAction::ALL[1..]).prop_map(Term::DeploymentAction),
            (any::<bool>(), any::<u128>()).prop_map(|(negated, id)| Term::UpdateId {
                negated,
                id: Uuid::from_u128(id)
            }),
            any::<u128>().prop_map(|id| Term::CategoryId(Uuid::from_u128(id))),
        ]
    }

    fn group() -> impl Strategy<Value = AndGroup> {
        (
            prop::collection::vec(term(), 1..5),
            prop::option::of((any::<u128>(), any::<i32>())),
        )
            .prop_map(|(mut terms, revision)| {
                if let Some((id, rev)) = revision {
                    terms.retain(|t| !matches!(t, Term::UpdateId { negated: true, .. }));
                    terms.push(Term::UpdateId {
                        negated: false,
                        id: Uuid::from_u128(id),
                    });
                    terms.push(Term::RevisionNumber(rev));
                }
                AndGroup { terms }
            })
    }

    fn token_soup() -> impl Strategy<Value = String> {
        let tokens = vec![
            "and",
            "OR",
            "or",
            "And",
            "contains",
            "=",
            "!=",
            "!",
            "(",
            ")",
            "'",
            "''",
            "'x'",
            "'Software'",
            "-",
            "-1",
            "0",
            "1",
            "12a",
            "Type",
            "UpdateID",
            "RevisionNumber",
            "CategoryIDs",
            "IsInstalled",
            "isHidden",
            "DeploymentAction",
            "'Installation'",
            ID,
            CAT,
            "'12345678-9abc-def0-1234-56789abcdef0'",
            "é",
            "\t",
        ];
        prop::collection::vec((prop::sample::select(tokens), any::<bool>()), 0..24).prop_map(
            |parts| {
                parts
                    .into_iter()
                    .map(|(t, space)| {
                        if space {
                            format!("{t} ")
                        } else {
                            t.to_string()
                        }
                    })
                    .collect()
            },
        )
    }

    proptest! {
        /// EscapeString's output, quoted, parses back to the original string.
        #[test]
        fn escape_string_round_trips(s in any::<String>()) {
            let c = parse(&format!("Type = '{}'", escape_string(&s)));
            match c {
                Ok(_) => prop_assert!(s.eq_ignore_ascii_case("Software") || s.eq_ignore_ascii_case("Driver")),
                Err(e) => prop_assert!(e.to_string().contains(&format!("found '{s}'")), "{e}"),
            }
            let mut p = Parser { chars: format!("'{}'", escape_string(&s)).chars().collect(), pos: 0, peeked: None };
            let tok = p.next().unwrap();
            prop_assert!(matches!(&tok.kind, Tok::Str(v) if *v == s));
            prop_assert!(matches!(p.next().unwrap().kind, Tok::End));
        }

        /// Arbitrary text gives criteria or an error, never a panic.
        #[test]
        fn parse_never_panics(s in ".{0,80}") {
            if let Ok(c) = parse(&s) {
                prop_assert_eq!(parse(&c.to_string()).unwrap(), c);
            }
        }

        /// Near-valid token soup gives criteria or an error, never a panic; every error is
        /// WU_E_INVALID_CRITERIA with a position.
        #[test]
        fn token_soup_never_panics(s in token_soup()) {
            match parse(&s) {
                Ok(c) => prop_assert_eq!(parse(&c.to_string()).unwrap(), c),
                Err(e) => {
                    prop_assert_eq!(e.hresult(), WU_E_INVALID_CRITERIA);
                    prop_assert!(e.to_string().contains("at position "));
                }
            }
        }

        /// Display prints criteria that parse back equal.
        #[test]
        fn display_round_trips(groups in prop::collection::vec(group(), 1..4)) {
            let c = Criteria { groups };
            let text = c.to_string();
            let back = parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            prop_assert_eq!(back, c);
        }
    }
}

//! `wua hide`, `wua unhide` and `wua accept-eula`: change what this machine records about
//! updates (`IUpdate.IsHidden`, `IUpdate.AcceptEula`), one update at a time, reporting each.

use std::sync::Arc;

use anyhow::Result;
use serde::Serialize;
use wua::{OperationResultCode, Update};

use crate::cli::{GlobalArgs, Selection};
use crate::report::{self, ErrorDetail};
use crate::select::{self, Pool};
use crate::{Exit, run};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Hide,
    Unhide,
    AcceptEula,
}

impl Action {
    fn operation(self) -> &'static str {
        match self {
            Action::Hide => "hide",
            Action::Unhide => "unhide",
            Action::AcceptEula => "accept_eula",
        }
    }
}

/// What happened to one update.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Hidden,
    AlreadyHidden,
    Unhidden,
    NotHidden,
    Accepted,
    AlreadyAccepted,
    NoLicenceTerms,
    Failed,
}

impl Outcome {
    fn key(self) -> &'static str {
        match self {
            Outcome::Hidden => "hidden",
            Outcome::AlreadyHidden => "already_hidden",
            Outcome::Unhidden => "unhidden",
            Outcome::NotHidden => "not_hidden",
            Outcome::Accepted => "accepted",
            Outcome::AlreadyAccepted => "already_accepted",
            Outcome::NoLicenceTerms => "no_licence_terms",
            Outcome::Failed => "failed",
        }
    }

    fn words(self) -> &'static str {
        match self {
            Outcome::Hidden => "hidden",
            Outcome::AlreadyHidden => "already hidden",
            Outcome::Unhidden => "unhidden",
            Outcome::NotHidden => "not hidden",
            Outcome::Accepted => "accepted",
            Outcome::AlreadyAccepted => "already accepted",
            Outcome::NoLicenceTerms => "without licence terms",
            Outcome::Failed => "failed",
        }
    }
}

#[derive(Serialize)]
struct Managed {
    update_id: String,
    revision_number: i32,
    title: String,
    kb_article_ids: Vec<String>,
    /// `hidden`, `already_hidden`, `unhidden`, `not_hidden`, `accepted`, `already_accepted`,
    /// `no_licence_terms` or `failed`.
    result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorDetail>,
    /// accept-eula: who accepted the terms (now or before).
    #[serde(skip_serializing_if = "Option::is_none")]
    eula_accepted_by: Option<String>,
    /// accept-eula: when, RFC 3339 in UTC.
    #[serde(skip_serializing_if = "Option::is_none")]
    eula_accepted_at: Option<String>,
}

#[derive(Serialize)]
struct ManageReport {
    schema_version: u32,
    operation: &'static str,
    result_code: OperationResultCode,
    updates: Vec<Managed>,
    skipped: Vec<run::Skipped>,
}

/// How an update is named in messages: its first KB number, else its short id.
fn short_name(u: &Update) -> String {
    match u.kb_article_ids().first() {
        Some(kb) => format!("KB{kb}"),
        None => u.identity().update_id.to_string()[..8].to_string(),
    }
}

fn when(t: &jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}

pub fn manage(global: &GlobalArgs, selection: &Selection, action: Action) -> Result<Exit> {
    let session = crate::open_session_online(global, crate::paths::Access::Read)?;
    let (default_criteria, include_superseded, verb) = match action {
        Action::Hide => (select::DEFAULT_CRITERIA, false, "hide"),
        // Hidden updates may be superseded by others: find them all (DIGEST §5.3, IsHidden).
        Action::Unhide => ("IsHidden = 1", true, "unhide"),
        Action::AcceptEula => (
            select::DEFAULT_CRITERIA,
            false,
            "accept the licence terms of",
        ),
    };
    let choice = select::choose(
        &session,
        selection,
        Pool::Catalog {
            default_criteria,
            include_superseded,
        },
        selection.all,
        verb,
    )?;
    choice.tell_notes(global.quiet);
    let text = !global.json && !global.quiet;
    let skipped: Vec<run::Skipped> = choice
        .filtered_out
        .iter()
        .map(|(u, why)| run::skip(u, &why.to_string()))
        .collect();
    if text {
        for s in &skipped {
            tell!("Skipping \"{}\": {}", s.title, s.reason);
        }
    }
    // Parts of selected bundles are handled too: hiding is per update, and a bundle installs
    // only once every part's terms are accepted.
    let mut updates: Vec<Arc<Update>> = Vec::new();
    let mut push = |u: &Arc<Update>| {
        if !updates.iter().any(|x| x.identity() == u.identity()) {
            updates.push(u.clone());
        }
    };
    for u in &choice.updates {
        if action == Action::AcceptEula {
            for part in u.bundled_updates().iter() {
                if part.eula_text().is_some() {
                    push(part);
                }
            }
        }
        push(u);
    }
    for (part, _) in &choice.in_bundle {
        push(part);
    }
    if action == Action::AcceptEula && !choice.named {
        updates.retain(|u| u.eula_text().is_some());
    }

    let mut results = Vec::new();
    for u in &updates {
        let (outcome, error) = match apply(u, action, text) {
            Ok(outcome) => (outcome, None),
            Err(e) => {
                if !global.json {
                    tell!("wua: {e}");
                }
                (Outcome::Failed, Some(ErrorDetail::from_wua(&e)))
            }
        };
        let acceptance = if action == Action::AcceptEula && outcome != Outcome::Failed {
            u.eula_acceptance()?
        } else {
            None
        };
        if text {
            let name = format!("\"{}\" ({})", u.title(), short_name(u));
            match outcome {
                Outcome::Hidden => say!("Hidden: {name}"),
                Outcome::AlreadyHidden => say!("Already hidden: {name}"),
                Outcome::Unhidden => say!("Unhidden: {name}"),
                Outcome::NotHidden => say!("Not hidden: {name}; nothing to do"),
                Outcome::Accepted | Outcome::AlreadyAccepted => {
                    if let Some(a) = &acceptance {
                        let already = if outcome == Outcome::AlreadyAccepted {
                            "already "
                        } else {
                            ""
                        };
                        say!(
                            "Licence terms of {name} {already}accepted by {} on {}.",
                            a.accepted_by,
                            when(&a.accepted_at)
                        );
                    }
                }
                Outcome::NoLicenceTerms => {
                    say!("{name} has no licence terms; nothing to accept.")
                }
                Outcome::Failed => {}
            }
        }
        results.push(Managed {
            update_id: u.identity().update_id.to_string(),
            revision_number: u.identity().revision_number,
            title: u.title().to_string(),
            kb_article_ids: u.kb_article_ids().to_vec(),
            result: outcome.key(),
            error,
            eula_accepted_by: acceptance.as_ref().map(|a| a.accepted_by.clone()),
            eula_accepted_at: acceptance.as_ref().map(|a| a.accepted_at.to_string()),
        });
    }

    let failed = results.iter().filter(|r| r.error.is_some()).count();
    let result_code = match (failed, results.len()) {
        (0, _) => OperationResultCode::Succeeded,
        (f, n) if f == n => OperationResultCode::Failed,
        _ => OperationResultCode::SucceededWithErrors,
    };
    if global.json {
        report::print_json(&ManageReport {
            schema_version: report::SCHEMA_VERSION,
            operation: action.operation(),
            result_code,
            updates: results,
            skipped,
        });
    } else if text {
        if results.is_empty() {
            say!(
                "Nothing to {}.",
                match action {
                    Action::Hide => "hide",
                    Action::Unhide => "unhide",
                    Action::AcceptEula => "accept",
                }
            );
        } else if results.len() > 1 || failed > 0 {
            let mut counts: Vec<String> = Vec::new();
            for outcome in [
                Outcome::Hidden,
                Outcome::AlreadyHidden,
                Outcome::Unhidden,
                Outcome::NotHidden,
                Outcome::Accepted,
                Outcome::AlreadyAccepted,
                Outcome::NoLicenceTerms,
                Outcome::Failed,
            ] {
                let n = results.iter().filter(|r| r.result == outcome.key()).count();
                if n > 0 {
                    counts.push(format!("{n} {}", outcome.words()));
                }
            }
            say!("Result: {result_code} ({})", counts.join(", "));
        }
    }
    Ok(match result_code {
        OperationResultCode::Succeeded => Exit::Success,
        OperationResultCode::SucceededWithErrors => Exit::SucceededWithErrors,
        _ => Exit::Failed,
    })
}

fn apply(u: &Update, action: Action, text: bool) -> Result<Outcome, wua::Error> {
    match action {
        Action::Hide if u.is_hidden() => Ok(Outcome::AlreadyHidden),
        Action::Hide => u.set_hidden(true).map(|()| Outcome::Hidden),
        Action::Unhide if !u.is_hidden() => Ok(Outcome::NotHidden),
        Action::Unhide => u.set_hidden(false).map(|()| Outcome::Unhidden),
        Action::AcceptEula => {
            let Some(terms) = u.eula_text() else {
                return Ok(Outcome::NoLicenceTerms);
            };
            if u.eula_acceptance()?.is_some() {
                return Ok(Outcome::AlreadyAccepted);
            }
            if text {
                say!(
                    "Licence terms of \"{}\" ({}):\n{}\n",
                    u.title(),
                    short_name(u),
                    run::indent(terms)
                );
            }
            u.accept_eula().map(|()| Outcome::Accepted)
        }
    }
}

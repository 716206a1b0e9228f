//! Turning the command line's selection (update names, or search criteria and filters) into
//! updates.

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::Result;
use uuid::Uuid;
use wua::{Update, UpdateCollection, UpdateException, UpdateSession};

use crate::BadInput;
use crate::cli::Selection;
use crate::filter::{Filters, Rejection};

/// WUA's default criteria: what a search returns when given none.
pub const DEFAULT_CRITERIA: &str = "IsInstalled = 0 and IsHidden = 0";

/// Where a command finds its updates.
pub enum Pool {
    /// The catalog: names match any catalog update; a search runs `default_criteria` unless
    /// `--criteria` is given.
    Catalog {
        default_criteria: &'static str,
        include_superseded: bool,
    },
    /// The installed updates: names match them; `--criteria` keeps those the search finds.
    Installed,
}

/// What a selection chose.
pub struct Choice {
    /// The updates, in the order named or found, without duplicates.
    pub updates: Vec<Arc<Update>>,
    /// True when the updates were named (not found by a search).
    pub named: bool,
    /// Named updates a filter left out, and why.
    pub filtered_out: Vec<(Arc<Update>, Rejection)>,
    /// Updates dropped because a bundle in the selection includes them: (part, bundle).
    pub in_bundle: Vec<(Arc<Update>, Arc<Update>)>,
    /// The search's warnings (`ISearchResult.Warnings`).
    pub warnings: Vec<UpdateException>,
    /// Notes about the command line (a category no update has).
    pub notes: Vec<String>,
}

impl Choice {
    /// Prints the notes and the search warnings on stderr (not with --quiet).
    pub fn tell_notes(&self, quiet: bool) {
        if quiet {
            return;
        }
        for note in &self.notes {
            tell!("wua: note: {note}");
        }
        for w in &self.warnings {
            tell!("wua: warning: {} [{}]", w.message, w.hresult);
        }
    }
}

/// Chooses the updates a command acts on. `verb` completes "name the updates to …"; `all`
/// stands for `--all` or `--accept-all` given alone.
pub fn choose(
    session: &UpdateSession,
    selection: &Selection,
    pool: Pool,
    all: bool,
    verb: &str,
) -> Result<Choice> {
    let filters = Filters::compile(&selection.filters)?;
    let mut known = Vec::new();
    // Uninstalling works without the catalog (its metadata may have expired).
    let catalog = match pool {
        Pool::Catalog { .. } => session.catalog()?,
        Pool::Installed => match session.catalog() {
            Ok(catalog) => catalog,
            Err(_) => std::sync::Arc::new(wua::Catalog::empty(
                "catalog unavailable",
                std::path::PathBuf::new(),
                None,
            )),
        },
    };
    for def in catalog.updates() {
        for c in &def.categories {
            if !known.iter().any(|k: &wua::Category| k.id == c.id) {
                known.push(c.clone());
            }
        }
    }
    let notes = filters.unknown_categories(&known);
    let what = match pool {
        Pool::Catalog { .. } => "catalog update",
        Pool::Installed => "installed update",
    };
    let mut warnings = Vec::new();
    let named = !selection.by_search();
    let found: Vec<Arc<Update>> = if named {
        let names_pool = match pool {
            Pool::Catalog { .. } => session.catalog_updates()?,
            Pool::Installed => session.installed_updates()?,
        };
        by_names(&names_pool, &selection.updates, what)?
    } else {
        if !(all || selection.given()) {
            return Err(BadInput(format!(
                "name the updates to {verb} (ids or KB numbers), select them with --criteria or filters such as --kb and --title, or pass --all; run `wua search` to see them"
            ))
            .into());
        }
        match pool {
            Pool::Catalog {
                default_criteria,
                include_superseded,
            } => {
                let mut searcher = crate::searcher(session);
                searcher.set_include_potentially_superseded_updates(
                    include_superseded || selection.include_superseded,
                );
                let result =
                    searcher.search(selection.criteria.as_deref().unwrap_or(default_criteria))?;
                warnings = result.warnings;
                result.updates.iter().cloned().collect()
            }
            Pool::Installed => {
                let installed = session.installed_updates()?;
                match &selection.criteria {
                    None => installed.iter().cloned().collect(),
                    Some(criteria) => {
                        let mut searcher = crate::searcher(session);
                        searcher.set_include_potentially_superseded_updates(true);
                        let result = searcher.search(criteria)?;
                        warnings = result.warnings;
                        let ids: HashSet<Uuid> = result
                            .updates
                            .iter()
                            .map(|u| u.identity().update_id)
                            .collect();
                        installed
                            .iter()
                            .filter(|u| ids.contains(&u.identity().update_id))
                            .cloned()
                            .collect()
                    }
                }
            }
        }
    };
    let mut updates = Vec::new();
    let mut filtered_out = Vec::new();
    for update in found {
        match filters.check(&update) {
            Ok(()) => updates.push(update),
            Err(why) if named => filtered_out.push((update, why)),
            Err(_) => {}
        }
    }
    // A part of a bundle that is selected too is installed (or uninstalled) with the bundle.
    let mut in_bundle = Vec::new();
    let parents: Vec<Arc<Update>> = updates.clone();
    updates.retain(|u| {
        let parent = parents.iter().find(|p| {
            p.bundled_updates()
                .iter()
                .any(|b| b.identity().update_id == u.identity().update_id)
        });
        match parent {
            Some(p) => {
                in_bundle.push((u.clone(), p.clone()));
                false
            }
            None => true,
        }
    });
    Ok(Choice {
        updates,
        named,
        filtered_out,
        in_bundle,
        warnings,
        notes,
    })
}

/// Finds the updates named by `args` in `pool`, in the order given, without duplicates.
///
/// An argument is a full update id, a unique prefix of one (at least 4 characters), or a KB
/// number (`KB5000001`, any case, which may match several updates).
pub fn by_names(
    pool: &UpdateCollection,
    args: &[String],
    what: &str,
) -> Result<Vec<Arc<Update>>, BadInput> {
    let mut chosen: Vec<Arc<Update>> = Vec::new();
    for arg in args {
        for update in resolve(pool, arg, what)? {
            if !chosen.iter().any(|u| u.identity() == update.identity()) {
                chosen.push(update);
            }
        }
    }
    Ok(chosen)
}

fn resolve(pool: &UpdateCollection, arg: &str, what: &str) -> Result<Vec<Arc<Update>>, BadInput> {
    let needle = arg.trim().to_ascii_lowercase();
    if let Some(kb) = needle.strip_prefix("kb") {
        let found: Vec<_> = pool
            .iter()
            .filter(|u| u.kb_article_ids().iter().any(|k| k == kb))
            .cloned()
            .collect();
        if found.is_empty() {
            return Err(BadInput(format!(
                "no {what} has KB article {arg}; run `wua list` to see them"
            )));
        }
        return Ok(found);
    }
    if needle.len() < 4 || !needle.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(BadInput(format!(
            "{arg:?} is neither an update id (or a prefix of 4 or more characters) nor a KB number like KB5000001"
        )));
    }
    let found: Vec<_> = pool
        .iter()
        .filter(|u| u.identity().update_id.to_string().starts_with(&needle))
        .cloned()
        .collect();
    match found.len() {
        0 => Err(BadInput(format!(
            "no {what} has an id starting with {arg}; run `wua list` to see them"
        ))),
        1 => Ok(found),
        _ => Err(BadInput(format!(
            "{arg} matches {} updates ({}); give more of the id",
            found.len(),
            found
                .iter()
                .map(|u| u.identity().update_id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Splits updates into batches WUA can run: each exclusive update on its own, first (so that a
/// restart required by the others cannot block them), then all the rest together.
pub fn batches(updates: Vec<Arc<Update>>, uninstall: bool) -> Vec<Vec<Arc<Update>>> {
    let exclusive = |u: &Arc<Update>| {
        let behavior = if uninstall {
            u.uninstallation_behavior()
        } else {
            u.installation_behavior()
        };
        behavior.impact == wua::InstallationImpact::RequiresExclusiveHandling
    };
    let (alone, together): (Vec<_>, Vec<_>) = updates.into_iter().partition(exclusive);
    let mut out: Vec<Vec<_>> = alone.into_iter().map(|u| vec![u]).collect();
    if !together.is_empty() {
        out.push(together);
    }
    out
}

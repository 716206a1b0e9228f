//! Turning the command line's update arguments into updates.

use std::sync::Arc;

use wua::{Update, UpdateCollection};

use crate::BadInput;

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

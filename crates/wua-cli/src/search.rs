//! `wua search`: WUA's search criteria, then the PSWindowsUpdate-style filters, as a table or
//! JSON; with `--explain`, the reason for every catalog update.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Result;
use serde::Serialize;
use uuid::Uuid;
use wua::{OperationResultCode, Update, Verdict};

use crate::Exit;
use crate::cli::{GlobalArgs, SearchArgs};
use crate::filter::{Filters, Rejection, human_size};
use crate::report::{self, HResultJson};

/// What the catalog says about relations between its updates: who supersedes whom, which
/// bundle includes which part.
pub struct Relations {
    superseded_by: HashMap<Uuid, Vec<(Uuid, String)>>,
    bundled_in: HashMap<Uuid, (Uuid, String)>,
}

impl Relations {
    pub fn of(catalog: &wua::Catalog) -> Relations {
        let mut superseded_by: HashMap<Uuid, Vec<(Uuid, String)>> = HashMap::new();
        let mut bundled_in = HashMap::new();
        for def in catalog.updates() {
            let me = (def.identity.update_id, def.title.clone());
            for old in &def.superseded_update_ids {
                superseded_by.entry(*old).or_default().push(me.clone());
            }
            for part in &def.bundled_updates {
                bundled_in.insert(*part, me.clone());
            }
        }
        Relations {
            superseded_by,
            bundled_in,
        }
    }

    /// The catalog updates that supersede this one.
    pub fn superseded_by(&self, id: Uuid) -> &[(Uuid, String)] {
        self.superseded_by.get(&id).map_or(&[], Vec::as_slice)
    }

    /// The bundle that includes this update, if one does.
    pub fn bundled_in(&self, id: Uuid) -> Option<&(Uuid, String)> {
        self.bundled_in.get(&id)
    }
}

/// The STATUS column: one letter per position, `-` when it does not hold (docs/cli.md and
/// `wua search --help` list them).
pub fn status_letters(u: &Update, relations: &Relations) -> String {
    let restart = u.reboot_required()
        || u.installation_behavior().reboot_behavior
            == wua::InstallationRebootBehavior::AlwaysRequiresReboot;
    [
        ('I', u.is_installed()),
        ('D', u.is_downloaded()),
        ('H', u.is_hidden()),
        ('M', u.is_mandatory()),
        ('U', u.is_uninstallable()),
        ('L', !u.eula_accepted()),
        ('O', u.browse_only()),
        ('B', !u.bundled_updates().is_empty()),
        ('R', restart),
        (
            'S',
            !relations.superseded_by(u.identity().update_id).is_empty(),
        ),
    ]
    .iter()
    .map(|&(c, on)| if on { c } else { '-' })
    .collect()
}

const LETTER_NAMES: [(char, &str); 10] = [
    ('I', "installed"),
    ('D', "downloaded"),
    ('H', "hidden"),
    ('M', "mandatory"),
    ('U', "uninstallable"),
    ('L', "licence terms to accept"),
    ('O', "optional"),
    ('B', "bundle"),
    ('R', "restart"),
    ('S', "superseded"),
];

/// One update in `wua search --json`.
#[derive(Serialize)]
pub struct SearchedUpdate {
    update_id: String,
    revision_number: i32,
    title: String,
    description: String,
    kb_article_ids: Vec<String>,
    categories: Vec<String>,
    category_ids: Vec<String>,
    msrc_severity: Option<String>,
    #[serde(rename = "type")]
    update_type: wua::UpdateType,
    deployment_action: wua::DeploymentAction,
    max_download_size: u64,
    payload_size: u64,
    status: String,
    is_installed: bool,
    is_installable: bool,
    is_present: bool,
    is_downloaded: bool,
    is_hidden: bool,
    is_mandatory: bool,
    is_uninstallable: bool,
    browse_only: bool,
    is_assigned: bool,
    has_eula: bool,
    eula_accepted: bool,
    eula_accepted_by: Option<String>,
    eula_accepted_at: Option<String>,
    impact: wua::InstallationImpact,
    reboot_behavior: wua::InstallationRebootBehavior,
    reboot_required: bool,
    deadline: Option<String>,
    bundled_update_ids: Vec<String>,
    superseded_update_ids: Vec<String>,
    superseded_by: Vec<String>,
}

impl SearchedUpdate {
    pub fn of(u: &Update, relations: &Relations) -> Result<SearchedUpdate> {
        let acceptance = u.eula_acceptance()?;
        Ok(SearchedUpdate {
            update_id: u.identity().update_id.to_string(),
            revision_number: u.identity().revision_number,
            title: u.title().to_string(),
            description: u.description().to_string(),
            kb_article_ids: u.kb_article_ids().to_vec(),
            categories: u.categories().iter().map(|c| c.name.clone()).collect(),
            category_ids: u.categories().iter().map(|c| c.id.to_string()).collect(),
            msrc_severity: u.msrc_severity().map(str::to_string),
            update_type: u.update_type(),
            deployment_action: u.deployment_action(),
            max_download_size: u.max_download_size(),
            payload_size: u.payload().size,
            status: status_letters(u, relations),
            is_installed: u.is_installed(),
            is_installable: u.is_installable(),
            is_present: u.is_present(),
            is_downloaded: u.is_downloaded(),
            is_hidden: u.is_hidden(),
            is_mandatory: u.is_mandatory(),
            is_uninstallable: u.is_uninstallable(),
            browse_only: u.browse_only(),
            is_assigned: u.is_assigned(),
            has_eula: u.eula_text().is_some(),
            eula_accepted: u.eula_accepted(),
            eula_accepted_by: acceptance.as_ref().map(|a| a.accepted_by.clone()),
            eula_accepted_at: acceptance.as_ref().map(|a| a.accepted_at.to_string()),
            impact: u.installation_behavior().impact,
            reboot_behavior: u.installation_behavior().reboot_behavior,
            reboot_required: u.reboot_required(),
            deadline: u.deadline().map(|d| d.to_string()),
            bundled_update_ids: u
                .bundled_updates()
                .iter()
                .map(|b| b.identity().update_id.to_string())
                .collect(),
            superseded_update_ids: u
                .superseded_update_ids()
                .iter()
                .map(Uuid::to_string)
                .collect(),
            superseded_by: relations
                .superseded_by(u.identity().update_id)
                .iter()
                .map(|(id, _)| id.to_string())
                .collect(),
        })
    }
}

/// A search warning (`IUpdateException`) in JSON.
#[derive(Serialize)]
struct Warning {
    context: wua::UpdateExceptionContext,
    hresult: HResultJson,
    message: String,
}

/// A reference to another update.
#[derive(Serialize)]
struct UpdateRef {
    update_id: String,
    title: String,
}

#[derive(Serialize)]
struct SupersededBy {
    update_id: String,
    title: String,
    /// True when the superseding update is installed; false when it is in the result.
    installed: bool,
}

/// One catalog update in `--explain`: the decision and what made it.
#[derive(Serialize)]
struct Explained {
    update_id: String,
    revision_number: i32,
    title: String,
    kb_article_ids: Vec<String>,
    selected: bool,
    /// `selected`, `bundled`, `criteria_not_met`, `not_applicable`, `superseded` or
    /// `filtered_out`.
    verdict: &'static str,
    /// The decision in words, as the text output prints it.
    reason: String,
    /// `selected` (and `filtered_out`): the AND-group of the criteria that matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    matched: Option<String>,
    /// `criteria_not_met`: per AND-group, its first unmet criterion and what the update has.
    #[serde(skip_serializing_if = "Option::is_none")]
    unmet: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bundled_in: Option<UpdateRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    superseded_by: Option<SupersededBy>,
    /// `filtered_out`: the filter, as written on the command line.
    #[serde(skip_serializing_if = "Option::is_none")]
    filter: Option<String>,
}

#[derive(Serialize)]
struct SearchReport {
    schema_version: u32,
    catalog: String,
    root: String,
    criteria: String,
    include_superseded: bool,
    filters: Vec<String>,
    result_code: OperationResultCode,
    /// Updates the criteria found before the filters.
    matched_criteria: usize,
    updates: Vec<SearchedUpdate>,
    warnings: Vec<Warning>,
    #[serde(skip_serializing_if = "Option::is_none")]
    explanations: Option<Vec<Explained>>,
}

/// The decision about one catalog update, once the filters have had their say.
enum Decision {
    Library(Verdict),
    Filtered { matched: String, why: Rejection },
}

impl Decision {
    fn selected(&self) -> bool {
        matches!(self, Decision::Library(v) if v.is_selected())
    }

    fn kind(&self) -> &'static str {
        match self {
            Decision::Library(Verdict::Selected { .. }) => "selected",
            Decision::Library(Verdict::Bundled { .. }) => "bundled",
            Decision::Library(Verdict::CriteriaNotMet { .. }) => "criteria_not_met",
            Decision::Library(Verdict::NotApplicable { .. }) => "not_applicable",
            Decision::Library(Verdict::Superseded { .. }) => "superseded",
            Decision::Filtered { .. } => "filtered_out",
        }
    }

    /// The reason in words, without "selected"/"left out" (the text output's column says it).
    fn reason(&self) -> String {
        match self {
            Decision::Library(Verdict::Selected { matched, because }) => {
                format!("matches {matched}; {because}")
            }
            Decision::Library(Verdict::Bundled {
                parent,
                parent_title,
            }) => format!(
                "part of the bundle \"{parent_title}\" ({parent}); searches return the bundle, which installs its parts"
            ),
            Decision::Library(Verdict::CriteriaNotMet { unmet }) => {
                if unmet.len() == 1 {
                    format!("by the criteria: {}", unmet[0])
                } else {
                    let groups: Vec<String> = unmet
                        .iter()
                        .enumerate()
                        .map(|(i, u)| format!("group {}: {u}", i + 1))
                        .collect();
                    format!(
                        "by the criteria, no AND-group matched: {}",
                        groups.join("; ")
                    )
                }
            }
            Decision::Library(Verdict::NotApplicable { reason }) => {
                format!("does not apply to this machine: {reason}")
            }
            Decision::Library(Verdict::Superseded {
                by,
                by_title,
                by_installed,
            }) => format!(
                "superseded by \"{by_title}\" ({by}), which {} (--include-superseded keeps it)",
                if *by_installed {
                    "is installed"
                } else {
                    "the criteria select too"
                }
            ),
            Decision::Filtered { why, .. } => {
                format!("by {}: {}", why.filter, why.reason)
            }
        }
    }

    fn explained(&self, u: &Update) -> Explained {
        let mut e = Explained {
            update_id: u.identity().update_id.to_string(),
            revision_number: u.identity().revision_number,
            title: u.title().to_string(),
            kb_article_ids: u.kb_article_ids().to_vec(),
            selected: self.selected(),
            verdict: self.kind(),
            reason: self.reason(),
            matched: None,
            unmet: None,
            bundled_in: None,
            superseded_by: None,
            filter: None,
        };
        match self {
            Decision::Library(Verdict::Selected { matched, .. }) => {
                e.matched = Some(matched.clone())
            }
            Decision::Library(Verdict::Bundled {
                parent,
                parent_title,
            }) => {
                e.bundled_in = Some(UpdateRef {
                    update_id: parent.to_string(),
                    title: parent_title.clone(),
                })
            }
            Decision::Library(Verdict::CriteriaNotMet { unmet }) => e.unmet = Some(unmet.clone()),
            Decision::Library(Verdict::NotApplicable { .. }) => {}
            Decision::Library(Verdict::Superseded {
                by,
                by_title,
                by_installed,
            }) => {
                e.superseded_by = Some(SupersededBy {
                    update_id: by.to_string(),
                    title: by_title.clone(),
                    installed: *by_installed,
                })
            }
            Decision::Filtered { matched, why } => {
                e.matched = Some(matched.clone());
                e.filter = Some(why.filter.clone());
            }
        }
        e
    }
}

fn first_kb(u: &Update) -> String {
    u.kb_article_ids()
        .first()
        .map(|k| format!("KB{k}"))
        .unwrap_or_else(|| "-".to_string())
}

pub fn search(global: &GlobalArgs, args: &SearchArgs) -> Result<Exit> {
    let session = crate::open_session_online(global, crate::paths::Access::Read)?;
    let filters = Filters::compile(&args.filters)?;
    let criteria_text = args.criteria.as_deref().unwrap_or("");
    let canonical = wua::search::criteria::parse(criteria_text)?.to_string();
    let mut searcher = crate::searcher(&session);
    searcher.set_include_potentially_superseded_updates(args.include_superseded);
    let (result, explanations) = if args.explain {
        searcher.explain(criteria_text)?
    } else {
        (searcher.search(criteria_text)?, Vec::new())
    };
    let relations = Relations::of(&*session.catalog()?);
    let notes = filters.unknown_categories(&result.root_categories);

    let mut kept: Vec<Arc<Update>> = Vec::new();
    let mut rejected: HashMap<Uuid, Rejection> = HashMap::new();
    for u in result.updates.iter() {
        match filters.check(u) {
            Ok(()) => kept.push(u.clone()),
            Err(why) => {
                rejected.insert(u.identity().update_id, why);
            }
        }
    }
    let decisions: Vec<(Arc<Update>, Decision)> = explanations
        .into_iter()
        .map(|e| {
            let decision = match (&e.verdict, rejected.get(&e.update.identity().update_id)) {
                (Verdict::Selected { matched, .. }, Some(why)) => Decision::Filtered {
                    matched: matched.clone(),
                    why: why.clone(),
                },
                _ => Decision::Library(e.verdict),
            };
            (e.update, decision)
        })
        .collect();

    let exit = match result.result_code {
        OperationResultCode::SucceededWithErrors => Exit::SucceededWithErrors,
        _ => Exit::Success,
    };
    if global.json {
        report::print_json(&SearchReport {
            schema_version: report::SCHEMA_VERSION,
            catalog: report::location(&*session.catalog()?),
            root: session.config().root.display().to_string(),
            criteria: canonical,
            include_superseded: args.include_superseded,
            filters: filters.describe(),
            result_code: result.result_code,
            matched_criteria: result.updates.len(),
            updates: kept
                .iter()
                .map(|u| SearchedUpdate::of(u, &relations))
                .collect::<Result<_>>()?,
            warnings: result
                .warnings
                .iter()
                .map(|w| Warning {
                    context: w.context,
                    hresult: w.hresult.into(),
                    message: w.message.clone(),
                })
                .collect(),
            explanations: args
                .explain
                .then(|| decisions.iter().map(|(u, d)| d.explained(u)).collect()),
        });
        return Ok(exit);
    }
    if !global.quiet {
        for note in &notes {
            tell!("wua: note: {note}");
        }
    }
    for w in &result.warnings {
        if !global.quiet {
            tell!("wua: warning: {} [{}]", w.message, w.hresult);
        }
    }
    if global.quiet {
        return Ok(exit);
    }
    let described = filters.describe();
    if args.explain {
        print_explanation(&canonical, &described, &decisions);
        return Ok(exit);
    }
    print_table(&kept, &relations);
    // The summary.
    let mut line = match kept.len() {
        0 => "No updates found".to_string(),
        1 => "1 update found".to_string(),
        n => format!("{n} updates found"),
    };
    line.push_str(&format!(" (criteria: {canonical}"));
    if !described.is_empty() {
        line.push_str(&format!("; filters: {}", described.join(" ")));
        let dropped = result.updates.len() - kept.len();
        if dropped > 0 {
            line.push_str(&format!(
                "; {dropped} more matched the criteria but not the filters"
            ));
        }
    }
    if args.include_superseded {
        line.push_str("; superseded updates included");
    }
    line.push_str(").");
    say!("{line}");
    if kept.is_empty() {
        say!(
            "`wua search --explain` says why each catalog update was left out; `wua list` lists them all."
        );
    }
    Ok(exit)
}

fn print_table(updates: &[Arc<Update>], relations: &Relations) {
    if updates.is_empty() {
        return;
    }
    let rows: Vec<[String; 5]> = updates
        .iter()
        .map(|u| {
            [
                status_letters(u, relations),
                u.identity().update_id.to_string()[..8].to_string(),
                first_kb(u),
                human_size(u.max_download_size()),
                u.title().to_string(),
            ]
        })
        .collect();
    report::print_table(&["STATUS", "ID", "KB", "SIZE", "TITLE"], &rows);
    // The key to the letters that appear.
    let used: Vec<String> = LETTER_NAMES
        .iter()
        .filter(|(c, _)| rows.iter().any(|r| r[0].contains(*c)))
        .map(|(c, name)| format!("{c} {name}"))
        .collect();
    if !used.is_empty() {
        say!("Status: {} (see `wua search --help`).", used.join(", "));
    }
}

fn print_explanation(criteria: &str, filters: &[String], decisions: &[(Arc<Update>, Decision)]) {
    say!("Criteria: {criteria}");
    if !filters.is_empty() {
        say!("Filters:  {}", filters.join(" "));
    }
    say!("");
    let id_of = |u: &Update| u.identity().update_id.to_string()[..8].to_string();
    let kb_width = decisions
        .iter()
        .map(|(u, _)| first_kb(u).chars().count())
        .max()
        .unwrap_or(0);
    for (u, d) in decisions {
        let head = if d.selected() { "selected" } else { "left out" };
        say!(
            "{head}  {}  {:<kb_width$}  {}",
            id_of(u),
            first_kb(u),
            u.title()
        );
        say!("          {}", d.reason());
    }
    let count = |kind: &str| decisions.iter().filter(|(_, d)| d.kind() == kind).count();
    let mut parts = Vec::new();
    for (kind, words) in [
        ("criteria_not_met", "by the criteria"),
        ("not_applicable", "not applicable"),
        ("superseded", "superseded"),
        ("bundled", "parts of bundles"),
        ("filtered_out", "by the filters"),
    ] {
        let n = count(kind);
        if n > 0 {
            parts.push(format!("{n} {words}"));
        }
    }
    say!("");
    let selected = count("selected");
    if parts.is_empty() {
        say!(
            "{selected} of {} catalog updates selected.",
            decisions.len()
        );
    } else {
        say!(
            "{selected} of {} catalog updates selected; left out: {}.",
            decisions.len(),
            parts.join(", ")
        );
    }
}

//! The search itself: detection, criteria, applicability and supersedence over a catalog, with
//! the reason for every decision (`wua search --explain`).
//!
//! The order of decisions for each update of the catalog, in publication order:
//!
//! 1. an update bundled by another is left out: searches return bundles, not their parts
//!    (`nn-wuapi-iupdate`: `BundledUpdates`);
//! 2. the criteria (`iupdatesearcher-search`), with facts computed only when a criterion asks;
//! 3. an update that is not installed must apply: its `is_installable` rule holds;
//! 4. unless `IncludePotentiallySupersededUpdates` is set, an update that is not installed is
//!    left out when an update superseding it is in the same result or is installed (DIGEST §5.3,
//!    §10.16).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use uuid::Uuid;

use crate::catalog::{Catalog, UpdateDefinition};
use crate::error::Result;
use crate::hresult::WU_E_TOO_DEEP_RELATION;
use crate::model::UpdateState;
use crate::model::{DeploymentAction, Update, UpdateExceptionContext, UpdateType};
use crate::rules::{Machine, Stamp};
use crate::search::UpdateException;
use crate::search::criteria::{Criteria, Facts, Term, Unmet};
use crate::session::Agent;
use crate::store::StoreSnapshot;

/// How deep `update_installed` references may chain before detection gives up with
/// `WU_E_TOO_DEEP_RELATION`.
const MAX_RELATION_DEPTH: u32 = 64;

/// The outcome of a detection rule for one update, with the reason.
#[derive(Clone, Debug)]
pub(crate) struct Detected {
    pub holds: bool,
    pub reason: String,
}

/// Evaluates detection rules against one machine and one view of what wua installed, caching
/// each update's `is_installed` answer. One per search (or per install check).
pub(crate) struct Detector<'a> {
    catalog: &'a Catalog,
    installed: &'a HashMap<Uuid, i32>,
    machine: Machine,
    memo: RefCell<HashMap<Uuid, Detected>>,
    depth: Cell<u32>,
    /// Set when an evaluation stopped at [`MAX_RELATION_DEPTH`]; every answer that depended on
    /// it is cut short, so it is neither memoised nor final.
    too_deep: Cell<bool>,
    warnings: RefCell<Vec<(Uuid, UpdateException)>>,
    warned: RefCell<HashSet<Uuid>>,
}

impl<'a> Detector<'a> {
    pub fn new(catalog: &'a Catalog, installed: &'a HashMap<Uuid, i32>, machine: Machine) -> Self {
        Detector {
            catalog,
            installed,
            machine,
            memo: RefCell::new(HashMap::new()),
            depth: Cell::new(0),
            too_deep: Cell::new(false),
            warnings: RefCell::new(Vec::new()),
            warned: RefCell::new(HashSet::new()),
        }
    }

    /// `IsInstalled`: wua installed this revision, or the `is_installed` rule holds.
    pub fn is_installed(&self, def: &UpdateDefinition) -> Detected {
        let id = def.identity.update_id;
        match self.installed.get(&id) {
            Some(&rev) if rev == def.identity.revision_number => {
                return Detected {
                    holds: true,
                    reason: "installed by wua".into(),
                };
            }
            _ => {}
        }
        if let Some(known) = self.memo.borrow().get(&id) {
            return known.clone();
        }
        let outer_too_deep = self.too_deep.replace(false);
        let detected = match &def.applicability.is_installed {
            Some(rule) => self.evaluate(def, rule, "is_installed"),
            None => Detected {
                holds: false,
                reason: match self.installed.get(&id) {
                    Some(rev) => format!("not installed (wua installed revision {rev})"),
                    None => "not installed".into(),
                },
            },
        };
        let too_deep = self.too_deep.get();
        self.too_deep.set(outer_too_deep || too_deep);
        // An answer cut short by the depth limit says only that this update was reached too
        // deep: asked directly (or from a shallower update) it may well be decidable, so it is
        // not remembered. Remembering it made the answer depend on which update the search
        // looked at first.
        if !too_deep {
            self.memo.borrow_mut().insert(id, detected.clone());
        }
        detected
    }

    /// The update applies to this machine: its `is_installable` rule holds or it has none.
    pub fn applies(&self, def: &UpdateDefinition) -> Detected {
        match &def.applicability.is_installable {
            Some(rule) => self.evaluate(def, rule, "is_installable"),
            None => Detected {
                holds: true,
                reason: "applies everywhere (no is_installable rule)".into(),
            },
        }
    }

    /// `update_installed`: some revision was installed by wua, or the catalog's update of that
    /// id is detected as installed.
    fn update_installed(&self, id: Uuid) -> bool {
        self.installed.contains_key(&id)
            || self
                .catalog
                .find(id)
                .is_some_and(|def| self.is_installed(def).holds)
    }

    fn evaluate(&self, def: &UpdateDefinition, rule: &crate::rules::Rule, what: &str) -> Detected {
        if self.depth.get() >= MAX_RELATION_DEPTH {
            // Not a warning about this update, which may be decidable on its own: the update
            // whose evaluation started this chain gets it (below, at depth 0).
            self.too_deep.set(true);
            return Detected {
                holds: false,
                reason: format!("{what}: update relationships too deep to evaluate"),
            };
        }
        let outer_too_deep = self.too_deep.replace(false);
        self.depth.set(self.depth.get() + 1);
        let outcome = rule.evaluate(&self.machine, &mut |id| self.update_installed(id));
        self.depth.set(self.depth.get() - 1);
        let too_deep = self.too_deep.get();
        self.too_deep.set(outer_too_deep || too_deep);
        if too_deep && self.depth.get() == 0 && outcome.is_ok() {
            // Whatever the rule gave, it rests on answers cut short (a `not` can even turn one
            // into "holds"): the answer is unknown.
            self.warn(
                def,
                WU_E_TOO_DEEP_RELATION,
                format!(
                    "its {what} rule depends on more than {MAX_RELATION_DEPTH} levels of update_installed rules; treated as not holding"
                ),
            );
            return Detected {
                holds: false,
                reason: format!(
                    "{what}: update relationships too deep to evaluate (more than {MAX_RELATION_DEPTH} levels of update_installed rules)"
                ),
            };
        }
        match outcome {
            Ok(verdict) => Detected {
                holds: verdict.holds,
                reason: verdict.reason,
            },
            Err(e) => {
                let reason = format!("{what} could not be evaluated: {e}");
                self.warn(
                    def,
                    e.hresult(),
                    format!("{reason}; treated as not holding"),
                );
                Detected {
                    holds: false,
                    reason,
                }
            }
        }
    }

    fn warn(&self, def: &UpdateDefinition, hresult: crate::HResult, message: String) {
        if self.warned.borrow_mut().insert(def.identity.update_id) {
            self.warnings.borrow_mut().push((
                def.identity.update_id,
                UpdateException {
                    context: UpdateExceptionContext::General,
                    hresult,
                    message: format!(
                        "update {} ({}): {message}",
                        def.identity.update_id, def.title
                    ),
                },
            ));
        }
    }

    /// The warnings so far, each with the update it is about.
    pub fn take_warnings(&self) -> Vec<(Uuid, UpdateException)> {
        std::mem::take(&mut self.warnings.borrow_mut())
    }
}

/// How long before a detection run the files it read must have last changed for its answers
/// to be reused: comfortably more than any file system's timestamp granularity.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// Detection answers for every update of the catalog, by position, kept by the session so that
/// later searches do not evaluate rules again. Valid while wua's installed updates are the same
/// and nothing any rule looked at has changed (each path's [`Stamp`], taken before it was read);
/// rules depend on nothing else.
#[derive(Debug)]
pub(crate) struct DetectionCache {
    /// Whether every stamp was settled (changed more than [`SETTLE`] before it was taken); if
    /// not, the answers are used by no later search.
    settled: bool,
    installed: HashMap<Uuid, i32>,
    looked_at: Vec<(PathBuf, Stamp)>,
    is_installed: Vec<bool>,
    applies: Vec<bool>,
    warnings: Vec<(Uuid, UpdateException)>,
}

impl DetectionCache {
    /// Evaluates every update's rules, the catalog split over the machine's cores (each part
    /// with its own detector and `Machine`; `update_installed` answers across parts are simply
    /// evaluated again).
    fn compute(agent: &Agent, catalog: &Catalog, snapshot: &StoreSnapshot) -> DetectionCache {
        let started = std::time::SystemTime::now();
        let updates = catalog.updates();
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 8);
        let chunk = updates.len().div_ceil(threads).max(1024);
        let evaluate = |part: &[Arc<UpdateDefinition>]| {
            let detector = Detector::new(
                catalog,
                &snapshot.installed,
                Machine::new(&agent.config.root),
            );
            let answers: Vec<(bool, bool)> = part
                .iter()
                .map(|def| {
                    (
                        detector.is_installed(def).holds,
                        detector.applies(def).holds,
                    )
                })
                .collect();
            (
                answers,
                detector.machine.looked_at(),
                detector.take_warnings(),
            )
        };
        let parts: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = updates
                .chunks(chunk)
                .map(|part| scope.spawn(move || evaluate(part)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        let mut cache = DetectionCache {
            settled: false,
            installed: snapshot.installed.clone(),
            looked_at: Vec::new(),
            is_installed: Vec::with_capacity(updates.len()),
            applies: Vec::with_capacity(updates.len()),
            warnings: Vec::new(),
        };
        for (answers, looked_at, warnings) in parts {
            for (installed, applies) in answers {
                cache.is_installed.push(installed);
                cache.applies.push(applies);
            }
            // The same path may come from several parts; every stamp must still hold.
            cache.looked_at.extend(looked_at);
            cache.warnings.extend(warnings);
        }
        cache.settled = started.checked_sub(SETTLE).is_some_and(|t| {
            cache
                .looked_at
                .iter()
                .all(|(_, stamp)| stamp.settled_before(t))
        });
        cache
    }

    fn is_valid(&self, snapshot: &StoreSnapshot) -> bool {
        self.settled
            && self.installed == snapshot.installed
            && self
                .looked_at
                .iter()
                .all(|(path, stamp)| Stamp::of(path) == *stamp)
    }
}

/// The session's detection answers, evaluated again first if anything they rest on changed.
fn cached_detection(
    agent: &Agent,
    catalog: &Arc<Catalog>,
    snapshot: &StoreSnapshot,
) -> Arc<DetectionCache> {
    let mut slot = agent
        .detection
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // The cache belongs to one catalog: another service's, or a refreshed one, starts afresh.
    if let Some((for_catalog, cache)) = slot.as_ref()
        && Arc::ptr_eq(for_catalog, catalog)
        && cache.is_valid(snapshot)
    {
        return cache.clone();
    }
    let fresh = Arc::new(DetectionCache::compute(agent, catalog, snapshot));
    *slot = Some((catalog.clone(), fresh.clone()));
    fresh
}

/// Where a search gets detection answers: evaluated now, with reasons (for `explain`), or the
/// session's cache (plain answers, no reasons).
enum Detection<'a> {
    Live(Box<Detector<'a>>),
    Cached(Arc<DetectionCache>),
}

impl Detection<'_> {
    fn is_installed(&self, index: usize, def: &UpdateDefinition) -> Detected {
        match self {
            Detection::Live(d) => d.is_installed(def),
            Detection::Cached(c) => Detected {
                holds: c.is_installed[index],
                reason: String::new(),
            },
        }
    }

    fn applies(&self, index: usize, def: &UpdateDefinition) -> Detected {
        match self {
            Detection::Live(d) => d.applies(def),
            Detection::Cached(c) => Detected {
                holds: c.applies[index],
                reason: String::new(),
            },
        }
    }

    /// The warnings about the updates marked in `about` (by position).
    fn warnings(&self, catalog: &Catalog, about: &[bool]) -> Vec<UpdateException> {
        match self {
            Detection::Live(d) => d.take_warnings().into_iter().map(|(_, w)| w).collect(),
            Detection::Cached(c) => c
                .warnings
                .iter()
                .filter(|(id, _)| catalog.position(*id).is_some_and(|i| about[i]))
                .map(|(_, w)| w.clone())
                .collect(),
        }
    }
}

/// Why a search returned an update or left it out (`wua search --explain`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Returned: it matched this AND-group of the criteria (printed canonically) and applies.
    Selected {
        /// The AND-group that matched.
        matched: String,
        /// Why it counts as applicable (or that it is installed).
        because: String,
    },
    /// Left out: another update bundles it; searches return the bundle.
    Bundled {
        /// The bundle.
        parent: Uuid,
        /// The bundle's title.
        parent_title: String,
    },
    /// Left out: no AND-group matched. One entry per group: its first unmet criterion and what
    /// the update has instead.
    CriteriaNotMet {
        /// Per AND-group, in order.
        unmet: Vec<String>,
    },
    /// Left out: not installed, and its `is_installable` rule does not hold.
    NotApplicable {
        /// The deciding rule and what was found.
        reason: String,
    },
    /// Left out: superseded by an update in the same result or an installed one.
    Superseded {
        /// The superseding update.
        by: Uuid,
        /// Its title.
        by_title: String,
        /// True when the superseding update is installed (else it is in the result).
        by_installed: bool,
    },
}

impl Verdict {
    /// True when the search returned the update.
    pub fn is_selected(&self) -> bool {
        matches!(self, Verdict::Selected { .. })
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Selected { matched, because } => {
                write!(f, "selected: matches {matched}; {because}")
            }
            Verdict::Bundled {
                parent,
                parent_title,
            } => write!(f, "left out: bundled in \"{parent_title}\" ({parent})"),
            Verdict::CriteriaNotMet { unmet } => {
                write!(f, "left out by the criteria: {}", unmet.join("; or "))
            }
            Verdict::NotApplicable { reason } => {
                write!(f, "left out: does not apply: {reason}")
            }
            Verdict::Superseded {
                by,
                by_title,
                by_installed,
            } => {
                // "Found", not "in the result": the superseder may itself be superseded.
                let where_ = if *by_installed {
                    "which is installed"
                } else {
                    "which this search also found"
                };
                write!(f, "left out: superseded by \"{by_title}\" ({by}), {where_}")
            }
        }
    }
}

/// One update of the catalog and what the search decided about it.
#[derive(Clone, Debug)]
pub struct Explanation {
    /// The update, with its state on this machine.
    pub update: Arc<Update>,
    /// The decision and its reason.
    pub verdict: Verdict,
}

pub(crate) struct Options {
    pub include_superseded: bool,
    pub explain: bool,
}

pub(crate) struct Outcome {
    pub updates: Vec<Arc<Update>>,
    pub explanations: Vec<Explanation>,
    pub warnings: Vec<UpdateException>,
    pub aborted: bool,
}

/// The facts criteria ask about one catalog update, computed on demand.
struct Candidate<'d, 'a> {
    index: usize,
    def: &'d UpdateDefinition,
    detection: &'d Detection<'a>,
    snapshot: &'d StoreSnapshot,
    /// Whether a criterion asked for detection (the update's detection warnings then concern
    /// this search).
    detected: Cell<bool>,
}

impl Facts for Candidate<'_, '_> {
    fn update_type(&self) -> UpdateType {
        self.def.update_type
    }
    fn deployment_action(&self) -> DeploymentAction {
        self.def.deployment_action
    }
    fn is_assigned(&self) -> bool {
        self.def.is_assigned()
    }
    fn browse_only(&self) -> bool {
        self.def.browse_only
    }
    fn auto_select_on_web_sites(&self) -> bool {
        self.def.auto_select_on_web_sites()
    }
    fn update_id(&self) -> Uuid {
        self.def.identity.update_id
    }
    fn revision_number(&self) -> i32 {
        self.def.identity.revision_number
    }
    fn in_category(&self, id: Uuid) -> bool {
        self.def.categories.iter().any(|c| c.id == id)
    }
    fn is_installed(&self) -> bool {
        self.detected.set(true);
        self.detection.is_installed(self.index, self.def).holds
    }
    fn is_hidden(&self) -> bool {
        self.snapshot.hidden.contains(&self.def.identity.update_id)
    }
    fn is_present(&self) -> bool {
        self.snapshot
            .installed
            .contains_key(&self.def.identity.update_id)
            || self.is_installed()
    }
    fn reboot_required(&self) -> bool {
        self.snapshot
            .reboot_pending
            .contains(&self.def.identity.update_id)
    }
}

impl Candidate<'_, '_> {
    /// "<criterion>: <what the update has instead>".
    fn describe(&self, unmet: Unmet<'_>) -> String {
        let yes_no =
            |b: bool, yes: &str, no: &str| if b { yes.to_string() } else { no.to_string() };
        let has = match unmet {
            Unmet::ImpliedDeploymentAction(_) => {
                format!("it is deployed for {}", self.def.deployment_action)
            }
            Unmet::Term(term) => match term {
                Term::Type { .. } => format!("it is {}", self.def.update_type),
                Term::DeploymentAction(_) => {
                    format!("it is deployed for {}", self.def.deployment_action)
                }
                Term::IsAssigned(_) => {
                    yes_no(self.is_assigned(), "it is assigned", "it is not assigned")
                }
                Term::BrowseOnly(_) => yes_no(
                    self.browse_only(),
                    "it is browse-only",
                    "it is not browse-only",
                ),
                Term::AutoSelectOnWebSites(_) => yes_no(
                    self.auto_select_on_web_sites(),
                    "it is auto-selected",
                    "it is not auto-selected",
                ),
                Term::UpdateId { .. } => format!("its id is {}", self.def.identity.update_id),
                Term::RevisionNumber(_) => {
                    format!("its revision is {}", self.def.identity.revision_number)
                }
                Term::CategoryId(_) => {
                    let names: Vec<&str> = self
                        .def
                        .categories
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect();
                    if names.is_empty() {
                        "it has no category".into()
                    } else {
                        format!("its categories are {}", names.join(", "))
                    }
                }
                Term::IsInstalled(_) => {
                    let d = self.detection.is_installed(self.index, self.def);
                    if d.holds {
                        format!("it is installed: {}", d.reason)
                    } else {
                        format!("it is not installed: {}", d.reason)
                    }
                }
                Term::IsHidden(_) => yes_no(self.is_hidden(), "it is hidden", "it is not hidden"),
                Term::IsPresent(_) => {
                    yes_no(self.is_present(), "it is present", "it is not present")
                }
                Term::RebootRequired(_) => yes_no(
                    self.reboot_required(),
                    "it waits for a restart",
                    "it does not wait for a restart",
                ),
            },
        };
        format!("{unmet}: {has}")
    }
}

/// Digests of the payload files in the catalog's content store, read once per search so that
/// `IsDownloaded` costs no system call per update.
pub(crate) fn payload_names(catalog: &Catalog) -> HashSet<String> {
    std::fs::read_dir(catalog.payload_dir())
        .map(|entries| {
            entries
                .filter_map(|e| {
                    let name = e.ok()?.file_name().into_string().ok()?;
                    name.strip_suffix(".tar.zst").map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Builds [`Update`] objects with their state, children first for bundles.
struct Builder<'d, 'a> {
    agent: &'d Agent,
    catalog: &'d Arc<Catalog>,
    detection: &'d Detection<'a>,
    snapshot: &'d StoreSnapshot,
    payloads: HashSet<String>,
}

impl Builder<'_, '_> {
    fn update(&self, index: usize) -> Arc<Update> {
        let catalog = self.catalog;
        let def = &catalog.updates()[index];
        let bundled = def
            .bundled_updates
            .iter()
            .filter_map(|id| catalog.position(*id))
            .map(|child| self.update(child))
            .collect();
        let id = def.identity.update_id;
        let is_installed = self.detection.is_installed(index, def).holds;
        let state = UpdateState {
            is_installed,
            is_installable: self.detection.applies(index, def).holds,
            is_present: is_installed || self.snapshot.installed.contains_key(&id),
            is_downloaded: self.payloads.contains(def.payload.sha256.as_str()),
            is_hidden: self.snapshot.hidden.contains(&id),
            eula_accepted: def.eula_text.is_none()
                || self.snapshot.eulas.contains_key(&def.identity),
        };
        Arc::new(Update::new(
            def.clone(),
            state,
            bundled,
            Some(self.agent.store.clone()),
            Some(catalog.clone()),
        ))
    }
}

/// Runs a search over the agent's catalog. With `explain`, rules are evaluated now, with
/// reasons; otherwise the session's cached detection answers are used.
pub(crate) fn run(
    agent: &Agent,
    catalog: &Arc<Catalog>,
    criteria: &Criteria,
    options: &Options,
    abort: &AtomicBool,
) -> Result<Outcome> {
    let snapshot = agent.store.snapshot()?;
    let detection = if options.explain {
        Detection::Live(Box::new(Detector::new(
            catalog,
            &snapshot.installed,
            Machine::new(&agent.config.root),
        )))
    } else {
        Detection::Cached(cached_detection(agent, catalog, &snapshot))
    };
    let builder = Builder {
        agent,
        catalog,
        detection: &detection,
        snapshot: &snapshot,
        payloads: payload_names(catalog),
    };
    let relations = catalog.relations();

    // Decisions before supersedence; `None` means a candidate.
    let mut verdicts: Vec<Option<Verdict>> = Vec::with_capacity(catalog.updates().len());
    let mut candidates: Vec<bool> = vec![false; catalog.updates().len()];
    // Updates whose detection this search used: its warnings are about these.
    let mut considered: Vec<bool> = vec![false; catalog.updates().len()];
    let mut matched_group: Vec<usize> = Vec::new();
    for (index, def) in catalog.updates().iter().enumerate() {
        if abort.load(Ordering::Relaxed) {
            return Ok(Outcome {
                updates: Vec::new(),
                explanations: Vec::new(),
                warnings: Vec::new(),
                aborted: true,
            });
        }
        // One event per update examined, after the abort check: `RUST_LOG=wua::search=trace`
        // shows where a slow search spends its time, and tests hold a search at a known update
        // with it (nothing else in a search can block: rules never read FIFOs).
        tracing::trace!(
            update_id = %def.identity.update_id,
            title = def.title.as_str(),
            "search: examining update"
        );
        let facts = Candidate {
            index,
            def,
            detection: &detection,
            snapshot: &snapshot,
            detected: Cell::new(false),
        };
        matched_group.push(usize::MAX);
        if let Some(parent) = relations.bundled_in[index] {
            let parent = &catalog.updates()[parent];
            verdicts.push(Some(Verdict::Bundled {
                parent: parent.identity.update_id,
                parent_title: parent.title.clone(),
            }));
            continue;
        }
        let matched = criteria.groups.iter().position(|g| g.matches(&facts));
        considered[index] = matched.is_some() || facts.detected.get();
        let Some(group) = matched else {
            let unmet = if options.explain {
                criteria
                    .groups
                    .iter()
                    .filter_map(|g| g.first_unmet(&facts))
                    .map(|u| facts.describe(u))
                    .collect()
            } else {
                Vec::new()
            };
            verdicts.push(Some(Verdict::CriteriaNotMet { unmet }));
            continue;
        };
        matched_group[index] = group;
        if !detection.is_installed(index, def).holds {
            let applies = detection.applies(index, def);
            if !applies.holds {
                verdicts.push(Some(Verdict::NotApplicable {
                    reason: applies.reason,
                }));
                continue;
            }
        }
        candidates[index] = true;
        verdicts.push(None);
    }

    if !options.include_superseded {
        for (index, def) in catalog.updates().iter().enumerate() {
            if verdicts[index].is_some() {
                continue;
            }
            let newer = &relations.superseded_by[index];
            if newer.is_empty() {
                continue;
            }
            if detection.is_installed(index, def).holds {
                continue;
            }
            let updates = catalog.updates();
            let by = newer
                .iter()
                .find(|&&n| candidates[n])
                .map(|&n| (n, false))
                .or_else(|| {
                    newer
                        .iter()
                        .find(|&&n| detection.is_installed(n, &updates[n]).holds)
                        .map(|&n| (n, true))
                });
            if let Some((n, by_installed)) = by {
                verdicts[index] = Some(Verdict::Superseded {
                    by: updates[n].identity.update_id,
                    by_title: updates[n].title.clone(),
                    by_installed,
                });
            }
        }
    }

    let mut updates = Vec::new();
    let mut explanations = Vec::new();
    for (index, (def, verdict)) in catalog.updates().iter().zip(verdicts).enumerate() {
        match verdict {
            None => {
                let update = builder.update(index);
                if options.explain {
                    let because = if update.is_installed() {
                        detection.is_installed(index, def).reason
                    } else {
                        detection.applies(index, def).reason
                    };
                    explanations.push(Explanation {
                        update: update.clone(),
                        verdict: Verdict::Selected {
                            matched: criteria.groups[matched_group[index]].to_string(),
                            because,
                        },
                    });
                }
                updates.push(update);
            }
            Some(verdict) if options.explain => explanations.push(Explanation {
                update: builder.update(index),
                verdict,
            }),
            Some(_) => {}
        }
    }
    Ok(Outcome {
        updates,
        explanations,
        warnings: detection.warnings(catalog, &considered),
        aborted: false,
    })
}

/// Every update of the catalog with its state, in publication order (bundled parts and updates
/// that do not apply included).
pub(crate) fn all_updates(agent: &Agent, catalog: &Arc<Catalog>) -> Result<Vec<Arc<Update>>> {
    let snapshot = agent.store.snapshot()?;
    let detection = Detection::Cached(cached_detection(agent, catalog, &snapshot));
    let builder = Builder {
        agent,
        catalog,
        detection: &detection,
        snapshot: &snapshot,
        payloads: payload_names(catalog),
    };
    Ok((0..catalog.updates().len())
        .map(|index| builder.update(index))
        .collect())
}

/// Checks again, just before installing, that the update applies to the machine as it is now
/// (an earlier update of the same job may have been its prerequisite). `Ok(None)` when it
/// applies; otherwise the reason.
pub(crate) fn check_applies(
    agent: &Agent,
    catalog: &Catalog,
    def: &UpdateDefinition,
) -> Result<Option<String>> {
    if def.applicability.is_installable.is_none() {
        return Ok(None);
    }
    let snapshot = agent.store.snapshot()?;
    let detector = Detector::new(
        catalog,
        &snapshot.installed,
        Machine::new(&agent.config.root),
    );
    let applies = detector.applies(def);
    Ok((!applies.holds).then_some(applies.reason))
}

//! `wua install` and `wua uninstall`: choose the updates, run them as installation jobs with a
//! live progress display, abort on Ctrl-C, and report.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use wua::hresult::HResult;
use wua::{
    InstallationJob, InstallationProgressChangedCallbackArgs, InstallationResult, NoCallback,
    OperationResultCode, Update, UpdateInstallationResult, UpdateOperation, UpdateSession,
};

use crate::Exit;
use crate::cli::{GlobalArgs, InstallArgs, UninstallArgs};
use crate::report::{self, HResultJson};
use crate::select::{self, Pool};

/// What each job carries as its `async_state`: where its updates sit in the whole run, so the
/// progress callback can number them across batches.
struct Batch {
    offset: usize,
    total: usize,
    titles: Vec<String>,
}

/// The job Ctrl-C aborts, and whether it was pressed.
static CURRENT_JOB: Mutex<Option<InstallationJob<Batch>>> = Mutex::new(None);
static ABORT_REQUESTED: AtomicBool = AtomicBool::new(false);

/// Whether Ctrl-C (or SIGTERM/SIGHUP) was pressed.
pub fn abort_requested() -> bool {
    ABORT_REQUESTED.load(Ordering::SeqCst)
}

pub fn install_ctrlc_handler() {
    let _ = ctrlc::set_handler(|| {
        if ABORT_REQUESTED.swap(true, Ordering::SeqCst) {
            tell!("wua: abort already requested; waiting for wua to stop");
        } else {
            tell!(
                "wua: abort requested; stopping (an update being installed is rolled back, a download is kept to resume)…"
            );
        }
        if let Some(job) = CURRENT_JOB
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            job.request_abort();
        }
        crate::download::abort_current();
    });
}

const ALREADY_INSTALLED: &str = "already installed (pass --force to reinstall)";

/// An update left out before anything ran, and why.
#[derive(Serialize)]
pub struct Skipped {
    pub update_id: String,
    pub title: String,
    pub reason: String,
}

#[derive(Serialize)]
struct UpdateOutcome {
    update_id: String,
    revision_number: i32,
    title: String,
    result_code: OperationResultCode,
    hresult: HResultJson,
    reboot_required: bool,
    /// Install only: the code of this update's failed download, if it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    download_hresult: Option<HResultJson>,
}

#[derive(Serialize)]
struct RunReport {
    schema_version: u32,
    operation: UpdateOperation,
    root: String,
    result_code: OperationResultCode,
    hresult: HResultJson,
    reboot_required: bool,
    updates: Vec<UpdateOutcome>,
    skipped: Vec<Skipped>,
    /// Install only: updates that apply now and did not before the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    became_applicable: Option<Vec<BecameApplicable>>,
    /// Why a batch was refused before it started, if one was.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<report::ErrorDetail>,
}

pub fn install(global: &GlobalArgs, args: &InstallArgs) -> Result<Exit> {
    let session = crate::open_session_online(global, crate::paths::Access::Write)?;
    // The candidates are what a search finds: by default WUA's default search (not installed,
    // not hidden, applicable, not superseded); with --force installed ones too, to reinstall.
    let default_criteria = if args.force {
        "IsHidden = 0"
    } else {
        select::DEFAULT_CRITERIA
    };
    let choice = select::choose(
        &session,
        &args.selection,
        Pool::Catalog {
            default_criteria,
            include_superseded: false,
        },
        args.selection.all || args.accept_all,
        "install",
    )?;
    choice.tell_notes(global.quiet);
    let accept = args.accept_eula || args.accept_all;
    let before = applicable_now(&session)?;
    let mut skipped = left_out(&choice);
    let mut updates = Vec::new();
    for update in choice.updates {
        if update.is_installed() && !args.force {
            skipped.push(skip(&update, ALREADY_INSTALLED));
            continue;
        }
        let parts = update.bundled_updates();
        let unaccepted: Vec<&Update> = std::iter::once(&*update)
            .chain(parts.iter().map(|p| &**p))
            .filter(|u| !u.eula_accepted())
            .collect();
        if !unaccepted.is_empty() {
            if accept {
                for u in unaccepted {
                    if !global.json && !global.quiet {
                        tell!(
                            "Licence terms of \"{}\":\n{}\n",
                            u.title(),
                            indent(u.eula_text().unwrap_or_default())
                        );
                    }
                    u.accept_eula()?;
                }
            } else if !choice.named {
                skipped.push(skip(
                    &update,
                    "licence terms not accepted (pass --accept-eula or --accept-all)",
                ));
                continue;
            }
        }
        updates.push(update);
    }
    // WUA's flow: download, then install. An update whose download failed stays in the job
    // and fails there with WU_E_DM_NOTDOWNLOADED (DIGEST §10.6); its download's own code is
    // reported beside it (`download_hresult`).
    crate::download::fetch(&session, global, &updates, false)?;
    if abort_requested() {
        // Nothing was installed; the partial downloads stay for the next run.
        if !global.json && !global.quiet {
            tell!("wua: aborted while downloading; nothing was installed");
        }
        return Ok(Exit::Aborted);
    }
    run(
        &session,
        global,
        UpdateOperation::Installation,
        updates,
        skipped,
        Some(before),
        |i| {
            i.set_is_forced(args.force);
            i.set_force_quiet(args.force_quiet);
        },
    )
}

pub fn uninstall(global: &GlobalArgs, args: &UninstallArgs) -> Result<Exit> {
    let session = crate::open_session(global, crate::paths::Access::Write)?;
    let choice = select::choose(
        &session,
        &args.selection,
        Pool::Installed,
        args.selection.all || args.accept_all,
        "uninstall",
    )?;
    choice.tell_notes(global.quiet);
    let mut skipped = left_out(&choice);
    let mut updates = Vec::new();
    for update in choice.updates {
        if !choice.named && !update.is_uninstallable() {
            skipped.push(skip(&update, "not uninstallable"));
            continue;
        }
        updates.push(update);
    }
    run(
        &session,
        global,
        UpdateOperation::Uninstallation,
        updates,
        skipped,
        None,
        |_| {},
    )
}

/// What the selection itself left out: named updates a filter rejected, and parts of a bundle
/// that is selected too.
pub fn left_out(choice: &select::Choice) -> Vec<Skipped> {
    let mut skipped: Vec<Skipped> = choice
        .filtered_out
        .iter()
        .map(|(u, why)| skip(u, &why.to_string()))
        .collect();
    for (part, bundle) in &choice.in_bundle {
        skipped.push(skip(
            part,
            &format!(
                "part of the bundle \"{}\", which is selected too and includes it",
                bundle.title()
            ),
        ));
    }
    skipped
}

/// The updates WUA's default search finds now: after an install, those it finds that it did not
/// find before have become applicable (an installed prerequisite, typically).
fn applicable_now(session: &UpdateSession) -> Result<Vec<Arc<Update>>> {
    Ok(crate::searcher(session)
        .search(select::DEFAULT_CRITERIA)?
        .updates
        .iter()
        .cloned()
        .collect())
}

/// An update that became applicable during this run.
#[derive(Serialize)]
struct BecameApplicable {
    update_id: String,
    revision_number: i32,
    title: String,
    kb_article_ids: Vec<String>,
}

/// The argument that names `update` on the command line: its KB number when only it has that
/// KB article, else its id.
fn command_name(update: &Update, all: &[Arc<wua::UpdateDefinition>]) -> String {
    match update.kb_article_ids().first() {
        Some(kb) if all.iter().filter(|u| u.kb_article_ids.contains(kb)).count() == 1 => {
            format!("KB{kb}")
        }
        _ => update.identity().update_id.to_string(),
    }
}

pub fn skip(update: &Update, reason: &str) -> Skipped {
    Skipped {
        update_id: update.identity().update_id.to_string(),
        title: update.title().to_string(),
        reason: reason.to_string(),
    }
}

pub fn indent(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.trim().is_empty() {
                String::new()
            } else {
                format!("    {l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn run(
    session: &UpdateSession,
    global: &GlobalArgs,
    operation: UpdateOperation,
    updates: Vec<Arc<Update>>,
    skipped: Vec<Skipped>,
    applicable_before: Option<Vec<Arc<Update>>>,
    configure: impl Fn(&mut wua::UpdateInstaller),
) -> Result<Exit> {
    let verb = match operation {
        UpdateOperation::Installation => "install",
        UpdateOperation::Uninstallation => "uninstall",
    };
    let root = session.config().root.display().to_string();
    let text = !global.json && !global.quiet;
    if text {
        // With --all, installed updates are the common case: count them, do not list them.
        let installed = skipped
            .iter()
            .filter(|s| s.reason == ALREADY_INSTALLED)
            .count();
        for s in &skipped {
            if s.reason != ALREADY_INSTALLED || installed == 1 {
                tell!("Skipping \"{}\": {}", s.title, s.reason);
            }
        }
        if installed > 1 {
            tell!("Skipping {installed} updates: already installed (pass --force to reinstall)");
        }
    }
    if updates.is_empty() {
        if global.json {
            report::print_json(&RunReport {
                schema_version: report::SCHEMA_VERSION,
                operation,
                root,
                result_code: OperationResultCode::Succeeded,
                hresult: wua::hresult::S_OK.into(),
                reboot_required: false,
                updates: vec![],
                skipped,
                became_applicable: applicable_before.as_ref().map(|_| Vec::new()),
                error: None,
            });
        } else if !global.quiet {
            say!("Nothing to {verb}.");
        }
        return Ok(Exit::Success);
    }
    install_ctrlc_handler();
    let total = updates.len();
    if text {
        let noun = if total == 1 { "update" } else { "updates" };
        let verb_ing = match operation {
            UpdateOperation::Installation => "Installing",
            UpdateOperation::Uninstallation => "Uninstalling",
        };
        say!("{verb_ing} {total} {noun} in {root}");
    }
    let display = Display::new(global, total);
    let mut outcomes: Vec<(Arc<Update>, UpdateInstallationResult)> = Vec::new();
    let mut stop: Option<wua::Error> = None;
    let mut offset = 0;
    for batch in select::batches(updates, operation == UpdateOperation::Uninstallation) {
        let n = batch.len();
        if ABORT_REQUESTED.load(Ordering::SeqCst) || stop.is_some() {
            for u in batch {
                outcomes.push((u, not_run(ABORT_REQUESTED.load(Ordering::SeqCst))));
            }
            offset += n;
            continue;
        }
        let mut installer = session.create_update_installer();
        installer.set_client_application_id(global.client_id.clone());
        configure(&mut installer);
        installer.set_updates(&batch.iter().cloned().collect());
        let state = Batch {
            offset,
            total,
            titles: batch.iter().map(|u| u.title().to_string()).collect(),
        };
        let on_progress = display.progress_callback(operation);
        let started = match operation {
            UpdateOperation::Installation => {
                installer.begin_install(on_progress, NoCallback, state)
            }
            UpdateOperation::Uninstallation => {
                installer.begin_uninstall(on_progress, NoCallback, state)
            }
        };
        let job = match started {
            Ok(job) => job,
            Err(e) => {
                // The whole batch was refused (busy, pending restart, licence terms): report
                // its updates as not run and stop here.
                for u in batch {
                    outcomes.push((u, refused(e.hresult())));
                }
                stop = Some(e);
                offset += n;
                continue;
            }
        };
        *CURRENT_JOB.lock().unwrap_or_else(|e| e.into_inner()) = Some(job.clone());
        if ABORT_REQUESTED.load(Ordering::SeqCst) {
            job.request_abort();
        }
        let result = match operation {
            UpdateOperation::Installation => installer.end_install(&job),
            UpdateOperation::Uninstallation => installer.end_uninstall(&job),
        }?;
        job.clean_up();
        *CURRENT_JOB.lock().unwrap_or_else(|e| e.into_inner()) = None;
        for (u, r) in batch.into_iter().zip(result.update_results) {
            outcomes.push((u, r));
        }
        offset += n;
    }
    display.finish();
    let overall = InstallationResult::aggregate(outcomes.iter().map(|(_, r)| *r).collect());
    let became_applicable = match &applicable_before {
        Some(before) if outcomes.iter().any(|(_, r)| r.result_code.is_success()) => {
            let before: std::collections::HashSet<_> =
                before.iter().map(|u| u.identity()).collect();
            applicable_now(session)?
                .into_iter()
                .filter(|u| !before.contains(&u.identity()))
                .collect()
        }
        _ => Vec::new(),
    };
    if global.json {
        report::print_json(&RunReport {
            schema_version: report::SCHEMA_VERSION,
            operation,
            root,
            result_code: overall.result_code,
            hresult: overall.hresult.into(),
            reboot_required: overall.reboot_required,
            updates: outcomes
                .iter()
                .map(|(u, r)| UpdateOutcome {
                    update_id: u.identity().update_id.to_string(),
                    revision_number: u.identity().revision_number,
                    title: u.title().to_string(),
                    result_code: r.result_code,
                    hresult: r.hresult.into(),
                    reboot_required: r.reboot_required,
                    download_hresult: crate::download::failure_of(u).map(Into::into),
                })
                .collect(),
            skipped,
            became_applicable: applicable_before.as_ref().map(|_| {
                became_applicable
                    .iter()
                    .map(|u| BecameApplicable {
                        update_id: u.identity().update_id.to_string(),
                        revision_number: u.identity().revision_number,
                        title: u.title().to_string(),
                        kb_article_ids: u.kb_article_ids().to_vec(),
                    })
                    .collect()
            }),
            error: stop.as_ref().map(report::ErrorDetail::from_wua),
        });
    } else if !global.quiet {
        print_summary(&outcomes, &overall, verb);
        if !became_applicable.is_empty() {
            // Definitions suffice to tell whether a KB number is unique.
            let catalog = session.catalog()?;
            let all = catalog.updates();
            let (noun, verb_s) = if became_applicable.len() == 1 {
                ("update applies", "it")
            } else {
                ("updates apply", "them")
            };
            say!(
                "{} {noun} now that did not before:",
                became_applicable.len()
            );
            for u in &became_applicable {
                say!("  {}  {}", command_name(u, all), u.title());
            }
            // A pending mandatory restart would refuse that install (exit 5): say so first.
            let after = if session
                .create_update_installer()
                .reboot_required_before_installation()?
            {
                "After the restart, install"
            } else {
                "Install"
            };
            say!(
                "{after} {verb_s} with: wua install {}",
                became_applicable
                    .iter()
                    .map(|u| command_name(u, all))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
    }
    if let Some(e) = &stop
        && !global.json
    {
        tell!("wua: {e}");
    }
    Ok(Exit::from_result(&overall, stop.as_ref()))
}

fn not_run(aborted: bool) -> UpdateInstallationResult {
    UpdateInstallationResult {
        hresult: if aborted {
            wua::hresult::WU_E_CALL_CANCELLED
        } else {
            wua::hresult::WU_E_UPDATE_NOT_PROCESSED
        },
        reboot_required: false,
        result_code: if aborted {
            OperationResultCode::Aborted
        } else {
            OperationResultCode::NotStarted
        },
    }
}

fn refused(hresult: HResult) -> UpdateInstallationResult {
    UpdateInstallationResult {
        hresult,
        reboot_required: false,
        result_code: OperationResultCode::Failed,
    }
}

fn print_summary(
    outcomes: &[(Arc<Update>, UpdateInstallationResult)],
    overall: &InstallationResult,
    verb: &str,
) {
    let count = |pred: fn(&UpdateInstallationResult) -> bool| {
        outcomes.iter().filter(|(_, r)| pred(r)).count()
    };
    let ok = count(|r| r.result_code.is_success());
    let failed = count(|r| r.result_code == OperationResultCode::Failed);
    let aborted = count(|r| r.result_code == OperationResultCode::Aborted);
    let not_run = count(|r| r.result_code == OperationResultCode::NotStarted);
    let mut parts = vec![format!("{ok} succeeded")];
    if failed > 0 {
        parts.push(format!("{failed} failed"));
    }
    if aborted > 0 {
        parts.push(format!("{aborted} aborted"));
    }
    if not_run > 0 {
        parts.push(format!("{not_run} not run"));
    }
    say!("Result: {} ({})", overall.result_code, parts.join(", "));
    for (u, r) in outcomes {
        if !r.result_code.is_success() && r.result_code != OperationResultCode::NotStarted {
            let hint = if r.hresult == wua::hresult::WU_E_NOT_APPLICABLE {
                " (`wua search --explain` says why)"
            } else {
                ""
            };
            say!("  {} \"{}\": {}{hint}", r.result_code, u.title(), r.hresult);
        }
    }
    if overall.reboot_required {
        say!("A restart is required to complete the {verb}ation.");
    }
}

/// The live display: progress bars on a terminal, plain lines otherwise, nothing for --json or
/// --quiet.
#[derive(Clone)]
struct Display {
    mode: Mode,
}

#[derive(Clone)]
enum Mode {
    Silent,
    Lines,
    Bars {
        multi: MultiProgress,
        overall: ProgressBar,
    },
}

impl Display {
    fn new(global: &GlobalArgs, total: usize) -> Display {
        let mode = if global.json || global.quiet {
            Mode::Silent
        } else if std::io::stderr().is_terminal() {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            crate::logging::route_through(&multi);
            let overall = multi.add(ProgressBar::new((total * 100) as u64));
            overall.set_style(
                ProgressStyle::with_template(
                    "{prefix:>9} [{bar:30.cyan/blue}] {percent:>3}% {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            overall.set_prefix("Overall");
            Mode::Bars { multi, overall }
        } else {
            Mode::Lines
        };
        Display { mode }
    }

    /// The progress callback for one job. It keeps its own view of which updates it has
    /// announced; the job's `async_state` says where the batch sits in the whole run.
    fn progress_callback(
        &self,
        operation: UpdateOperation,
    ) -> impl FnMut(&InstallationJob<Batch>, &InstallationProgressChangedCallbackArgs) + Send + 'static
    {
        let mode = self.mode.clone();
        let verb = match operation {
            UpdateOperation::Installation => "Installing",
            UpdateOperation::Uninstallation => "Uninstalling",
        };
        let mut bars: Vec<Option<ProgressBar>> = Vec::new();
        let mut announced: Vec<bool> = Vec::new();
        let mut reported: Vec<bool> = Vec::new();
        move |job, args| {
            let batch = job.async_state();
            let p = &args.progress;
            bars.resize(p.update_results.len(), None);
            announced.resize(p.update_results.len(), false);
            reported.resize(p.update_results.len(), false);
            for (i, r) in p.update_results.iter().enumerate() {
                let number = batch.offset + i + 1;
                let title = &batch.titles[i];
                let running = r.result_code == OperationResultCode::InProgress;
                let done = !running && r.result_code != OperationResultCode::NotStarted;
                match &mode {
                    Mode::Silent => {}
                    Mode::Lines => {
                        if (running || done) && !announced[i] {
                            announced[i] = true;
                            say!("[{number}/{}] {verb} {title}…", batch.total);
                        }
                        if done && !reported[i] {
                            reported[i] = true;
                            say!("[{number}/{}] {title}: {}", batch.total, describe(r, false));
                        }
                    }
                    Mode::Bars { multi, overall } => {
                        if (running || done) && bars[i].is_none() {
                            let bar = multi.insert_before(overall, ProgressBar::new(100));
                            bar.set_style(
                                ProgressStyle::with_template(
                                    "{prefix:>9} [{bar:30}] {percent:>3}% {msg}",
                                )
                                .expect("valid template")
                                .progress_chars("=> "),
                            );
                            bar.set_prefix(format!("{number}/{}", batch.total));
                            bar.set_message(title.clone());
                            bars[i] = Some(bar);
                        }
                        if let Some(bar) = &bars[i]
                            && !bar.is_finished()
                        {
                            if running && i == p.current_update_index {
                                bar.set_position(u64::from(p.current_update_percent_complete));
                            }
                            if done {
                                bar.set_position(100);
                                bar.finish_with_message(format!("{title}: {}", describe(r, true)));
                            }
                        }
                    }
                }
            }
            if let Mode::Bars { overall, .. } = &mode {
                let batch_len = p.update_results.len() as u64;
                overall.set_position(
                    batch.offset as u64 * 100 + u64::from(p.percent_complete) * batch_len,
                );
            }
        }
    }

    fn finish(&self) {
        if let Mode::Bars { overall, .. } = &self.mode {
            overall.finish_and_clear();
        }
    }
}

/// One update's outcome in a line; `short` names the code only (the summary gives its meaning).
fn describe(r: &UpdateInstallationResult, short: bool) -> String {
    match r.result_code {
        OperationResultCode::Succeeded if r.reboot_required => {
            "Succeeded (restart required)".to_string()
        }
        OperationResultCode::Succeeded
            if r.hresult.is_success() && r.hresult != wua::hresult::S_OK =>
        {
            format!("Succeeded ({})", r.hresult.message().unwrap_or_default())
        }
        OperationResultCode::Succeeded => "Succeeded".to_string(),
        other if short => format!(
            "{other} ({})",
            r.hresult
                .name()
                .map_or_else(|| format!("0x{:08X}", r.hresult.as_u32()), str::to_string)
        ),
        other => format!("{other}: {}", r.hresult),
    }
}

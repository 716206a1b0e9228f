//! `wua download`, and the download step `wua install` runs first: payloads fetched from the
//! service into the verified cache, with a bytes progress bar.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use wua::download::{DownloadJob, DownloadProgressChangedCallbackArgs, DownloadResult};
use wua::hresult::HResult;
use wua::{NoCallback, OperationResultCode, Update, UpdateCollection, UpdateSession};

use crate::Exit;
use crate::cli::{DownloadArgs, GlobalArgs};
use crate::report::{self, HResultJson};
use crate::run::{self, Skipped};
use crate::select::{self, Pool};

/// The download Ctrl-C aborts.
static CURRENT: Mutex<Option<DownloadJob<()>>> = Mutex::new(None);

/// The updates whose download failed in this run, with the code, for the install report.
static FAILURES: Mutex<Vec<(wua::UpdateIdentity, HResult)>> = Mutex::new(Vec::new());

/// The code of `update`'s failed download in this run, if it failed.
pub fn failure_of(update: &Update) -> Option<HResult> {
    FAILURES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(id, _)| *id == update.identity())
        .map(|(_, h)| *h)
}

/// Asks the running download, if any, to stop (Ctrl-C). Partial payloads stay in the cache
/// and the next download resumes them.
pub fn abort_current() {
    if let Some(job) = CURRENT.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        job.request_abort();
    }
}

/// What a download step did for each update.
pub struct Fetched {
    pub result: DownloadResult,
    pub updates: Vec<Arc<Update>>,
}

impl Fetched {
    /// The updates whose download failed, with the code.
    pub fn failed(&self) -> impl Iterator<Item = (&Arc<Update>, HResult)> {
        self.updates
            .iter()
            .zip(&self.result.update_results)
            .filter(|(_, r)| !r.result_code.is_success())
            .map(|(u, r)| (u, r.hresult))
    }
}

/// Downloads `updates` (all of them with `forced`, else those not verified in the cache yet,
/// bundles included when a part is missing), showing bytes on a progress bar on a terminal.
/// `None` when nothing had to be downloaded.
pub fn fetch(
    session: &UpdateSession,
    global: &GlobalArgs,
    updates: &[Arc<Update>],
    forced: bool,
) -> Result<Option<Fetched>> {
    let needed: Vec<Arc<Update>> = updates
        .iter()
        .filter(|u| {
            forced || !u.is_downloaded() || u.bundled_updates().iter().any(|p| !p.is_downloaded())
        })
        .cloned()
        .collect();
    if needed.is_empty() {
        return Ok(None);
    }
    let mut downloader = session.create_update_downloader();
    downloader.set_client_application_id(global.client_id.clone());
    downloader.set_is_forced(forced);
    let mut collection = UpdateCollection::new();
    for u in &needed {
        collection.add(u.clone())?;
    }
    downloader.set_updates(&collection);
    let text = !global.json && !global.quiet;
    let bar = (text && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>11} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {binary_bytes_per_sec} {eta} {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix("Downloading");
        bar
    });
    if text && bar.is_none() {
        let noun = if needed.len() == 1 {
            "update"
        } else {
            "updates"
        };
        tell!("Downloading {} {noun}…", needed.len());
    }
    let titles: Vec<String> = needed.iter().map(|u| u.title().to_string()).collect();
    let progress_bar = bar.clone();
    let on_progress = move |_: &DownloadJob<()>, args: &DownloadProgressChangedCallbackArgs| {
        if let Some(bar) = &progress_bar {
            let p = &args.progress;
            bar.set_length(p.total_bytes_to_download);
            bar.set_position(p.total_bytes_downloaded);
            if let Some(title) = titles.get(p.current_update_index) {
                bar.set_message(format!("{title} ({})", p.current_update_download_phase));
            }
        }
    };
    run::install_ctrlc_handler();
    let job = downloader.begin_download(on_progress, NoCallback, ())?;
    *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) = Some(job.clone());
    if run::abort_requested() {
        job.request_abort();
    }
    while !job.wait_timeout(Duration::from_millis(200)) {}
    CURRENT.lock().unwrap_or_else(|e| e.into_inner()).take();
    let result = downloader.end_download(&job)?;
    job.clean_up();
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if text {
        for (u, r) in needed.iter().zip(&result.update_results) {
            if !r.result_code.is_success() {
                tell!(
                    "Download of \"{}\" {}: {}",
                    u.title(),
                    if r.result_code == OperationResultCode::Aborted {
                        "aborted"
                    } else {
                        "failed"
                    },
                    r.hresult
                );
            }
        }
    }
    let fetched = Fetched {
        result,
        updates: needed,
    };
    FAILURES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(fetched.failed().map(|(u, h)| (u.identity(), h)));
    Ok(Some(fetched))
}

#[derive(Serialize)]
struct DownloadReport {
    schema_version: u32,
    result_code: OperationResultCode,
    hresult: HResultJson,
    updates: Vec<DownloadOutcome>,
    skipped: Vec<Skipped>,
}

#[derive(Serialize)]
struct DownloadOutcome {
    update_id: String,
    revision_number: i32,
    title: String,
    result_code: OperationResultCode,
    hresult: HResultJson,
    /// `MaxDownloadSize`: the bytes its payloads take (whether transferred now or not).
    max_download_size: u64,
    #[serde(skip)]
    code: HResult,
}

/// `wua download`.
pub fn download(global: &GlobalArgs, args: &DownloadArgs) -> Result<Exit> {
    let session = crate::open_session_online(global, crate::paths::Access::Read)?;
    let choice = select::choose(
        &session,
        &args.selection,
        Pool::Catalog {
            default_criteria: if args.force {
                "IsHidden = 0"
            } else {
                select::DEFAULT_CRITERIA
            },
            include_superseded: false,
        },
        args.selection.all || args.accept_all,
        "download",
    )?;
    choice.tell_notes(global.quiet);
    let mut skipped = run::left_out(&choice);
    let mut updates = Vec::new();
    for update in choice.updates {
        // IsForced: "force download of updates that are already installed" (DIGEST §4.1).
        if update.is_installed() && !args.force {
            skipped.push(run::skip(
                &update,
                "already installed (pass --force to download it anyway)",
            ));
            continue;
        }
        updates.push(update);
    }
    let text = !global.json && !global.quiet;
    if text {
        for s in &skipped {
            tell!("Skipping \"{}\": {}", s.title, s.reason);
        }
    }
    let fetched = fetch(&session, global, &updates, args.force)?;
    let outcomes: Vec<DownloadOutcome> = updates
        .iter()
        .map(|u| {
            let result = fetched.as_ref().and_then(|f| {
                f.updates
                    .iter()
                    .position(|x| Arc::ptr_eq(x, u))
                    .map(|i| f.result.update_results[i])
            });
            let (result_code, hresult) = match result {
                Some(r) => (r.result_code, r.hresult),
                None => (
                    OperationResultCode::Succeeded,
                    wua::hresult::WU_S_ALREADY_DOWNLOADED,
                ),
            };
            DownloadOutcome {
                update_id: u.identity().update_id.to_string(),
                revision_number: u.identity().revision_number,
                title: u.title().to_string(),
                result_code,
                hresult: hresult.into(),
                max_download_size: u.max_download_size(),
                code: hresult,
            }
        })
        .collect();
    // Over every selected update: one already downloaded counts as succeeded.
    let aggregated = DownloadResult::aggregate(
        outcomes
            .iter()
            .map(|o| wua::download::UpdateDownloadResult {
                hresult: o.code,
                result_code: o.result_code,
            })
            .collect(),
    );
    let overall = (aggregated.result_code, aggregated.hresult);
    if global.json {
        report::print_json(&DownloadReport {
            schema_version: report::SCHEMA_VERSION,
            result_code: overall.0,
            hresult: overall.1.into(),
            updates: outcomes,
            skipped,
        });
    } else if !global.quiet {
        if updates.is_empty() {
            say!("Nothing to download.");
        }
        for o in &outcomes {
            if o.result_code.is_success() {
                let how = if o.hresult.is(wua::hresult::WU_S_ALREADY_DOWNLOADED) {
                    "already downloaded"
                } else {
                    "downloaded and verified"
                };
                say!("  {}: {how}", o.title);
            }
        }
    }
    Ok(match overall.0 {
        OperationResultCode::Succeeded => Exit::Success,
        OperationResultCode::SucceededWithErrors => Exit::SucceededWithErrors,
        OperationResultCode::Aborted => Exit::Aborted,
        _ => Exit::Failed,
    })
}

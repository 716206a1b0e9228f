//! `wua`: the command-line face of the wua update agent.

/// `println!` that ignores write errors: an install goes on (and rolls back properly) even when
/// whoever reads its output has gone away.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `eprintln!` that ignores write errors (see `say!`).
macro_rules! tell {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod cli;
mod download;
mod filter;
mod logging;
mod manage;
mod paths;
mod publish;
mod report;
mod run;
mod search;
mod select;
mod services;

use std::process::ExitCode;

use anyhow::Result;
use clap::{CommandFactory, Parser};
use wua::{InstallationResult, OperationResultCode, UpdateSession};

use cli::{CatalogCommand, Cli, Command, GlobalArgs};

/// The documented exit codes (`wua --help` lists them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Success = 0,
    Failed = 1,
    SucceededWithErrors = 2,
    RebootRequired = 3,
    Aborted = 4,
    NotAllowed = 5,
    BadInput = 64,
}

impl Exit {
    /// The exit code of an install or uninstall run. `refused` is the error that stopped a
    /// batch from starting, if one did.
    fn from_result(result: &InstallationResult, refused: Option<&wua::Error>) -> Exit {
        let nothing_succeeded = result
            .update_results
            .iter()
            .all(|r| !r.result_code.is_success());
        match (result.result_code, refused) {
            (OperationResultCode::Aborted, _) => Exit::Aborted,
            (_, Some(e)) if nothing_succeeded => Exit::for_hresult(e.hresult()),
            (OperationResultCode::Succeeded, _) if result.reboot_required => Exit::RebootRequired,
            (OperationResultCode::Succeeded, _) => Exit::Success,
            (OperationResultCode::SucceededWithErrors, _) => Exit::SucceededWithErrors,
            _ => Exit::Failed,
        }
    }

    /// The exit code for a call refused with this code.
    fn for_hresult(h: wua::HResult) -> Exit {
        use wua::hresult::*;
        if h == wua::install::BUSY {
            Exit::NotAllowed
        } else if [
            WU_E_INVALID_FILE,
            WU_E_INVALID_UPDATE,
            WU_E_INVALIDINDEX,
            WU_E_INVALID_CRITERIA,
            WU_E_NO_UPDATE,
            WU_E_EXCLUSIVE_INSTALL_CONFLICT,
            WU_E_EULAS_DECLINED,
            E_INVALIDARG,
            WU_E_DUPLICATE_ITEM,
            WU_E_UNKNOWN_SERVICE,
            WU_E_NO_SERVICE,
        ]
        .contains(&h)
        {
            Exit::BadInput
        } else {
            Exit::Failed
        }
    }
}

/// Input the user can fix: an unknown update, a missing argument.
#[derive(Debug)]
pub struct BadInput(pub String);

impl std::error::Error for BadInput {}

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Opens the agent the global options describe (for the demo, with its example service).
pub fn open_session(global: &GlobalArgs, access: paths::Access) -> Result<UpdateSession> {
    let (config, demo) = paths::resolve(global, access)?;
    let mut session = UpdateSession::open(config)?;
    session.set_client_application_id(global.client_id.clone());
    if demo {
        paths::prepare_demo(&session)?;
    }
    Ok(session)
}

/// Opens the agent and reads its catalog: the selected service's signed metadata is refreshed
/// and verified first, unless `--offline` (then its newest verified metadata is checked again).
pub fn open_session_online(global: &GlobalArgs, access: paths::Access) -> Result<UpdateSession> {
    let session = open_session(global, access)?;
    if !global.offline {
        session.refresh(None)?;
    }
    Ok(session)
}

/// A searcher that reads the catalog the session already refreshed (or, `--offline`, the
/// newest verified one): the CLI contacts a service once per command.
pub fn searcher(session: &UpdateSession) -> wua::UpdateSearcher {
    let mut searcher = session.create_update_searcher();
    searcher.set_online(false);
    searcher
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                Exit::BadInput
            } else {
                Exit::Success
            };
            let _ = e.print();
            return ExitCode::from(code as u8);
        }
    };
    if !matches!(cli.command, Command::Install(_) | Command::Uninstall(_)) {
        // Die quietly when the reader of our output goes away (`wua man | head`), as Unix tools
        // do. Not while installing: an install must finish or roll back, so it ignores SIGPIPE
        // and its output functions ignore write errors.
        // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    init_logging(&cli.global);
    match dispatch(&cli) {
        Ok(exit) => ExitCode::from(exit as u8),
        Err(e) => {
            let exit = classify(&e);
            if cli.global.json {
                print_error_json(&e);
            } else {
                eprintln!("wua: error: {e:#}");
            }
            ExitCode::from(exit as u8)
        }
    }
}

fn dispatch(cli: &Cli) -> Result<Exit> {
    let global = &cli.global;
    match &cli.command {
        Command::List(args) => report::list(global, args),
        Command::Search(args) => search::search(global, args),
        Command::Hide(args) => manage::manage(global, &args.selection, manage::Action::Hide),
        Command::Unhide(args) => manage::manage(global, &args.selection, manage::Action::Unhide),
        Command::AcceptEula(args) => {
            manage::manage(global, &args.selection, manage::Action::AcceptEula)
        }
        Command::Download(args) => download::download(global, args),
        Command::Service(command) => services::service(global, command),
        Command::Install(args) => run::install(global, args),
        Command::Uninstall(args) => run::uninstall(global, args),
        Command::History(args) => report::history(global, args),
        Command::Status => report::status(global),
        Command::Catalog(CatalogCommand::Build { source, out }) => {
            let built = wua::catalog::build(source, out)?;
            report::catalog(
                global,
                &built.catalog,
                Some(built.payloads_written),
                format!(
                    "Built catalog \"{}\" in {}: {} updates, {} new payloads",
                    built.catalog.name(),
                    out.display(),
                    built.catalog.updates().len(),
                    built.payloads_written
                ),
            );
            Ok(Exit::Success)
        }
        Command::Catalog(CatalogCommand::Verify { dir }) => {
            let catalog = wua::Catalog::open(dir)?;
            for def in catalog.updates() {
                catalog.check_payload(&def.payload)?;
            }
            report::catalog(
                global,
                &catalog,
                None,
                format!(
                    "Catalog \"{}\" in {} is valid: {} updates, every payload verified",
                    catalog.name(),
                    dir.display(),
                    catalog.updates().len()
                ),
            );
            Ok(Exit::Success)
        }
        Command::Catalog(CatalogCommand::Export { repo, out }) => {
            let files = wua::repository::bundle::export(repo, out)?;
            if global.json {
                report::print_json(&serde_json::json!({
                    "schema_version": report::SCHEMA_VERSION,
                    "repository": repo,
                    "bundle": out,
                    "files": files,
                }));
            } else if !global.quiet {
                say!(
                    "Exported {} ({files} files) to {}; register it offline with `wua service add NAME {} --bundle --trusted-root ROOT.json`",
                    repo.display(),
                    out.display(),
                    out.display()
                );
            }
            Ok(Exit::Success)
        }
        Command::Catalog(
            command @ (CatalogCommand::Keygen { .. }
            | CatalogCommand::Init { .. }
            | CatalogCommand::Publish { .. }
            | CatalogCommand::Add { .. }
            | CatalogCommand::Sign { .. }
            | CatalogCommand::Rotate { .. }),
        ) => publish::run(global, command),
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "wua", &mut std::io::stdout());
            Ok(Exit::Success)
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(Exit::Success)
        }
    }
}

/// The exit code for an error that stopped the command.
fn classify(e: &anyhow::Error) -> Exit {
    if e.downcast_ref::<BadInput>().is_some() {
        return Exit::BadInput;
    }
    match e.downcast_ref::<wua::Error>() {
        Some(w) => Exit::for_hresult(w.hresult()),
        None => Exit::Failed,
    }
}

fn print_error_json(e: &anyhow::Error) {
    report::print_json(&report::ErrorReport {
        schema_version: report::SCHEMA_VERSION,
        error: report::ErrorDetail {
            message: format!("{e:#}"),
            hresult: e.downcast_ref::<wua::Error>().map(|w| w.hresult().into()),
        },
    });
}

fn init_logging(global: &GlobalArgs) {
    let level = match (global.quiet, global.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("WUA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("wua={level}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(logging::Writer::default)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .with_target(false)
        .without_time()
        .init();
}

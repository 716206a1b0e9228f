//! The command line, declared with clap.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// wua: search a catalog of updates, install and uninstall them transactionally into a target
/// root, and keep their history — the Windows Update Agent's model, on any machine.
#[derive(Debug, Parser)]
#[command(name = "wua", version, about, long_about = None, propagate_version = true)]
#[command(after_help = EXIT_CODES)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

pub const EXIT_CODES: &str = "\
Exit codes:
  0   succeeded
  1   failed (every update failed, or the command could not run)
  2   succeeded with errors (some updates failed)
  3   succeeded; a restart is required to complete
  4   aborted (Ctrl-C, SIGTERM or SIGHUP)
  5   not allowed now: another install is running, or a restart is pending
  64  bad input (unknown option, update, catalog or path)";

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The catalog directory [default: the bundled example catalog]
    #[arg(long, global = true, env = "WUA_CATALOG", value_name = "DIR")]
    pub catalog: Option<PathBuf>,
    /// The target root to install into [default: the demo root for the example catalog;
    /// otherwise `/`, which a normal user must override to install or uninstall]
    #[arg(long, global = true, env = "WUA_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// The agent's state directory [default: next to the demo root for the example catalog;
    /// /var/lib/wua for root; $XDG_STATE_HOME/wua otherwise]
    #[arg(long, global = true, env = "WUA_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// A file holding the current boot id [default: the kernel's]. For containers and tests:
    /// pending restarts end when its content changes.
    #[arg(
        long,
        global = true,
        env = "WUA_BOOT_ID_FILE",
        value_name = "FILE",
        hide_short_help = true
    )]
    pub boot_id_file: Option<PathBuf>,
    /// Do not flush installed content to disk before recording it (like dpkg's
    /// --force-unsafe-io): faster, for containers and CI. A killed process is still recovered;
    /// a power cut may lose installed files.
    #[arg(long, global = true, env = "WUA_UNSAFE_IO", value_parser = clap::builder::FalseyValueParser::new())]
    pub unsafe_io: bool,
    /// Print one JSON document on stdout instead of text (schema: docs/cli.md)
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only errors
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Print more detail (repeat for debug logs)
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// The client application id recorded in history
    #[arg(long, global = true, default_value = "wua-cli", value_name = "NAME")]
    pub client_id: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the catalog's updates and what is installed
    List(ListArgs),
    /// Install updates
    Install(InstallArgs),
    /// Uninstall updates
    Uninstall(UninstallArgs),
    /// Show the history of installs and uninstalls, newest first
    History(HistoryArgs),
    /// Show whether a restart is required and whether an install is running
    Status,
    /// Build and inspect catalogs
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Print shell completions
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff)
    Man,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only installed updates
    #[arg(long, conflicts_with = "available")]
    pub installed: bool,
    /// Only updates not installed
    #[arg(long)]
    pub available: bool,
}

/// Which updates a command acts on.
#[derive(Debug, Args)]
pub struct Selection {
    /// Updates to act on: an update id (or a unique prefix of one, 4+ characters) or a KB
    /// number such as KB5000001
    #[arg(value_name = "UPDATE")]
    pub updates: Vec<String>,
    /// Every applicable update
    #[arg(long, conflicts_with = "updates")]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    #[command(flatten)]
    pub selection: Selection,
    /// Accept the licence terms of the selected updates (printed on stderr unless --json or
    /// --quiet); the acceptance is recorded with your user name
    #[arg(long)]
    pub accept_eula: bool,
    /// Reinstall updates that are installed already
    #[arg(long)]
    pub force: bool,
    /// Fail updates that could ask for user input instead of running them
    #[arg(long)]
    pub force_quiet: bool,
}

#[derive(Debug, Args)]
pub struct UninstallArgs {
    #[command(flatten)]
    pub selection: Selection,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Skip this many of the newest entries
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub start: i64,
    /// Show at most this many entries
    #[arg(long, default_value_t = 50, allow_negative_numbers = true)]
    pub count: i64,
}

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Build a catalog from a source tree (one folder per update with update.json and payload/)
    Build {
        /// The source tree
        source: PathBuf,
        /// Where to write the catalog
        out: PathBuf,
    },
    /// Check a catalog: its metadata, and every payload's size, SHA-256 and archive entries
    Verify {
        /// The catalog directory
        dir: PathBuf,
    },
}

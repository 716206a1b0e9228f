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
  2   succeeded with errors (some updates failed; a search had warnings)
  3   succeeded; a restart is required to complete
  4   aborted (Ctrl-C, SIGTERM or SIGHUP)
  5   not allowed now: another install is running, or a restart is pending
  64  bad input (unknown option, update, service, catalog, path, criteria or regex)";

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Read updates from this unsigned catalog directory instead of the registered services
    /// (for publishers trying a catalog before signing it) [default: the registered services;
    /// with none, the bundled example repository, as a demo]
    #[arg(long, global = true, env = "WUA_CATALOG", value_name = "DIR")]
    pub catalog: Option<PathBuf>,
    /// The service to use, by name or id [default: the default service, `wua service list`]
    #[arg(long, global = true, env = "WUA_SERVICE", value_name = "NAME|ID")]
    pub service: Option<String>,
    /// Do not contact the service: use its newest verified metadata (checked again: it must
    /// not have expired)
    #[arg(long, global = true, env = "WUA_OFFLINE", value_parser = clap::builder::FalseyValueParser::new())]
    pub offline: bool,
    /// Give up on a transfer that sends nothing for this many seconds [default: 30]
    #[arg(
        long,
        global = true,
        env = "WUA_STALL_TIMEOUT",
        value_name = "SECONDS",
        hide_short_help = true
    )]
    pub stall_timeout: Option<u64>,
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
    /// List every catalog update and what is installed
    List(ListArgs),
    /// Search the catalog with WUA's criteria and filters; --explain says why for each update
    #[command(after_long_help = STATUS_LETTERS)]
    Search(SearchArgs),
    /// Download updates into the verified cache (install does this first)
    Download(DownloadArgs),
    /// Install updates (downloading them first)
    Install(InstallArgs),
    /// Uninstall updates
    Uninstall(UninstallArgs),
    /// Hide updates: default searches leave them out (mandatory ones cannot be hidden)
    Hide(ManageArgs),
    /// Unhide hidden updates
    Unhide(ManageArgs),
    /// Show and accept the licence terms of updates
    AcceptEula(ManageArgs),
    /// Show the history of installs and uninstalls, newest first
    History(HistoryArgs),
    /// Show whether a restart is required and whether an install is running
    Status,
    /// Register, remove and list update services (signed repositories)
    #[command(subcommand)]
    Service(ServiceCommand),
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

/// The letters of `wua search`'s STATUS column, in column order.
pub const STATUS_LETTERS: &str = "\
STATUS column (one letter per position, `-` when it does not hold):
  I  installed            D  downloaded (payload in the catalog)
  H  hidden               M  mandatory
  U  uninstallable        L  licence terms to accept
  O  optional (browse-only)
  B  bundle (installing it installs its parts)
  R  restart: installing it always needs one, or one is pending for it
  S  superseded by another catalog update";

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only installed updates
    #[arg(long, conflicts_with = "available")]
    pub installed: bool,
    /// Only updates not installed
    #[arg(long)]
    pub available: bool,
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Search criteria in WUA's language, e.g. "IsInstalled = 0 and Type = 'Software'"
    /// [default: IsInstalled = 0 and IsHidden = 0]
    #[arg(value_name = "CRITERIA")]
    pub criteria: Option<String>,
    /// Also return updates superseded by another update of the result or by an installed one
    #[arg(long)]
    pub include_superseded: bool,
    /// For every catalog update, say whether it was selected or left out, and which
    /// criterion, rule or filter decided
    #[arg(long)]
    pub explain: bool,
    #[command(flatten)]
    pub filters: FilterArgs,
}

/// The severities `--severity` takes (`MsrcSeverity`; `Unspecified`: no rating).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Severity {
    Critical,
    Important,
    Moderate,
    Low,
    Unspecified,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Critical => "Critical",
            Severity::Important => "Important",
            Severity::Moderate => "Moderate",
            Severity::Low => "Low",
            Severity::Unspecified => "Unspecified",
        }
    }

    /// Whether an update rated `rating` (`MsrcSeverity`) has this severity.
    pub fn matches(self, rating: Option<&str>) -> bool {
        match (self, rating) {
            (Severity::Unspecified, None) => true,
            (Severity::Unspecified, Some(r)) => r.trim().is_empty(),
            (_, Some(r)) => r.trim().eq_ignore_ascii_case(self.name()),
            (_, None) => false,
        }
    }
}

/// A byte count as given on the command line (`10K`, `5MB`, `1G`; binary multiples).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Size {
    pub bytes: u64,
    pub text: String,
}

/// Parses `--max-size`: bytes, or a number (decimals allowed) with K, M, G or T, optionally
/// followed by B or iB, any case; all binary multiples (1K = 1024 bytes).
pub fn parse_size(s: &str) -> Result<Size, String> {
    let bad = || {
        format!(
            "{s:?} is not a size: give bytes, or a number with K, M, G or T (1K = 1024 bytes), e.g. 500, 10K, 5MB, 1.5G"
        )
    };
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(bad()),
    };
    let bytes = if number.contains('.') {
        let value: f64 = number.parse().map_err(|_| bad())?;
        let bytes = value * (1u64 << shift) as f64;
        if !bytes.is_finite() || bytes >= u64::MAX as f64 {
            return Err(bad());
        }
        bytes.floor() as u64
    } else {
        let value: u64 = number.parse().map_err(|_| bad())?;
        value.checked_mul(1u64 << shift).ok_or_else(bad)?
    };
    Ok(Size {
        bytes,
        text: t.to_string(),
    })
}

/// Parses a KB number, `KB5000001` or `5000001` (any case), into its digits.
pub fn parse_kb(s: &str) -> Result<String, String> {
    let t = s.trim();
    let digits = if t.len() >= 2 && t[..2].eq_ignore_ascii_case("kb") {
        &t[2..]
    } else {
        t
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "{s:?} is not a KB number: give it as KB5000001 or 5000001"
        ));
    }
    Ok(digits.to_string())
}

/// Filters applied after the search criteria, like PSWindowsUpdate's Get-WindowsUpdate. A
/// filter given several times keeps updates matching any of its values; different filters must
/// all hold; a --not-* filter leaves out updates matching any of its values.
#[derive(Clone, Debug, Default, Args)]
#[command(next_help_heading = "Filters (applied after the criteria)")]
pub struct FilterArgs {
    /// Only updates with this KB article (KB5000001 or 5000001); repeatable
    #[arg(long, value_name = "KB", value_parser = parse_kb)]
    pub kb: Vec<String>,
    /// Leave out updates with this KB article; repeatable
    #[arg(long, value_name = "KB", value_parser = parse_kb)]
    pub not_kb: Vec<String>,
    /// Only updates whose title matches this regular expression (case-insensitive); repeatable
    #[arg(long, value_name = "REGEX")]
    pub title: Vec<String>,
    /// Leave out updates whose title matches this regular expression; repeatable
    #[arg(long, value_name = "REGEX")]
    pub not_title: Vec<String>,
    /// Only updates in this category, by name (case-insensitive) or id; repeatable
    #[arg(long, value_name = "NAME|ID")]
    pub category: Vec<String>,
    /// Leave out updates in this category; repeatable
    #[arg(long, value_name = "NAME|ID")]
    pub not_category: Vec<String>,
    /// Only updates of this severity (MsrcSeverity; Unspecified: not rated); repeatable
    #[arg(long, value_name = "SEVERITY", value_enum, ignore_case = true)]
    pub severity: Vec<Severity>,
    /// Leave out updates of this severity; repeatable
    #[arg(long, value_name = "SEVERITY", value_enum, ignore_case = true)]
    pub not_severity: Vec<Severity>,
    /// Only this update (its full id); repeatable
    #[arg(long, value_name = "UUID")]
    pub update_id: Vec<uuid::Uuid>,
    /// Leave out this update (its full id); repeatable
    #[arg(long, value_name = "UUID")]
    pub not_update_id: Vec<uuid::Uuid>,
    /// Only updates whose download size (MaxDownloadSize) is at most SIZE: bytes, or with a
    /// suffix such as 10K, 5MB, 1G (binary multiples)
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_size: Option<Size>,
}

/// Which updates a command acts on: names, or a search (criteria and filters).
#[derive(Debug, Args)]
#[command(next_help_heading = "Selection")]
pub struct Selection {
    /// Updates to act on: an update id (or a unique prefix of one, 4+ characters) or a KB
    /// number such as KB5000001. Names find any catalog update (uninstall: any installed one),
    /// hidden and superseded ones included; filters still apply to them
    #[arg(value_name = "UPDATE")]
    pub updates: Vec<String>,
    /// Every update the command's default search finds. install, hide, accept-eula: WUA's
    /// default search (not installed, not hidden, applicable, not superseded; install --force:
    /// installed ones too); unhide: the hidden updates; uninstall: the installed updates
    #[arg(long, conflicts_with = "updates")]
    pub all: bool,
    /// Choose the updates with these search criteria (WUA's language, as `wua search` takes)
    /// instead of the command's default search; uninstall keeps the installed updates it finds
    #[arg(long, value_name = "STRING", conflicts_with = "updates")]
    pub criteria: Option<String>,
    /// Let the search return superseded updates too (unhide always does; no effect on
    /// uninstall)
    #[arg(long)]
    pub include_superseded: bool,
    #[command(flatten)]
    pub filters: FilterArgs,
}

impl Selection {
    /// True when the command line chooses updates by a search rather than by name.
    pub fn by_search(&self) -> bool {
        self.updates.is_empty()
    }

    /// True when any way of choosing updates was given.
    pub fn given(&self) -> bool {
        !self.updates.is_empty()
            || self.all
            || self.criteria.is_some()
            || !crate::filter::Filters::args_empty(&self.filters)
    }
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Install every update the selection finds without asking, accepting their licence
    /// terms (PSWindowsUpdate's -AcceptAll); alone, the same as --all --accept-eula
    #[arg(long)]
    pub accept_all: bool,
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
    // Last: its help headings carry over to what follows it.
    #[command(flatten)]
    pub selection: Selection,
}

#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// Download every update the selection finds; alone, the same as --all
    #[arg(long)]
    pub accept_all: bool,
    /// Download again (and verify again) updates already in the cache, and download updates
    /// that are installed already
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub selection: Selection,
}

/// `wua service …`: the agent's update services (WUA's IUpdateServiceManager).
#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Register a signed repository (a directory or an http(s):// URL) as a service
    Add {
        /// A name for the service
        name: String,
        /// The repository: a directory with metadata/ and targets/, or its URL
        location: String,
        /// The root.json its publisher handed out: the only metadata trusted without checking
        #[arg(long, value_name = "FILE")]
        trusted_root: PathBuf,
        /// LOCATION is an exported bundle (`wua catalog export`), a directory or .tar file,
        /// copied into the agent's state for offline use
        #[arg(long)]
        bundle: bool,
        /// Make it the default service
        #[arg(long)]
        default: bool,
    },
    /// Remove a service (its trusted metadata; downloaded payloads stay in the cache)
    Remove {
        /// The service's name or id
        service: String,
    },
    /// List the registered services
    List,
    /// Make a service the default one
    Default {
        /// The service's name or id
        service: String,
    },
    /// Contact a service now: verify and store its newest signed metadata
    Refresh {
        /// The service's name or id [default: the default service]
        service: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// Uninstall every update the selection finds without asking (PSWindowsUpdate's
    /// -AcceptAll); alone, the same as --all
    #[arg(long)]
    pub accept_all: bool,
    #[command(flatten)]
    pub selection: Selection,
}

#[derive(Debug, Args)]
pub struct ManageArgs {
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
    /// Generate a publisher's signing keys: root.pem, targets.pem, snapshot.pem, timestamp.pem
    Keygen {
        /// The directory to write them to (created, mode 0700); existing keys are never
        /// overwritten
        dir: PathBuf,
    },
    /// Create a signed repository (metadata/1.root.json) trusting the keys in --keys
    Init {
        /// The repository directory (new or empty)
        repo: PathBuf,
        /// The keys directory (`wua catalog keygen`)
        #[arg(long, value_name = "DIR")]
        keys: PathBuf,
        #[command(flatten)]
        root: crate::publish::RootExpiryArgs,
        /// Signatures each role needs; above 1, --keys must hold that many keys per role
        /// (ROLE.pem, ROLE-*.pem)
        #[arg(long, default_value_t = 1, value_name = "N")]
        threshold: u64,
    },
    /// Publish a catalog as the repository's new signed release
    Publish {
        /// A catalog source tree (folders with update.json), built first, or a built catalog
        /// (a directory with catalog.json)
        source: PathBuf,
        /// The repository directory
        #[arg(long, value_name = "DIR")]
        repo: PathBuf,
        /// The keys directory
        #[arg(long, value_name = "DIR")]
        keys: PathBuf,
        /// Create the repository first if it does not exist (as `wua catalog init`)
        #[arg(long)]
        init: bool,
        #[command(flatten)]
        root: crate::publish::RootExpiryArgs,
        #[command(flatten)]
        expiry: crate::publish::ExpiryArgs,
    },
    /// Add or replace (same update id) updates in the published catalog, and publish it
    Add {
        /// The repository directory
        repo: PathBuf,
        /// The keys directory
        #[arg(long, value_name = "DIR")]
        keys: PathBuf,
        /// Update source folders, each with update.json and payload/
        #[arg(required = true, value_name = "UPDATE_DIR")]
        updates: Vec<PathBuf>,
        #[command(flatten)]
        expiry: crate::publish::ExpiryArgs,
    },
    /// Re-sign the published release with fresh expiry dates (run it before they pass)
    Sign {
        /// The repository directory
        repo: PathBuf,
        /// The keys directory
        #[arg(long, value_name = "DIR")]
        keys: PathBuf,
        #[command(flatten)]
        expiry: crate::publish::ExpiryArgs,
    },
    /// Write a new root version: rotate to the keys in --new-keys, or renew the root's expiry
    Rotate {
        /// The repository directory
        repo: PathBuf,
        /// The current keys directory (its root keys sign the new root)
        #[arg(long, value_name = "DIR")]
        keys: PathBuf,
        /// The keys the new root lists [default: --keys, to renew the root's expiry]
        #[arg(long, value_name = "DIR")]
        new_keys: Option<PathBuf>,
        #[command(flatten)]
        root: crate::publish::RootExpiryArgs,
        /// Signatures each role needs in the new root
        #[arg(long, default_value_t = 1, value_name = "N")]
        threshold: u64,
        #[command(flatten)]
        expiry: crate::publish::ExpiryArgs,
    },
    /// Write a repository into one .tar file, for machines that cannot reach it
    /// (`wua service add NAME FILE --bundle`)
    Export {
        /// The repository directory
        repo: PathBuf,
        /// The bundle to write
        out: PathBuf,
    },
}

//! `wua catalog keygen|init|publish|add|sign|rotate`: the publisher's commands for signed
//! catalogs (`wua::repository::author`; the guide is docs/publishing.md).

use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use jiff::Timestamp;
use serde::Serialize;
use wua::repository::METADATA_DIR;
use wua::repository::author::{
    self, DEFAULT_ROOT_DAYS, DEFAULT_SNAPSHOT_DAYS, DEFAULT_TARGETS_DAYS, DEFAULT_TIMESTAMP_DAYS,
    InitOptions, PublishOptions, PublishSummary, RotateSummary,
};

use crate::cli::{CatalogCommand, GlobalArgs};
use crate::report::{SCHEMA_VERSION, print_json};
use crate::{BadInput, Exit};

/// When the targets, snapshot and timestamp metadata a command signs expire.
#[derive(Debug, Args)]
pub struct ExpiryArgs {
    /// Days until the targets metadata expires
    #[arg(long, value_name = "DAYS", default_value_t = DEFAULT_TARGETS_DAYS, value_parser = clap::value_parser!(i64).range(1..=36500))]
    pub targets_days: i64,
    /// Days until the snapshot metadata expires
    #[arg(long, value_name = "DAYS", default_value_t = DEFAULT_SNAPSHOT_DAYS, value_parser = clap::value_parser!(i64).range(1..=36500))]
    pub snapshot_days: i64,
    /// Days until the timestamp metadata expires: re-sign (`wua catalog sign`) before it does
    #[arg(long, value_name = "DAYS", default_value_t = DEFAULT_TIMESTAMP_DAYS, value_parser = clap::value_parser!(i64).range(1..=36500))]
    pub timestamp_days: i64,
    /// Make targets, snapshot and timestamp all expire at this date (2036-01-01 or
    /// 2036-01-01T00:00:00Z, UTC) instead: reproducible output
    #[arg(long, value_name = "DATE", value_parser = parse_date, conflicts_with_all = ["targets_days", "snapshot_days", "timestamp_days"])]
    pub expires: Option<Timestamp>,
}

impl ExpiryArgs {
    fn options(&self) -> PublishOptions {
        match self.expires {
            Some(at) => PublishOptions::until(at),
            None => PublishOptions::days_from_now(
                self.targets_days,
                self.snapshot_days,
                self.timestamp_days,
            ),
        }
    }
}

/// When the root metadata `init` writes expires.
#[derive(Debug, Args)]
pub struct RootExpiryArgs {
    /// Days until the root metadata expires
    #[arg(long, value_name = "DAYS", default_value_t = DEFAULT_ROOT_DAYS, value_parser = clap::value_parser!(i64).range(1..=36500))]
    pub root_days: i64,
    /// Make the root metadata expire at this date (2036-01-01 or 2036-01-01T00:00:00Z, UTC)
    #[arg(long, value_name = "DATE", value_parser = parse_date, conflicts_with = "root_days")]
    pub root_expires: Option<Timestamp>,
}

impl RootExpiryArgs {
    fn options(&self) -> InitOptions {
        match self.root_expires {
            Some(at) => InitOptions::until(at),
            None => InitOptions::days_from_now(self.root_days),
        }
    }
}

/// A date (midnight UTC) or an RFC 3339 timestamp with an offset.
pub fn parse_date(text: &str) -> Result<Timestamp, String> {
    if let Ok(at) = text.parse::<Timestamp>() {
        return Ok(at);
    }
    match text.parse::<jiff::civil::Date>() {
        Ok(date) => date
            .to_zoned(jiff::tz::TimeZone::UTC)
            .map(|z| z.timestamp())
            .map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "{text:?} is not a date (2036-01-01) or a timestamp with an offset (2036-01-01T00:00:00Z)"
        )),
    }
}

/// Runs a publisher's `wua catalog` command (`build` and `verify` are dispatched in main).
pub fn run(global: &GlobalArgs, command: &CatalogCommand) -> Result<Exit> {
    match command {
        CatalogCommand::Keygen { dir } => keygen(global, dir),
        CatalogCommand::Init {
            repo,
            keys,
            root,
            threshold,
        } => init(global, repo, keys, root, *threshold),
        CatalogCommand::Publish {
            source,
            repo,
            keys,
            init,
            root,
            expiry,
        } => publish(global, source, repo, keys, init.then_some(root), expiry),
        CatalogCommand::Add {
            repo,
            keys,
            updates,
            expiry,
        } => {
            let summary = author::add_updates(repo, keys, updates, &expiry.options())?;
            let text = format!(
                "Added {} and replaced {} update(s) in catalog \"{}\" of {}",
                summary.added.len(),
                summary.replaced.len(),
                summary.catalog_name,
                repo.display()
            );
            report(global, &summary, None, text);
            Ok(Exit::Success)
        }
        CatalogCommand::Sign { repo, keys, expiry } => {
            let summary = author::resign(repo, keys, &expiry.options())?;
            let text = format!(
                "Re-signed catalog \"{}\" of {} with fresh expiry dates",
                summary.catalog_name,
                repo.display()
            );
            report(global, &summary, None, text);
            Ok(Exit::Success)
        }
        CatalogCommand::Rotate {
            repo,
            keys,
            new_keys,
            root,
            threshold,
            expiry,
        } => rotate(
            global,
            repo,
            keys,
            new_keys.as_deref(),
            root,
            *threshold,
            expiry,
        ),
        _ => unreachable!("dispatched in main"),
    }
}

#[derive(Serialize)]
struct KeygenReport {
    schema_version: u32,
    keys: PathBuf,
    files: Vec<PathBuf>,
}

fn keygen(global: &GlobalArgs, dir: &Path) -> Result<Exit> {
    author::generate_keys(dir)?;
    let files: Vec<PathBuf> = author::KEY_FILES
        .iter()
        .map(|(file, _)| dir.join(file))
        .collect();
    if global.json {
        print_json(&KeygenReport {
            schema_version: SCHEMA_VERSION,
            keys: dir.to_path_buf(),
            files,
        });
    } else if !global.quiet {
        say!(
            "Generated Ed25519 keys in {}: root.pem, targets.pem, snapshot.pem, timestamp.pem (mode 0600)",
            dir.display()
        );
        say!(
            "Keep them private, root.pem offline; next: wua catalog init REPO --keys {}",
            dir.display()
        );
    }
    Ok(Exit::Success)
}

#[derive(Serialize)]
struct InitReport {
    schema_version: u32,
    repository: PathBuf,
    root_version: u64,
    root_expires: Timestamp,
    threshold: u64,
    trusted_root: PathBuf,
}

fn init_report(repo: &Path, opts: &InitOptions) -> InitReport {
    InitReport {
        schema_version: SCHEMA_VERSION,
        repository: repo.to_path_buf(),
        root_version: 1,
        root_expires: opts.root_expires,
        threshold: opts.threshold.get(),
        trusted_root: repo.join(METADATA_DIR).join("root.json"),
    }
}

fn threshold(n: u64) -> Result<NonZeroU64> {
    Ok(NonZeroU64::new(n).ok_or_else(|| BadInput("--threshold must be at least 1".into()))?)
}

fn init(
    global: &GlobalArgs,
    repo: &Path,
    keys: &Path,
    root: &RootExpiryArgs,
    n: u64,
) -> Result<Exit> {
    let opts = InitOptions {
        threshold: threshold(n)?,
        ..root.options()
    };
    author::init_repository(repo, keys, &opts)?;
    let report = init_report(repo, &opts);
    if global.json {
        print_json(&report);
    } else if !global.quiet {
        say!(
            "Created repository {}: root version 1, expires {}, threshold {}, consistent snapshots",
            repo.display(),
            opts.root_expires,
            opts.threshold
        );
        say!(
            "Clients trust {}; next: wua catalog publish SOURCE --repo {} --keys {}",
            report.trusted_root.display(),
            repo.display(),
            keys.display()
        );
    }
    Ok(Exit::Success)
}

fn publish(
    global: &GlobalArgs,
    source: &Path,
    repo: &Path,
    keys: &Path,
    init: Option<&RootExpiryArgs>,
    expiry: &ExpiryArgs,
) -> Result<Exit> {
    let built = source.join(wua::catalog::CATALOG_FILE).is_file();
    if !built && !is_source_tree(source) {
        return Err(BadInput(format!(
            "{} is neither a built catalog (no catalog.json) nor a catalog source tree (no folder with an update.json); pass one of them",
            source.display()
        ))
        .into());
    }
    let opts = expiry.options();
    let mut created = None;
    if let Some(root) = init
        && !repo.join(METADATA_DIR).join("1.root.json").exists()
    {
        let init_opts = root.options();
        author::init_repository(repo, keys, &init_opts)?;
        created = Some(init_report(repo, &init_opts));
    }
    let summary = if built {
        author::publish(repo, keys, source, &opts)
    } else {
        author::publish_sources(repo, keys, source, &opts)
    }?;
    let mut text = String::new();
    if let Some(created) = &created {
        text.push_str(&format!(
            "Created repository {} (clients trust {})\n",
            repo.display(),
            created.trusted_root.display()
        ));
    }
    text.push_str(&format!(
        "Published catalog \"{}\" to {}",
        summary.catalog_name,
        repo.display()
    ));
    report(global, &summary, created, text);
    Ok(Exit::Success)
}

fn is_source_tree(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.path().join(wua::catalog::SOURCE_METADATA).is_file())
    })
}

#[derive(Serialize)]
struct PublishReport {
    schema_version: u32,
    #[serde(flatten)]
    summary: PublishSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<InitReport>,
}

/// Prints what was published: `headline`, then versions, targets and expiry dates.
fn report(
    global: &GlobalArgs,
    summary: &PublishSummary,
    created: Option<InitReport>,
    headline: String,
) {
    if global.json {
        print_json(&PublishReport {
            schema_version: SCHEMA_VERSION,
            summary: summary.clone(),
            created,
        });
        return;
    }
    if global.quiet {
        return;
    }
    say!("{headline}");
    say!(
        "  {} updates; {} targets (catalog.json and payloads), {} file(s) written",
        summary.updates,
        summary.targets,
        summary.target_files_written
    );
    say!(
        "  targets   version {:<4} expires {}",
        summary.targets_version,
        summary.targets_expires
    );
    say!(
        "  snapshot  version {:<4} expires {}",
        summary.snapshot_version,
        summary.snapshot_expires
    );
    say!(
        "  timestamp version {:<4} expires {}  (re-sign before: wua catalog sign)",
        summary.timestamp_version,
        summary.timestamp_expires
    );
    say!(
        "  root      version {:<4} expires {}",
        summary.root_version,
        summary.root_expires
    );
}

#[derive(Serialize)]
struct RotateReport {
    schema_version: u32,
    #[serde(flatten)]
    summary: RotateSummary,
}

fn rotate(
    global: &GlobalArgs,
    repo: &Path,
    keys: &Path,
    new_keys: Option<&Path>,
    root: &RootExpiryArgs,
    n: u64,
    expiry: &ExpiryArgs,
) -> Result<Exit> {
    let root_opts = InitOptions {
        threshold: threshold(n)?,
        ..root.options()
    };
    let summary = author::rotate_keys(
        repo,
        keys,
        new_keys.unwrap_or(keys),
        &root_opts,
        &expiry.options(),
    )?;
    if global.json {
        print_json(&RotateReport {
            schema_version: SCHEMA_VERSION,
            summary,
        });
        return Ok(Exit::Success);
    }
    if global.quiet {
        return Ok(Exit::Success);
    }
    let changed = if summary.roles_changed.is_empty() {
        "same keys, new expiry".to_string()
    } else {
        format!("new keys for {}", summary.roles_changed.join(", "))
    };
    say!(
        "Wrote root version {} of {} ({changed}), expires {}",
        summary.root_version,
        repo.display(),
        summary.root_expires
    );
    match &summary.release {
        Some(release) => report(
            global,
            release,
            None,
            format!(
                "Re-signed catalog \"{}\" with the new keys",
                release.catalog_name
            ),
        ),
        None => say!("Nothing published yet: the next publish signs with the new keys"),
    }
    say!(
        "Clients follow the root chain from the root they trust; new clients get {}",
        repo.join(METADATA_DIR).join("root.json").display()
    );
    Ok(Exit::Success)
}

//! Where the agent's files go by default, and the bundled example repository.
//!
//! * Updates come from the registered services (signed repositories), or from an unsigned
//!   catalog directory given with `--catalog`.
//! * The demo: with no `--catalog` and while the default state directory does not exist (or,
//!   with `--state-dir` and `--root`, while the given state directory is new or has only the
//!   example service), wua uses the signed example repository built into the binary (written
//!   out to the user's cache directory and registered as the service `example` of the demo
//!   state), and installs into the demo root: it never touches system paths. Registering a
//!   service of your own (`wua service add`) creates the default state directory and so ends
//!   the demo for good.
//! * root: state in `/var/lib/wua`, target root `/`.
//! * a normal user: XDG directories; installing and uninstalling outside the demo need
//!   `--root` (reading commands use `/` and never write it).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use include_dir::{Dir, include_dir};
use wua::AgentConfig;

use crate::BadInput;
use crate::cli::GlobalArgs;

/// The signed example repository (`examples/repository`), built into the binary.
static EXAMPLE_REPOSITORY: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/../../examples/repository");

/// The root of trust of the example repository, as its publisher handed it out.
const EXAMPLE_ROOT: &str = "metadata/1.root.json";

/// The name the demo registers the example repository under.
pub const EXAMPLE_SERVICE: &str = "example";

fn is_root() -> bool {
    wua::session::current_uid() == 0
}

fn home() -> Result<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .context("HOME is not set, so wua cannot choose its default directories; pass --state-dir and --root (or set HOME)")
}

fn xdg(var: &str, fallback: &str) -> Result<PathBuf> {
    match std::env::var_os(var).filter(|v| !v.is_empty()) {
        Some(v) => Ok(PathBuf::from(v)),
        None => Ok(home()?.join(fallback)),
    }
}

/// The folder the demo's root and state live in.
fn demo_base() -> Result<PathBuf> {
    if is_root() {
        Ok(PathBuf::from("/var/lib/wua/demo"))
    } else {
        Ok(xdg("XDG_DATA_HOME", ".local/share")?.join("wua/demo"))
    }
}

fn example_repository_dir() -> Result<PathBuf> {
    if is_root() {
        Ok(PathBuf::from("/var/cache/wua/example-repository"))
    } else {
        Ok(xdg("XDG_CACHE_HOME", ".cache")?.join("wua/example-repository"))
    }
}

/// The default state directory outside the demo.
fn default_state_dir() -> Result<PathBuf> {
    if is_root() {
        Ok(PathBuf::from("/var/lib/wua"))
    } else {
        Ok(xdg("XDG_STATE_HOME", ".local/state")?.join("wua"))
    }
}

/// Whether a state directory is (or can become) the demo's: it does not exist yet, or its only
/// services are the bundled example. Read without creating anything; an unreadable database
/// is not the demo. A state directory used for anything else — even one whose services were
/// all removed — never turns into the demo.
fn is_demo_state(state_dir: &Path) -> Result<bool> {
    let db = state_dir.join(wua::store::DB_FILE);
    if !db.exists() {
        return Ok(true);
    }
    let example = example_repository_dir()?;
    Ok(wua::store::Store::peek_services(&db).is_ok_and(|services| {
        !services.is_empty()
            && services
                .iter()
                .all(|(name, location)| name == EXAMPLE_SERVICE && Path::new(location) == example)
    }))
}

/// What a command does with the target root.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Only reads state (list, history, status): a normal user may omit `--root`.
    Read,
    /// Installs or uninstalls.
    Write,
    /// Registers a service: never the demo (registering one ends it).
    Configure,
}

/// The agent configuration from the global options and the defaults above, and whether it is
/// the demo (whose example service [`prepare_demo`] registers).
pub fn resolve(global: &GlobalArgs, access: Access) -> Result<(AgentConfig, bool)> {
    if let Some(dir) = &global.catalog
        && dir.join(wua::repository::METADATA_DIR).is_dir()
        && !dir.join(wua::catalog::CATALOG_FILE).exists()
    {
        return Err(BadInput(format!(
            "{} is a signed repository, not a catalog directory: register it with `wua service add NAME {} --trusted-root ROOT.json` (the root.json its publisher gave you)",
            dir.display(),
            dir.display()
        ))
        .into());
    }
    // The demo: no catalog directory, and a state directory (given, or else the default one)
    // that is new or has no service but the bundled example. Its root is the demo root, so the
    // example is never installed into `/` by default.
    let example = global.catalog.is_none()
        && access != Access::Configure
        && match &global.state_dir {
            Some(dir) => is_demo_state(dir)?,
            None => is_demo_state(&default_state_dir()?)?,
        };
    if example && global.state_dir.is_some() && global.root.is_none() {
        // Two state directories must never manage one root: the demo root has its own.
        return Err(BadInput(
            "the demo (the bundled example repository) with --state-dir needs --root too, so that this state directory has a root of its own".to_string(),
        )
        .into());
    }
    let root = match (&global.root, example) {
        (Some(root), _) => root.clone(),
        (None, true) => demo_base()?.join("root"),
        (None, false) if is_root() || access != Access::Write => PathBuf::from("/"),
        (None, false) => {
            return Err(BadInput(
                "no target root: a normal user cannot install into /; pass --root DIR (or set WUA_ROOT)"
                    .to_string(),
            )
            .into());
        }
    };
    let state_dir = match (&global.state_dir, example) {
        (Some(dir), _) => dir.clone(),
        (None, true) => demo_base()?.join("state"),
        (None, false) => default_state_dir()?,
    };
    let mut config = AgentConfig::with_services(root, state_dir);
    config.catalog_dir = global.catalog.clone();
    config.boot_id_file = global.boot_id_file.clone();
    config.unsafe_io = global.unsafe_io;
    config.service = global.service.clone();
    if let Some(seconds) = global.stall_timeout {
        config.network.stall_timeout = std::time::Duration::from_secs(seconds.max(1));
    }
    Ok((config, example))
}

/// Registers the bundled example repository as the demo's service `example`, written to the
/// cache directory first (only what is missing or different), unless it is registered.
pub fn prepare_demo(session: &wua::UpdateSession) -> Result<()> {
    let dir = example_repository_dir()?;
    write_tree(&EXAMPLE_REPOSITORY, &dir)
        .with_context(|| format!("cannot write the example repository to {}", dir.display()))?;
    let manager = session.create_update_service_manager();
    if manager
        .services()?
        .iter()
        .any(|s| s.name == EXAMPLE_SERVICE)
    {
        return Ok(());
    }
    manager.add_service(
        EXAMPLE_SERVICE,
        wua::service::ServiceSource::Directory(dir.clone()),
        &dir.join(EXAMPLE_ROOT),
    )?;
    Ok(())
}

fn write_tree(tree: &Dir<'_>, base: &Path) -> Result<()> {
    for file in tree.files() {
        let path = base.join(file.path());
        if std::fs::read(&path).is_ok_and(|existing| existing == file.contents()) {
            continue;
        }
        let parent = path.parent().expect("files have a parent");
        fs_err::create_dir_all(parent)?;
        // Write beside, then rename: a concurrent wua never reads a half-written file.
        let tmp = parent.join(format!(
            ".{}.{}.tmp",
            file.path()
                .file_name()
                .unwrap_or_default()
                .to_string_lossy(),
            std::process::id()
        ));
        fs_err::write(&tmp, file.contents())?;
        fs_err::rename(&tmp, &path)?;
    }
    for sub in tree.dirs() {
        write_tree(sub, base)?;
    }
    Ok(())
}

//! Where the agent's files go by default, and the bundled example catalog.
//!
//! * With no `--catalog`, wua uses the example catalog built into the binary, written out to
//!   the user's cache directory, and installs into a demo root: it never touches system paths.
//! * root: state in `/var/lib/wua`, target root `/` (for a catalog of its own).
//! * a normal user: XDG directories; with a real catalog, installing and uninstalling need
//!   `--root` (reading commands use `/` and never write it).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use include_dir::{Dir, include_dir};
use wua::AgentConfig;

use crate::BadInput;
use crate::cli::GlobalArgs;

/// The example catalog (`examples/catalog`), built into the binary.
static EXAMPLE_CATALOG: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/../../examples/catalog");

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

fn example_catalog_dir() -> Result<PathBuf> {
    if is_root() {
        Ok(PathBuf::from("/var/cache/wua/example-catalog"))
    } else {
        Ok(xdg("XDG_CACHE_HOME", ".cache")?.join("wua/example-catalog"))
    }
}

/// What a command does with the target root.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Only reads state (list, history, status): a normal user may omit `--root`.
    Read,
    /// Installs or uninstalls.
    Write,
}

/// The agent configuration from the global options and the defaults above.
pub fn resolve(global: &GlobalArgs, access: Access) -> Result<AgentConfig> {
    let (catalog, example) = match &global.catalog {
        Some(dir) => (dir.clone(), false),
        None => (materialize_example_catalog()?, true),
    };
    let root = match (&global.root, example) {
        (Some(root), _) => root.clone(),
        (None, true) => demo_base()?.join("root"),
        (None, false) if is_root() || access == Access::Read => PathBuf::from("/"),
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
        (None, false) if is_root() => PathBuf::from("/var/lib/wua"),
        (None, false) => xdg("XDG_STATE_HOME", ".local/state")?.join("wua"),
    };
    let mut config = AgentConfig::new(root, state_dir, catalog);
    config.boot_id_file = global.boot_id_file.clone();
    config.unsafe_io = global.unsafe_io;
    Ok(config)
}

/// Writes the bundled example catalog to the cache directory (only what is missing or
/// different) and returns its path.
pub fn materialize_example_catalog() -> Result<PathBuf> {
    let dir = example_catalog_dir()?;
    write_tree(&EXAMPLE_CATALOG, &dir)
        .with_context(|| format!("cannot write the example catalog to {}", dir.display()))?;
    Ok(dir)
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

//! Fixtures for the integration tests (`installer.rs`, `search.rs`).
//!
//! A [`Fixture`] owns one temporary folder holding everything an agent needs — the catalog
//! sources (`src/`), the built catalog (`catalog/`), the target root (`root/`), the state
//! directory (`state/`), a boot-id file and a `scratch/` folder for marker files that command
//! scripts write or wait for (outside the root, so they never count as installed content).
//! Tests describe updates with [`UpdateSpec`], build the catalog with the library's own
//! `wua::catalog::build`, then open real sessions on the result.

#![allow(dead_code)] // Each test binary uses a different part of the helpers.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tempfile::TempDir;
use wua::{AgentConfig, UpdateCollection, UpdateInstaller, UpdateSession};

/// How many times [`wait_for`] checks its condition, 10 ms apart. Generous: it only bounds a
/// hang, no test depends on how long anything takes.
pub const WAIT_ATTEMPTS: u32 = 3000;

/// One update of a fixture catalog: its `update.json` (without `payload`) and its payload tree.
pub struct UpdateSpec {
    title: String,
    meta: Value,
    entries: Vec<(String, Entry)>,
    revision: i32,
}

enum Entry {
    File { content: Vec<u8>, mode: u32 },
    Symlink(String),
}

impl UpdateSpec {
    /// An update installed by the `files` handler.
    pub fn files(title: &str) -> Self {
        UpdateSpec::with_handler(title, json!({ "kind": "files" }))
    }

    /// An update installed by the `command` handler; `install` is a command spec (see [`cmd`]).
    pub fn command(title: &str, install: Value) -> Self {
        UpdateSpec::with_handler(title, json!({ "kind": "command", "install": install }))
    }

    fn with_handler(title: &str, handler: Value) -> Self {
        UpdateSpec {
            title: title.to_string(),
            meta: json!({ "title": title, "handler": handler }),
            entries: Vec::new(),
            revision: 1,
        }
    }

    /// Adds a regular file (mode 0644) to the payload.
    pub fn file(self, path: &str, content: &str) -> Self {
        self.file_mode(path, content, 0o644)
    }

    /// Adds a regular file with `mode` to the payload.
    pub fn file_mode(mut self, path: &str, content: &str, mode: u32) -> Self {
        self.entries.push((
            path.to_string(),
            Entry::File {
                content: content.as_bytes().to_vec(),
                mode,
            },
        ));
        self
    }

    /// Adds a symlink to the payload.
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        self.entries
            .push((path.to_string(), Entry::Symlink(target.to_string())));
        self
    }

    /// Adds an executable `/bin/sh` script (mode 0755) to the payload.
    pub fn script(self, path: &str, body: &str) -> Self {
        self.file_mode(path, &format!("#!/bin/sh\nset -eu\n{body}\n"), 0o755)
    }

    /// Sets a top-level field of `update.json` (`is_uninstallable`, `eula_text`, …).
    pub fn set(mut self, key: &str, value: Value) -> Self {
        self.meta[key] = value;
        self
    }

    /// Sets the revision number (1 unless set).
    pub fn revision(mut self, revision_number: i32) -> Self {
        self.revision = revision_number;
        self
    }

    /// Sets a field of the command handler (`uninstall`).
    pub fn set_handler(mut self, key: &str, value: Value) -> Self {
        self.meta["handler"][key] = value;
        self
    }
}

/// A command spec for [`UpdateSpec::command`]; add `timeout_secs` or `exit_codes` with
/// [`with`].
pub fn cmd(program: &str, args: &[&str]) -> Value {
    json!({ "program": program, "args": args })
}

/// `value` with `key` set, for building JSON specs inline.
pub fn with(mut value: Value, key: &str, field: Value) -> Value {
    value[key] = field;
    value
}

/// A script body that touches `$1` (so the test knows it runs), then waits until `$2` exists —
/// checked by the script itself, a bounded 3000 × 0.01 s — and installs `opt/<name>/done`.
/// Gives up with exit status 1 if `$2` never appears, so a broken test fails rather than hangs.
pub fn blocking_script(name: &str) -> String {
    format!(
        r#": > "$1"
i=0
while [ ! -e "$2" ]; do
    i=$((i + 1))
    if [ "$i" -gt 3000 ]; then exit 1; fi
    sleep 0.01
done
mkdir -p "$DESTDIR/opt/{name}"
echo done > "$DESTDIR/opt/{name}/done""#
    )
}

/// The update id [`Fixture::build`] gives the `index`-th update added (0-based), so that rules
/// and bundles can name updates that are added later.
pub fn fixture_id(index: usize) -> uuid::Uuid {
    format!("00000000-0000-4000-8000-{:012x}", index + 1)
        .parse()
        .expect("fixture ids are uuids")
}

/// A fixture under construction: its folders exist from the start, so marker paths can go into
/// update specs before the catalog is built.
pub struct Fixture {
    base: TempDir,
    updates: Vec<UpdateSpec>,
}

impl Default for Fixture {
    fn default() -> Self {
        Fixture::new()
    }
}

impl Fixture {
    /// Creates the fixture's folders and a boot-id file for boot `boot-1`.
    pub fn new() -> Self {
        let base = tempfile::tempdir().expect("create temp dir");
        for dir in ["src", "catalog", "root", "state", "scratch"] {
            fs::create_dir(base.path().join(dir)).expect("create fixture folder");
        }
        fs::write(base.path().join("boot_id"), "boot-1\n").expect("write boot id");
        Fixture {
            base,
            updates: Vec::new(),
        }
    }

    /// A path in the scratch folder (outside root, state and catalog), for marker files.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.base.path().join("scratch").join(name)
    }

    /// Adds an update.
    pub fn update(mut self, spec: UpdateSpec) -> Self {
        self.updates.push(spec);
        self
    }

    /// Adds a `files` update installing `files` (path, content).
    pub fn files_update(self, title: &str, files: &[(&str, &str)]) -> Self {
        let spec = files
            .iter()
            .fold(UpdateSpec::files(title), |s, (p, c)| s.file(p, c));
        self.update(spec)
    }

    /// Writes the sources and builds the catalog with `wua::catalog::build`.
    pub fn build(self) -> Env {
        self.try_build().expect("build catalog")
    }

    /// As [`Self::build`], returning the build's error (for catalogs that must be refused).
    pub fn try_build(self) -> wua::Result<Env> {
        let src = self.base.path().join("src");
        let mut ids = BTreeMap::new();
        for (i, spec) in self.updates.iter().enumerate() {
            // Folder names sort in the order the updates were added.
            let folder = src.join(format!("{i:03}"));
            let payload = folder.join("payload");
            fs::create_dir_all(&payload).expect("create payload folder");
            let id = fixture_id(i).to_string();
            let mut meta = spec.meta.clone();
            meta["identity"] = json!({ "update_id": id, "revision_number": spec.revision });
            fs::write(
                folder.join("update.json"),
                serde_json::to_vec_pretty(&meta).expect("serialisable"),
            )
            .expect("write update.json");
            for (path, entry) in &spec.entries {
                let full = payload.join(path);
                fs::create_dir_all(full.parent().expect("has parent")).expect("create dirs");
                match entry {
                    Entry::File { content, mode } => {
                        fs::write(&full, content).expect("write payload file");
                        fs::set_permissions(&full, fs::Permissions::from_mode(*mode))
                            .expect("chmod payload file");
                    }
                    Entry::Symlink(target) => symlink(target, &full).expect("create symlink"),
                }
            }
            assert!(
                ids.insert(spec.title.clone(), id).is_none(),
                "duplicate title {}",
                spec.title
            );
        }
        wua::catalog::build(&src, &self.base.path().join("catalog"))?;
        Ok(Env {
            base: self.base,
            ids,
        })
    }
}

/// A built fixture: a catalog, an empty root and an empty state directory.
pub struct Env {
    base: TempDir,
    ids: BTreeMap<String, String>,
}

impl Env {
    /// The agent configuration, with the fixture's boot-id file.
    pub fn config(&self) -> AgentConfig {
        AgentConfig {
            boot_id_file: Some(self.base.path().join("boot_id")),
            ..AgentConfig::new(self.root(), self.state_dir(), self.catalog_dir())
        }
    }

    /// Opens a new session on the fixture (a new one sees the boot id and store afresh).
    pub fn session(&self) -> UpdateSession {
        UpdateSession::open(self.config()).expect("open session")
    }

    /// The target root.
    pub fn root(&self) -> PathBuf {
        self.base.path().join("root")
    }

    /// The state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.base.path().join("state")
    }

    /// The built catalog.
    pub fn catalog_dir(&self) -> PathBuf {
        self.base.path().join("catalog")
    }

    /// A path in the scratch folder (see [`Fixture::scratch`]).
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.base.path().join("scratch").join(name)
    }

    /// A path inside the root.
    pub fn in_root(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    /// Writes a file inside the root, creating its parent directories.
    pub fn write_in_root(&self, rel: &str, content: &str) {
        let path = self.in_root(rel);
        fs::create_dir_all(path.parent().expect("has parent")).expect("create dirs");
        fs::write(path, content).expect("write file in root");
    }

    /// Simulates a reboot: the boot id changes. Sessions opened afterwards see the new boot.
    pub fn reboot(&self, new_boot_id: &str) {
        fs::write(self.base.path().join("boot_id"), format!("{new_boot_id}\n"))
            .expect("rewrite boot id");
    }

    /// The update id given to the update with this title.
    pub fn id(&self, title: &str) -> uuid::Uuid {
        self.ids[title].parse().expect("fixture ids are uuids")
    }

    /// The updates with these titles, in this order, as a writable collection from `session`.
    pub fn updates(&self, session: &UpdateSession, titles: &[&str]) -> UpdateCollection {
        let all = session.catalog_updates().expect("read catalog updates");
        let mut out = UpdateCollection::new();
        for title in titles {
            let update = all
                .iter()
                .find(|u| u.title() == *title)
                .unwrap_or_else(|| panic!("no update titled {title}"));
            out.add(update.clone()).expect("writable collection");
        }
        out
    }

    /// An installer from `session` with `updates` set to the updates with these titles.
    pub fn installer(&self, session: &UpdateSession, titles: &[&str]) -> UpdateInstaller {
        let mut installer = session.create_update_installer();
        installer.set_updates(&self.updates(session, titles));
        installer
    }

    /// The payload archive of the update with this title, in the built catalog.
    pub fn payload_path(&self, title: &str) -> PathBuf {
        let session = self.session();
        let catalog = session.catalog().unwrap();
        let def = catalog.find(self.id(title)).expect("update in catalog");
        catalog.payload_path(&def.payload)
    }

    /// Everything under the root (see [`snapshot`]).
    pub fn root_snapshot(&self) -> BTreeMap<String, String> {
        snapshot(&self.root())
    }
}

/// Every path under `dir`, relative, described exactly: `file <mode> <content>`, `dir <mode>` or
/// `link -> <target>`. Two equal snapshots mean the trees are the same to the byte and bit.
pub fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    fn go(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.expect("list dir").path();
            let rel = path
                .strip_prefix(base)
                .expect("below base")
                .to_string_lossy()
                .into_owned();
            let meta = fs::symlink_metadata(&path).expect("stat");
            let mode = meta.permissions().mode() & 0o7777;
            let what = if meta.file_type().is_symlink() {
                format!(
                    "link -> {}",
                    fs::read_link(&path).expect("readlink").display()
                )
            } else if meta.is_dir() {
                go(base, &path, out);
                format!("dir {mode:o}")
            } else {
                let content = fs::read(&path).expect("read file");
                format!("file {mode:o} {}", String::from_utf8_lossy(&content))
            };
            out.insert(rel, what);
        }
    }
    let mut out = BTreeMap::new();
    go(dir, dir, &mut out);
    out
}

/// Waits until `condition` holds, checking [`WAIT_ATTEMPTS`] times 10 ms apart; panics naming
/// `what` if it never does. The bound only stops a hung test: nothing is asserted about time.
pub fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..WAIT_ATTEMPTS {
        if condition() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("gave up waiting for {what}");
}

/// The titles of the updates in a collection, in order.
pub fn titles(updates: &UpdateCollection) -> Vec<String> {
    updates.iter().map(|u| u.title().to_string()).collect()
}

/// Reads a file in the root or scratch as text, `None` if it does not exist.
pub fn read(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok()
}

//! Kill -9 torture tests (issue 3, item 5).
//!
//! The real `wua` binary is killed with SIGKILL at every named checkpoint of install and
//! uninstall (`wua::checkpoint::ALL`, through `WUA_TEST_KILL_AT`), for the `files` and the
//! `command` handler, and at pseudo-random points of the install or uninstall of a larger update.
//! After each kill the agent is restarted (`wua status`: every command that opens a session runs
//! recovery), and the harness checks that:
//!
//! * a. the target root is byte-for-byte (content, mode, symlink targets, directory set) either
//!   the pre-state or the post-state of the interrupted operation: the pre-state (rolled back)
//!   for a kill before `:committed`, the post-state at `:committed`;
//! * b. the database agrees with the disk: `wua list` shows the update installed iff the root is
//!   in the installed state, and every entry of the installed manifest is on disk as recorded
//!   (SHA-256, mode, link target), the manifest being the one a clean install records;
//! * c. no staging folder is left in the root, and the backups under the state directory are
//!   exactly the ones the installed manifest names, holding what the update replaced (and saved
//!   uninstall scripts exist only for an installed update);
//! * d. history has one entry for the interrupted operation: `aborted` with `WU_E_SERVICE_STOP`
//!   when rolled back, `succeeded` when committed;
//! * e. a retry succeeds and leaves the post-state, and the reverse operation then restores the
//!   pre-state exactly.
//!
//! The number of random kills comes from `WUA_TORTURE_KILLS` (default 5, so `cargo test` stays
//! fast); `WUA_TORTURE_SEED` changes the seed of the PRNG that picks each kill's delay. The
//! long run, recorded in docs/BENCHMARKS.md, is
//! `WUA_TORTURE_KILLS=200 cargo test --release -p wua-cli --test torture -- --nocapture`.
//! Delays only pick a point to kill at: nothing asserts on time, and every wait is bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;
use serde_json::Value;
use tempfile::TempDir;
use uuid::Uuid;
use wua::handlers::STAGING_DIR;
use wua::store::{EntryKind, ManifestEntry};

/// The `files` update of the checkpoint catalog.
const FILES_ID: &str = "7a0f1c2e-5b1d-4c3e-8f00-000000000001";
/// The `command` update of the checkpoint catalog.
const COMMAND_ID: &str = "7a0f1c2e-5b1d-4c3e-8f00-000000000002";
/// The large `files` update of the random-kill catalog.
const BULK_ID: &str = "7a0f1c2e-5b1d-4c3e-8f00-000000000003";

// ---- file-system snapshots ---------------------------------------------------------------------

/// One object in a tree: what a byte-for-byte comparison looks at.
#[derive(Clone, PartialEq, Eq)]
enum Node {
    Dir { mode: u32 },
    File { mode: u32, content: Vec<u8> },
    Symlink { target: PathBuf },
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Dir { mode } => write!(f, "dir {mode:o}"),
            Node::File { mode, content } => {
                let head = String::from_utf8_lossy(&content[..content.len().min(24)]);
                write!(
                    f,
                    "file {mode:o}, {} bytes, sha256 {}…, starting {head:?}",
                    content.len(),
                    &sha256_hex(content)[..12]
                )
            }
            Node::Symlink { target } => write!(f, "symlink -> {}", target.display()),
        }
    }
}

/// Every object below a folder, by relative path.
type Snapshot = BTreeMap<String, Node>;

/// Everything under `dir`, but a top-level staging folder (checked on its own).
fn snapshot(dir: &Path) -> Snapshot {
    fn go(base: &Path, dir: &Path, out: &mut Snapshot) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel == STAGING_DIR {
                continue;
            }
            out.insert(rel, node(&path));
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                go(base, &path, out);
            }
        }
    }
    let mut out = Snapshot::new();
    if dir.exists() {
        go(dir, dir, &mut out);
    }
    out
}

fn node(path: &Path) -> Node {
    let meta = fs::symlink_metadata(path).unwrap();
    let mode = meta.permissions().mode() & 0o7777;
    if meta.file_type().is_symlink() {
        Node::Symlink {
            target: fs::read_link(path).unwrap(),
        }
    } else if meta.is_dir() {
        Node::Dir { mode }
    } else {
        Node::File {
            mode,
            content: fs::read(path).unwrap(),
        }
    }
}

/// The first differences between two snapshots, one per line.
fn diff(expected: &Snapshot, actual: &Snapshot) -> String {
    let keys: BTreeSet<&String> = expected.keys().chain(actual.keys()).collect();
    let lines: Vec<String> = keys
        .into_iter()
        .filter_map(|k| match (expected.get(k), actual.get(k)) {
            (Some(e), Some(a)) if e == a => None,
            (Some(e), Some(a)) => Some(format!("    {k}: expected {e:?}, found {a:?}")),
            (Some(e), None) => Some(format!("    {k}: missing (expected {e:?})")),
            (None, Some(a)) => Some(format!("    {k}: unexpected {a:?}")),
            (None, None) => None,
        })
        .collect();
    let shown = lines.len().min(8);
    let mut text = lines[..shown].join("\n");
    if lines.len() > shown {
        text.push_str(&format!("\n    … and {} more", lines.len() - shown));
    }
    text
}

fn sha256_hex(bytes: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn write_file(path: &Path, content: impl AsRef<[u8]>, mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn make_dir(path: &Path, mode: u32) {
    fs::create_dir_all(path).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

// ---- the agent under test ----------------------------------------------------------------------

/// A temporary agent: root, state directory and boot id file of its own.
struct Agent {
    dir: TempDir,
    catalog: PathBuf,
}

/// What a finished `wua` run printed.
#[derive(Debug)]
struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Agent {
    fn new(catalog: &Path) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("boot_id"), "boot-1\n").unwrap();
        fs::create_dir(dir.path().join("root")).unwrap();
        Agent {
            dir,
            catalog: catalog.to_path_buf(),
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `wua` with this agent's paths; `--unsafe-io` unless `durable`.
    fn cmd(&self, durable: bool) -> Command {
        let mut c = Command::cargo_bin("wua").unwrap();
        c.arg("--catalog")
            .arg(&self.catalog)
            .arg("--root")
            .arg(self.root())
            .arg("--state-dir")
            .arg(self.state())
            .arg("--boot-id-file")
            .arg(self.dir.path().join("boot_id"))
            .env("HOME", self.dir.path())
            .env_remove(wua::checkpoint::KILL_AT)
            .env_remove(wua::checkpoint::FAIL_AT)
            .env_remove("WUA_UNSAFE_IO")
            .env_remove("WUA_LOG")
            .stdin(Stdio::null());
        if !durable {
            c.arg("--unsafe-io");
        }
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = self.cmd(false).args(args).output().unwrap();
        Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs a read-only command with `--json`; it must succeed.
    fn json(&self, args: &[&str]) -> Result<Value, String> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        if out.code != Some(0) {
            return Err(format!("`wua {}` failed: {out:?}", all.join(" ")));
        }
        serde_json::from_str(&out.stdout)
            .map_err(|e| format!("`wua {}` printed no JSON ({e}): {out:?}", all.join(" ")))
    }

    /// Runs `op` on `id` to completion; it must succeed.
    fn operate(&self, op: Op, id: &str) -> Result<(), String> {
        let out = self.run(&[op.verb(), id]);
        match out.code {
            Some(0) => Ok(()),
            code => Err(format!(
                "`wua {} {id}` exited {code:?}\nstdout: {}\nstderr: {}",
                op.verb(),
                out.stdout.trim(),
                out.stderr.trim()
            )),
        }
    }

    /// "Restarts" the agent after a kill: a command that opens a session, so runs recovery.
    fn restart(&self) -> Result<(), String> {
        let status = self.json(&["status"])?;
        if status["is_busy"] != false {
            return Err(format!("busy after restart: {status}"));
        }
        Ok(())
    }

    /// The total number of history entries and the newest entry.
    fn history(&self) -> Result<(i64, Option<Value>), String> {
        let h = self.json(&["history", "--count", "1"])?;
        let total = h["total"]
            .as_i64()
            .ok_or_else(|| format!("history without total: {h}"))?;
        Ok((total, h["entries"].get(0).cloned()))
    }

    fn session(&self) -> Result<wua::UpdateSession, String> {
        let mut config = wua::AgentConfig::new(self.root(), self.state(), &self.catalog);
        config.boot_id_file = Some(self.dir.path().join("boot_id"));
        config.unsafe_io = true;
        wua::UpdateSession::open(config).map_err(|e| format!("cannot open a session: {e}"))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Install,
    Uninstall,
}

impl Op {
    fn of_checkpoint(checkpoint: &str) -> Op {
        match checkpoint.split(':').next() {
            Some("install") => Op::Install,
            Some("uninstall") => Op::Uninstall,
            _ => panic!("checkpoint {checkpoint} is neither install:… nor uninstall:…"),
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Op::Install => "install",
            Op::Uninstall => "uninstall",
        }
    }

    fn history_name(self) -> &'static str {
        match self {
            Op::Install => "installation",
            Op::Uninstall => "uninstallation",
        }
    }

    fn reverse(self) -> Op {
        match self {
            Op::Install => Op::Uninstall,
            Op::Uninstall => Op::Install,
        }
    }
}

/// Where an interrupted operation left the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    /// As before the operation: rolled back (or killed before it began).
    Pre,
    /// As after the operation: committed.
    Post,
}

impl Side {
    fn of(op: Op, installed: bool) -> Side {
        if installed == (op == Op::Install) {
            Side::Post
        } else {
            Side::Pre
        }
    }
}

// ---- fixtures ----------------------------------------------------------------------------------

/// The states a fixture update moves a root between, as a clean (never killed) agent saw them.
struct Reference {
    update_id: &'static str,
    /// The root before the update is installed (and after it is uninstalled).
    uninstalled: Snapshot,
    /// The root with the update installed.
    installed: Snapshot,
    /// The manifest a clean install records.
    manifest: Vec<ManifestEntry>,
    /// Whether installing saves an uninstall script.
    keeps_scripts: bool,
    /// Writes the root's pre-existing content.
    prepare: fn(&Path),
}

impl Reference {
    /// Installs and uninstalls the update with a fresh agent, recording the states.
    fn record(
        catalog: &Path,
        update_id: &'static str,
        keeps_scripts: bool,
        prepare: fn(&Path),
    ) -> Reference {
        let agent = Agent::new(catalog);
        prepare(&agent.root());
        let uninstalled = snapshot(&agent.root());
        agent.operate(Op::Install, update_id).unwrap();
        let installed = snapshot(&agent.root());
        assert_ne!(installed, uninstalled, "the fixture update changes nothing");
        let mut manifest = agent
            .session()
            .unwrap()
            .store()
            .installed_update(Uuid::parse_str(update_id).unwrap())
            .unwrap()
            .expect("installed")
            .files;
        manifest.sort_by(|a, b| a.path.cmp(&b.path));
        assert!(
            manifest.iter().any(|e| e.backup.is_some()),
            "the fixture update replaces nothing"
        );
        agent.operate(Op::Uninstall, update_id).unwrap();
        let after = snapshot(&agent.root());
        assert!(
            after == uninstalled,
            "a clean uninstall does not restore the root:\n{}",
            diff(&uninstalled, &after)
        );
        Reference {
            update_id,
            uninstalled,
            installed,
            manifest,
            keeps_scripts,
            prepare,
        }
    }

    fn pre(&self, op: Op) -> &Snapshot {
        match op {
            Op::Install => &self.uninstalled,
            Op::Uninstall => &self.installed,
        }
    }

    /// A fresh agent whose root holds the pre-existing content.
    fn agent(&self, catalog: &Path) -> Agent {
        let agent = Agent::new(catalog);
        (self.prepare)(&agent.root());
        agent
    }
}

/// What the checkpoint catalog's updates replace: a file with its own content and mode 0600, a
/// symlink, and (for the command update) a file with mode 0640.
fn prepare_checkpoint_root(root: &Path) {
    make_dir(&root.join("etc"), 0o755);
    write_file(&root.join("etc/torture.conf"), "setting=original\n", 0o600);
    write_file(&root.join("etc/cmdtool.conf"), "cmdtool=disabled\n", 0o640);
    make_dir(&root.join("usr/bin"), 0o755);
    fs::set_permissions(root.join("usr"), fs::Permissions::from_mode(0o755)).unwrap();
    symlink("/opt/old-torture", root.join("usr/bin/torture")).unwrap();
}

/// Builds the checkpoint catalog in `dir`: a `files` update (files and a symlink in nested new
/// folders, a replaced file and a replaced symlink) and a `command` update (an install script
/// writing under `$DESTDIR`, replacing a file, and an uninstall script that appends to `marker`,
/// outside the root). Returns the catalog directory.
fn checkpoint_catalog(dir: &Path, marker: &Path) -> PathBuf {
    let files = dir.join("src/01-files");
    fs::create_dir_all(&files).unwrap();
    fs::write(
        files.join("update.json"),
        format!(
            r#"{{"identity":{{"update_id":"{FILES_ID}","revision_number":1}},
                "title":"Torture files","handler":{{"kind":"files"}}}}"#
        ),
    )
    .unwrap();
    let p = files.join("payload");
    write_file(
        &p.join("usr/local/lib/torture/bin/torture"),
        "#!/bin/sh\necho torture\n",
        0o755,
    );
    write_file(
        &p.join("usr/local/lib/torture/share/doc/README"),
        "The torture tool.\n",
        0o644,
    );
    write_file(
        &p.join("usr/local/lib/torture/share/data/table.bin"),
        (0..=255u8).cycle().take(5000).collect::<Vec<u8>>(),
        0o644,
    );
    symlink("share/doc/README", p.join("usr/local/lib/torture/README")).unwrap();
    write_file(&p.join("etc/torture.conf"), "setting=new\n", 0o644);
    make_dir(&p.join("usr/bin"), 0o755);
    symlink(
        "../local/lib/torture/bin/torture",
        p.join("usr/bin/torture"),
    )
    .unwrap();

    let command = dir.join("src/02-command");
    fs::create_dir_all(&command).unwrap();
    fs::write(
        command.join("update.json"),
        format!(
            r#"{{"identity":{{"update_id":"{COMMAND_ID}","revision_number":1}},
                "title":"Torture command","handler":{{"kind":"command",
                "install":{{"program":"install.sh","timeout_secs":60}},
                "uninstall":{{"program":"uninstall.sh","timeout_secs":60}}}}}}"#
        ),
    )
    .unwrap();
    write_file(
        &command.join("payload/install.sh"),
        r#"#!/bin/sh
set -eu
mkdir -p "$DESTDIR/opt/cmdtool/bin" "$DESTDIR/opt/cmdtool/share/doc" "$DESTDIR/etc"
printf '#!/bin/sh\necho cmdtool\n' > "$DESTDIR/opt/cmdtool/bin/cmdtool"
echo "generated for $WUA_UPDATE_ID revision $WUA_REVISION" > "$DESTDIR/opt/cmdtool/share/doc/info.txt"
echo "cmdtool=enabled" > "$DESTDIR/etc/cmdtool.conf"
ln -s bin/cmdtool "$DESTDIR/opt/cmdtool/current"
chmod 755 "$DESTDIR/opt" "$DESTDIR/opt/cmdtool" "$DESTDIR/opt/cmdtool/bin" \
    "$DESTDIR/opt/cmdtool/share" "$DESTDIR/opt/cmdtool/share/doc" "$DESTDIR/opt/cmdtool/bin/cmdtool"
chmod 644 "$DESTDIR/opt/cmdtool/share/doc/info.txt" "$DESTDIR/etc/cmdtool.conf"
"#,
        0o755,
    );
    write_file(
        &command.join("payload/uninstall.sh"),
        format!(
            "#!/bin/sh\necho \"uninstalled $WUA_UPDATE_ID\" >> '{}'\n",
            marker.display()
        ),
        0o755,
    );
    let out = dir.join("catalog");
    wua::catalog::build(&dir.join("src"), &out).unwrap();
    out
}

/// A small, fixed-seed PRNG (splitmix64): reproducible content and kill points.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (`bound` > 0).
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(n);
        out
    }
}

/// How many replaced files and files in all the bulk update has.
const BULK_REPLACED: usize = 12;
const BULK_FILES: usize = 300;

/// The bulk update's pre-existing content: files and a symlink it replaces.
fn prepare_bulk_root(root: &Path) {
    make_dir(&root.join("etc/bulk"), 0o755);
    fs::set_permissions(root.join("etc"), fs::Permissions::from_mode(0o755)).unwrap();
    for i in 0..BULK_REPLACED {
        write_file(
            &root.join(format!("etc/bulk/conf{i:02}")),
            format!("original {i}\n"),
            0o600,
        );
    }
    make_dir(&root.join("usr/bin"), 0o755);
    fs::set_permissions(root.join("usr"), fs::Permissions::from_mode(0o755)).unwrap();
    symlink("/opt/old-bulk", root.join("usr/bin/bulk")).unwrap();
}

/// Builds a catalog with one large `files` update: 300 files of pseudo-random content (about
/// 3.6 MB) in 60 nested new folders, 12 files and a symlink that replace pre-existing ones, and
/// a few symlinks.
fn bulk_catalog(dir: &Path) -> PathBuf {
    let src = dir.join("src/01-bulk");
    fs::create_dir_all(&src).unwrap();
    fs::write(
        src.join("update.json"),
        format!(
            r#"{{"identity":{{"update_id":"{BULK_ID}","revision_number":1}},
                "title":"Torture bulk","handler":{{"kind":"files"}}}}"#
        ),
    )
    .unwrap();
    let p = src.join("payload");
    let mut rng = Rng(0x0B0B_5EED);
    for i in 0..BULK_FILES {
        let size = 1 + rng.below(24 * 1024) as usize;
        let mode = if i % 7 == 0 { 0o755 } else { 0o644 };
        write_file(
            &p.join(format!(
                "usr/share/bulk/{:02}/{:02}/file{i:03}.dat",
                i % 12,
                (i / 12) % 5
            )),
            rng.bytes(size),
            mode,
        );
    }
    for i in 0..BULK_REPLACED {
        write_file(
            &p.join(format!("etc/bulk/conf{i:02}")),
            format!("replaced {i}\n"),
            0o644,
        );
    }
    for k in 0..4 {
        symlink(
            format!("{k:02}/00/file{k:03}.dat"),
            p.join(format!("usr/share/bulk/latest{k}")),
        )
        .unwrap();
    }
    make_dir(&p.join("usr/bin"), 0o755);
    symlink("../share/bulk/00/00/file000.dat", p.join("usr/bin/bulk")).unwrap();
    let out = dir.join("catalog");
    wua::catalog::build(&dir.join("src"), &out).unwrap();
    out
}

// ---- the checks --------------------------------------------------------------------------------

/// Checks a, b and c: the root is one of the reference states, the database says the same, the
/// manifest is on disk, no staging folder is left and the backups are exactly the manifest's.
/// Returns whether the update is installed.
fn check_consistent(agent: &Agent, reference: &Reference) -> Result<bool, String> {
    let mut problems = Vec::new();
    let id = reference.update_id;
    let uuid = Uuid::parse_str(id).unwrap();

    // c: nothing left in staging.
    let staging = agent.root().join(STAGING_DIR);
    if fs::symlink_metadata(&staging).is_ok() {
        problems.push(format!(
            "{} remains after recovery: {:?}",
            staging.display(),
            snapshot(&staging).keys().collect::<Vec<_>>()
        ));
    }

    // a: the root is one of the two states.
    let now = snapshot(&agent.root());
    let disk_installed = if now == reference.installed {
        Some(true)
    } else if now == reference.uninstalled {
        Some(false)
    } else {
        problems.push(format!(
            "the root is neither the uninstalled nor the installed state\n  against uninstalled:\n{}\n  against installed:\n{}",
            diff(&reference.uninstalled, &now),
            diff(&reference.installed, &now)
        ));
        None
    };

    // b: the database agrees, through the CLI and through the library.
    let list = agent.json(&["list"])?;
    let listed = list["updates"]
        .as_array()
        .and_then(|u| u.iter().find(|u| u["update_id"] == id))
        .ok_or_else(|| format!("`wua list` does not show {id}: {list}"))?["is_installed"]
        .as_bool()
        .ok_or_else(|| format!("`wua list` has no is_installed: {list}"))?;
    if let Some(disk) = disk_installed
        && disk != listed
    {
        problems.push(format!(
            "the database says installed={listed}, the root is in the {} state",
            if disk { "installed" } else { "uninstalled" }
        ));
    }
    let session = agent.session()?;
    let store = session.store();
    let record = store
        .installed_update(uuid)
        .map_err(|e| format!("cannot read the store: {e}"))?;
    if record.is_some() != listed {
        problems.push(format!(
            "`wua list` says installed={listed}, the store {}",
            if record.is_some() {
                "has a record"
            } else {
                "has none"
            }
        ));
    }
    if let Some(record) = &record {
        let mut files = record.files.clone();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        if files != reference.manifest {
            problems.push(format!(
                "the recorded manifest differs from a clean install's:\n  recorded: {files:?}\n  clean:    {:?}",
                reference.manifest
            ));
        }
        let wrong: Vec<String> = files
            .iter()
            .filter_map(|entry| check_entry_on_disk(&agent.root(), entry).err())
            .collect();
        problems.extend(wrong.iter().take(8).cloned());
        if wrong.len() > 8 {
            problems.push(format!(
                "… and {} more manifest entries not on disk as recorded",
                wrong.len() - 8
            ));
        }
    }

    // c: backups are exactly what installed manifests name, holding the replaced content;
    // saved scripts only for installed updates.
    let installed = store
        .installed_updates()
        .map_err(|e| format!("cannot read the store: {e}"))?;
    let installed_ids: BTreeSet<String> = installed
        .iter()
        .map(|u| u.definition.identity.update_id.to_string())
        .collect();
    let mut expected_backups = Snapshot::new();
    for update in &installed {
        let uid = update.definition.identity.update_id;
        for entry in &update.files {
            if let Some(b) = &entry.backup {
                let original = if uid == uuid {
                    reference.uninstalled.get(&entry.path).cloned()
                } else {
                    None
                };
                match original {
                    Some(node) => {
                        expected_backups.insert(format!("{uid}/{b}"), node);
                    }
                    None => problems.push(format!(
                        "{uid} records a backup of {}, which did not exist before",
                        entry.path
                    )),
                }
            }
        }
    }
    let backups_dir = agent.state().join("backups");
    let backups: Snapshot = snapshot(&backups_dir)
        .into_iter()
        .filter(|(rel, node)| {
            // Folders holding backups are fine; any other folder is a leftover.
            let top = rel.split('/').next().unwrap_or_default();
            !(matches!(node, Node::Dir { .. }) && installed_ids.contains(top))
        })
        .collect();
    if backups != expected_backups {
        problems.push(format!(
            "the backups in {} are not exactly the installed manifest's:\n{}",
            backups_dir.display(),
            diff(&expected_backups, &backups)
        ));
    }
    let scripts_dir = agent.state().join("scripts");
    for name in fs::read_dir(&scripts_dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
    {
        if !installed_ids.contains(&name) {
            problems.push(format!(
                "saved scripts of an update that is not installed remain: {}",
                scripts_dir.join(name).display()
            ));
        }
    }
    if reference.keeps_scripts && listed && !scripts_dir.join(id).is_dir() {
        problems.push(format!(
            "the installed update's uninstall script is gone from {}",
            scripts_dir.display()
        ));
    }

    if problems.is_empty() {
        Ok(listed)
    } else {
        Err(problems.join("\n"))
    }
}

/// One manifest entry is on disk as recorded.
fn check_entry_on_disk(root: &Path, entry: &ManifestEntry) -> Result<(), String> {
    let path = root.join(&entry.path);
    let Ok(meta) = fs::symlink_metadata(&path) else {
        return Err(format!("{} is in the manifest but not on disk", entry.path));
    };
    let mode = meta.permissions().mode() & 0o7777;
    let ok = match entry.kind {
        EntryKind::Dir => meta.is_dir() && mode == entry.mode,
        EntryKind::Symlink => {
            meta.file_type().is_symlink()
                && fs::read_link(&path)
                    .ok()
                    .map(|l| l.to_string_lossy().into_owned())
                    == entry.link_target
        }
        EntryKind::File => {
            meta.is_file()
                && mode == entry.mode
                && Some(sha256_hex(&fs::read(&path).unwrap())) == entry.sha256
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} does not match its manifest entry {entry:?}: on disk {:?}",
            entry.path,
            node(&path)
        ))
    }
}

/// Check d: history has `before + 1` entries, the newest recording `op` on the update with the
/// result `side` implies. With `may_be_absent`, `before` entries is also fine if `side` is `Pre`
/// (killed before the transaction began, so nothing to record). Returns whether there was an
/// entry.
fn check_history(
    agent: &Agent,
    before: i64,
    op: Op,
    id: &str,
    side: Side,
    may_be_absent: bool,
) -> Result<bool, String> {
    let (total, newest) = agent.history()?;
    if may_be_absent && side == Side::Pre && total == before {
        return Ok(false);
    }
    if total != before + 1 {
        return Err(format!(
            "history has {total} entries, expected {} (one for the interrupted {})",
            before + 1,
            op.verb()
        ));
    }
    let e = newest.unwrap_or_default();
    let (result, hresult) = match side {
        Side::Pre => ("aborted", Some("WU_E_SERVICE_STOP")),
        Side::Post => ("succeeded", None),
    };
    let ok = e["operation"] == op.history_name()
        && e["update_id"] == id
        && e["result_code"] == result
        && hresult.is_none_or(|h| e["hresult"]["name"] == h);
    if !ok {
        return Err(format!(
            "the newest history entry is not {} {result}{}: {e}",
            op.history_name(),
            hresult.map(|h| format!(" with {h}")).unwrap_or_default()
        ));
    }
    Ok(true)
}

/// Check e: after a rollback, a retry succeeds and leaves the post-state; after a commit,
/// repeating the operation changes nothing. Then the reverse operation restores the pre-state
/// exactly, and the agent is consistent throughout.
fn check_retry(agent: &Agent, reference: &Reference, op: Op, side: Side) -> Result<(), String> {
    let id = reference.update_id;
    let (before, _) = agent.history()?;
    let out = agent.run(&[op.verb(), id]);
    let expected_code = match (side, op) {
        (Side::Pre, _) | (Side::Post, Op::Install) => 0,
        // Uninstalling what is not installed is refused as bad input.
        (Side::Post, Op::Uninstall) => 64,
    };
    if out.code != Some(expected_code) {
        return Err(format!(
            "retrying `wua {} {id}` after the {side:?}-state exited {:?}, expected {expected_code}: {out:?}",
            op.verb(),
            out.code
        ));
    }
    let installed = check_consistent(agent, reference).map_err(|e| format!("after retry: {e}"))?;
    if Side::of(op, installed) != Side::Post {
        return Err(format!(
            "the retried {} did not leave the post-state",
            op.verb()
        ));
    }
    if side == Side::Pre {
        check_history(agent, before, op, id, Side::Post, false)
            .map_err(|e| format!("after retry: {e}"))?;
    }
    agent
        .operate(op.reverse(), id)
        .map_err(|e| format!("reversing the retried operation: {e}"))?;
    let installed =
        check_consistent(agent, reference).map_err(|e| format!("after reversing: {e}"))?;
    let now = snapshot(&agent.root());
    if Side::of(op, installed) != Side::Pre || &now != reference.pre(op) {
        return Err(format!(
            "reversing the retried {} did not restore the pre-state:\n{}",
            op.verb(),
            diff(reference.pre(op), &now)
        ));
    }
    Ok(())
}

// ---- kills at named checkpoints ----------------------------------------------------------------

/// Kills `op` at `checkpoint` in a fresh agent, restarts, and runs checks a–e.
fn kill_at_checkpoint(
    catalog: &Path,
    reference: &Reference,
    checkpoint: &str,
) -> Result<(), String> {
    let op = Op::of_checkpoint(checkpoint);
    let id = reference.update_id;
    let agent = reference.agent(catalog);
    if op == Op::Uninstall {
        agent.operate(Op::Install, id)?;
    }
    let pre = snapshot(&agent.root());
    if &pre != reference.pre(op) {
        return Err(format!(
            "the pre-state is not the reference's:\n{}",
            diff(reference.pre(op), &pre)
        ));
    }
    let (before, _) = agent.history()?;
    let out = agent
        .cmd(false)
        .args([op.verb(), id])
        .env(wua::checkpoint::KILL_AT, checkpoint)
        .output()
        .unwrap();
    if out.status.signal() != Some(libc::SIGKILL) {
        return Err(format!(
            "the process was not killed at the checkpoint: {:?}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    agent.restart()?;
    let installed = check_consistent(&agent, reference)?;
    let side = Side::of(op, installed);
    let expected = if checkpoint.ends_with(":committed") {
        Side::Post
    } else {
        Side::Pre
    };
    if side != expected {
        return Err(format!(
            "recovery left the {side:?}-state, expected the {expected:?}-state"
        ));
    }
    check_history(&agent, before, op, id, side, false)?;
    check_retry(&agent, reference, op, side)
}

/// Kills the operation at `checkpoint` on one update of the checkpoint catalog, in a fresh
/// agent with fixtures of its own, and runs checks a–e.
fn torture_checkpoint(update_id: &'static str, checkpoint: &str) {
    let fixtures = tempfile::tempdir().unwrap();
    let marker = fixtures.path().join("uninstall-marker");
    let catalog = checkpoint_catalog(fixtures.path(), &marker);
    let reference = Reference::record(
        &catalog,
        update_id,
        update_id == COMMAND_ID,
        prepare_checkpoint_root,
    );
    if update_id == COMMAND_ID {
        assert!(
            fs::read_to_string(&marker)
                .unwrap_or_default()
                .contains(COMMAND_ID),
            "the uninstall command did not run"
        );
    }
    if let Err(e) = kill_at_checkpoint(&catalog, &reference, checkpoint) {
        let handler = if update_id == COMMAND_ID {
            "command"
        } else {
            "files"
        };
        panic!("{handler} update killed at {checkpoint}: {e}");
    }
}

/// One test per handler and checkpoint, so that a failure names its checkpoint (and the
/// others still run); `every_checkpoint_is_covered` checks the list against `ALL`.
macro_rules! checkpoint_tests {
    ($($name:ident: $update:expr, $checkpoint:literal;)*) => {
        $(
            #[test]
            fn $name() {
                torture_checkpoint($update, $checkpoint);
            }
        )*
        const COVERED: &[(&str, &str)] = &[$(($update, $checkpoint)),*];
    };
}

checkpoint_tests! {
    files_killed_at_install_begun: FILES_ID, "install:begun";
    files_killed_at_install_staged: FILES_ID, "install:staged";
    files_killed_at_install_journaled: FILES_ID, "install:journaled";
    files_killed_at_install_applying: FILES_ID, "install:applying";
    files_killed_at_install_applied: FILES_ID, "install:applied";
    files_killed_at_install_committed: FILES_ID, "install:committed";
    files_killed_at_uninstall_begun: FILES_ID, "uninstall:begun";
    files_killed_at_uninstall_staged: FILES_ID, "uninstall:staged";
    files_killed_at_uninstall_journaled: FILES_ID, "uninstall:journaled";
    files_killed_at_uninstall_applying: FILES_ID, "uninstall:applying";
    files_killed_at_uninstall_applied: FILES_ID, "uninstall:applied";
    files_killed_at_uninstall_committed: FILES_ID, "uninstall:committed";
    command_killed_at_install_begun: COMMAND_ID, "install:begun";
    command_killed_at_install_staged: COMMAND_ID, "install:staged";
    command_killed_at_install_journaled: COMMAND_ID, "install:journaled";
    command_killed_at_install_applying: COMMAND_ID, "install:applying";
    command_killed_at_install_applied: COMMAND_ID, "install:applied";
    command_killed_at_install_committed: COMMAND_ID, "install:committed";
    command_killed_at_uninstall_begun: COMMAND_ID, "uninstall:begun";
    command_killed_at_uninstall_staged: COMMAND_ID, "uninstall:staged";
    command_killed_at_uninstall_journaled: COMMAND_ID, "uninstall:journaled";
    command_killed_at_uninstall_applying: COMMAND_ID, "uninstall:applying";
    command_killed_at_uninstall_applied: COMMAND_ID, "uninstall:applied";
    command_killed_at_uninstall_committed: COMMAND_ID, "uninstall:committed";
}

#[test]
fn every_checkpoint_is_covered() {
    for update in [FILES_ID, COMMAND_ID] {
        for cp in wua::checkpoint::ALL {
            Op::of_checkpoint(cp);
            assert!(
                COVERED.contains(&(update, *cp)),
                "no test kills {update} at {cp}: add it to checkpoint_tests!"
            );
        }
    }
    assert_eq!(COVERED.len(), 2 * wua::checkpoint::ALL.len());
}

/// A restart need not run in the working directory of the run it recovers (a service manager
/// starts the agent in `/`): an interrupted install started with a relative `--root` and
/// `--state-dir` must still be rolled back by a restart that names them absolutely from
/// elsewhere.
#[test]
fn recovery_does_not_depend_on_the_working_directory() {
    let fixtures = tempfile::tempdir().unwrap();
    let catalog = checkpoint_catalog(fixtures.path(), &fixtures.path().join("marker"));
    let reference = Reference::record(&catalog, FILES_ID, false, prepare_checkpoint_root);
    let agent = reference.agent(&catalog);
    let (before, _) = agent.history().unwrap();
    let out = Command::cargo_bin("wua")
        .unwrap()
        .current_dir(agent.dir.path())
        .args(["--catalog".as_ref(), catalog.as_os_str()])
        .args(["--root", "root", "--state-dir", "state"])
        .args([
            "--boot-id-file",
            "boot_id",
            "--unsafe-io",
            "install",
            FILES_ID,
        ])
        .env("HOME", agent.dir.path())
        .env(wua::checkpoint::KILL_AT, "install:applying")
        .env_remove(wua::checkpoint::FAIL_AT)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{out:?}");
    // Restart from an empty folder, where the relative paths lead nowhere.
    let elsewhere = fixtures.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    let status = agent
        .cmd(false)
        .current_dir(&elsewhere)
        .args(["--json", "status"])
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    assert!(
        snapshot(&elsewhere).is_empty(),
        "recovery wrote into the working directory"
    );
    let result = check_consistent(&agent, &reference).and_then(|installed| {
        match Side::of(Op::Install, installed) {
            Side::Pre => Ok(()),
            Side::Post => Err("recovery left the post-state, expected the pre-state".into()),
        }
    });
    if let Err(e) = result {
        panic!("killed at install:applying (relative paths), restarted from elsewhere: {e}");
    }
    check_history(&agent, before, Op::Install, FILES_ID, Side::Pre, false).unwrap();
    check_retry(&agent, &reference, Op::Install, Side::Pre).unwrap();
}

// ---- kills at random points ------------------------------------------------------------------

/// What one random kill came to.
struct Round {
    /// The process died by SIGKILL (rather than finishing before the kill was sent).
    killed: bool,
    side: Side,
    /// History recorded the interrupted operation (false: killed before its transaction began).
    recorded: bool,
}

/// Runs `op`, SIGKILLs it after `delay`, restarts and checks a–e.
fn kill_randomly(
    agent: &Agent,
    reference: &Reference,
    op: Op,
    durable: bool,
    delay: Duration,
) -> Result<Round, String> {
    let id = reference.update_id;
    let (before, _) = agent.history()?;
    let mut child = agent
        .cmd(durable)
        .args(["-q", op.verb(), id])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    // SIGKILL; a child that has exited already (but is not reaped) is not affected.
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let killed = out.status.signal() == Some(libc::SIGKILL);
    if !killed && !out.status.success() {
        return Err(format!(
            "`wua {} {id}` failed on its own: {:?}\nstderr: {}",
            op.verb(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    agent.restart()?;
    let installed = check_consistent(agent, reference)?;
    let side = Side::of(op, installed);
    if !killed && side != Side::Post {
        return Err("a run that finished did not leave the post-state".into());
    }
    let recorded = check_history(agent, before, op, id, side, killed)?;
    if side == Side::Pre {
        // Retry to completion (check e); the next round starts from the post-state.
        let (before, _) = agent.history()?;
        agent
            .operate(op, id)
            .map_err(|e| format!("retry after rollback: {e}"))?;
        let installed =
            check_consistent(agent, reference).map_err(|e| format!("after retry: {e}"))?;
        if Side::of(op, installed) != Side::Post {
            return Err("the retry did not leave the post-state".into());
        }
        check_history(agent, before, op, id, Side::Post, false)
            .map_err(|e| format!("after retry: {e}"))?;
    }
    Ok(Round {
        killed,
        side,
        recorded,
    })
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => {
            let t = v.trim();
            // Decimal, or hexadecimal with 0x (as the summary prints seeds).
            match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => t.parse(),
            }
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
        }
        Err(_) => default,
    }
}

/// Per (install?, durable?): the shortest of three whole runs, from spawn to exit. Kill delays
/// are drawn below it, so that most kills land while the process runs.
fn calibrate(catalog: &Path, reference: &Reference) -> BTreeMap<(bool, bool), Duration> {
    let agent = reference.agent(catalog);
    let mut bounds = BTreeMap::<(bool, bool), Duration>::new();
    for _ in 0..3 {
        for durable in [false, true] {
            for op in [Op::Install, Op::Uninstall] {
                let start = Instant::now();
                let out = agent
                    .cmd(durable)
                    .args(["-q", op.verb(), reference.update_id])
                    .output()
                    .unwrap();
                let took = start.elapsed();
                assert!(out.status.success(), "calibration run failed: {out:?}");
                let bound = bounds.entry((op == Op::Install, durable)).or_insert(took);
                *bound = (*bound).min(took);
            }
        }
    }
    assert_eq!(
        snapshot(&agent.root()),
        reference.uninstalled,
        "calibration left the root changed"
    );
    bounds
}

#[test]
fn random_kills_leave_the_pre_or_the_post_state() {
    let wanted = env_number("WUA_TORTURE_KILLS", 5);
    let seed = env_number("WUA_TORTURE_SEED", 0x5EED_2026);
    let fixtures = tempfile::tempdir().unwrap();
    let catalog = bulk_catalog(fixtures.path());
    let reference = Reference::record(&catalog, BULK_ID, false, prepare_bulk_root);
    assert!(reference.installed.len() > BULK_FILES);
    let bounds = calibrate(&catalog, &reference);

    let mut rng = Rng(seed);
    let mut agent = reference.agent(&catalog);
    let mut installed = false;
    let (mut kills, mut attempts, mut finished, mut unrecorded) = (0u64, 0u64, 0u64, 0u64);
    let mut durable_kills = 0u64;
    let mut ended = BTreeMap::<(&str, Side), u64>::new();
    let mut failures = Vec::new();
    // Bounded: a kill that lands after the process exited is retried, but not for ever.
    let max_attempts = wanted * 4 + 20;
    while kills < wanted && attempts < max_attempts {
        attempts += 1;
        let op = if installed {
            Op::Uninstall
        } else {
            Op::Install
        };
        // Some runs durable (the default), some with --unsafe-io.
        let durable = rng.below(2) == 0;
        let bound = bounds[&(op == Op::Install, durable)];
        let delay = Duration::from_micros(rng.below(bound.as_micros().max(1) as u64));
        match kill_randomly(&agent, &reference, op, durable, delay) {
            Ok(round) => {
                if round.killed {
                    kills += 1;
                    durable_kills += u64::from(durable);
                    *ended.entry((op.verb(), round.side)).or_default() += 1;
                    if !round.recorded {
                        unrecorded += 1;
                    }
                } else {
                    finished += 1;
                }
                // Rolled back and retried, or committed: the post-state either way.
                installed = op == Op::Install;
            }
            Err(e) => {
                kills += 1;
                durable_kills += u64::from(durable);
                failures.push(format!(
                    "attempt {attempts} ({} {}, kill after {delay:?}): {e}",
                    op.verb(),
                    if durable { "durable" } else { "--unsafe-io" }
                ));
                // Go on with a clean agent.
                agent = reference.agent(&catalog);
                installed = false;
            }
        }
    }
    let count = |op: &str, side| ended.get(&(op, side)).copied().unwrap_or(0);
    let pre = count("install", Side::Pre) + count("uninstall", Side::Pre);
    let post = count("install", Side::Post) + count("uninstall", Side::Post);
    println!(
        "torture: {kills} random kills ({durable_kills} durable, {} --unsafe-io; seed {seed:#x}; {attempts} attempts, \
         {finished} finished before the kill; delays below {}): \
         {pre} ended in the pre-state ({unrecorded} of them before the transaction began), {post} in the post-state \
         [install {}/{} pre/post, uninstall {}/{} pre/post]; {} failures",
        kills - durable_kills,
        bounds
            .iter()
            .map(|((install, durable), d)| format!(
                "{} {} {}ms",
                if *install { "install" } else { "uninstall" },
                if *durable { "durable" } else { "unsafe" },
                d.as_millis()
            ))
            .collect::<Vec<_>>()
            .join(", "),
        count("install", Side::Pre),
        count("install", Side::Post),
        count("uninstall", Side::Pre),
        count("uninstall", Side::Post),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {kills} random kills failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert_eq!(
        kills, wanted,
        "only {kills} of {wanted} kills landed while the process ran in {attempts} attempts"
    );
}

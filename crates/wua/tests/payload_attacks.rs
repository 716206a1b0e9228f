//! Hostile payload archives, installed through the real `UpdateSession`/`UpdateInstaller`: every
//! attack must fail its update with `WU_E_UH_INVALIDMETADATA` before anything is written outside
//! the staging folder. The root must be the same to the byte and bit as before, nothing may
//! appear outside it (a canary folder beside the root, which the archives aim at, stays as it
//! was), no staging folder may be left, history must record the failure, and nothing may be
//! recorded as installed. Two neighbours are held to the same clean failure with their own
//! HRESULT: a FIFO that a `command` update's install command leaves under `$DESTDIR`, and a
//! payload file that never ends.
//!
//! The archives are written here with the `tar` and `zstd` crates, raw header fields and all, as
//! an attacker would; the catalog directory around them is written by hand, since
//! `wua::catalog::build` only packs well-formed trees.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::PathBuf;

use common::snapshot;
use serde_json::{Value, json};
use tar::EntryType;
use tempfile::TempDir;
use wua::hresult::*;
use wua::{AgentConfig, OperationResultCode, UpdateOperation, UpdateSession};

/// An uncompressed tar archive under construction. Names and link names are written into the
/// header fields as they are (no `..` or absolute-path checks), as a hostile archive would.
struct Tar {
    builder: tar::Builder<Vec<u8>>,
    file_bytes: u64,
}

impl Tar {
    /// An archive that starts with a few good entries, so that an attack comes after the
    /// extraction has already written into staging.
    fn new() -> Tar {
        Tar::empty()
            .dir("opt", 0o755)
            .dir("opt/app", 0o755)
            .file("opt/app/ok", "ok\n", 0o644)
    }

    fn empty() -> Tar {
        Tar {
            builder: tar::Builder::new(Vec::new()),
            file_bytes: 0,
        }
    }

    /// Appends a raw entry: `path` and `link` go into the GNU header's fields byte for byte.
    fn raw(mut self, path: &str, kind: EntryType, mode: u32, link: &str, data: &[u8]) -> Tar {
        let mut h = tar::Header::new_gnu();
        let gnu = h.as_gnu_mut().unwrap();
        assert!(
            path.len() <= gnu.name.len(),
            "{path} is too long for a raw name"
        );
        gnu.name[..path.len()].copy_from_slice(path.as_bytes());
        assert!(link.len() <= gnu.linkname.len(), "{link} is too long");
        gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        if matches!(kind, EntryType::Char | EntryType::Block) {
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
        }
        h.set_cksum();
        self.builder.append(&h, data).unwrap();
        if kind == EntryType::Regular {
            self.file_bytes += data.len() as u64;
        }
        self
    }

    fn dir(self, path: &str, mode: u32) -> Tar {
        self.raw(path, EntryType::Directory, mode, "", b"")
    }

    fn file(self, path: &str, content: &str, mode: u32) -> Tar {
        self.raw(path, EntryType::Regular, mode, "", content.as_bytes())
    }

    fn symlink(self, path: &str, target: &str) -> Tar {
        self.raw(path, EntryType::Symlink, 0o777, target, b"")
    }

    /// An entry whose header (size field included) is written as given, followed by `size`
    /// zero bytes of data.
    fn padded(mut self, path: &str, kind: EntryType, size: u64) -> Tar {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).unwrap();
        h.set_entry_type(kind);
        h.set_mode(0o755);
        h.set_size(size);
        h.set_cksum();
        self.builder
            .append(&h, std::io::repeat(0).take(size))
            .unwrap();
        self
    }

    /// A pax extended header holding `records` (each `key=value`), describing the next entry.
    fn pax(mut self, records: &[&str]) -> Tar {
        let body: String = records.iter().map(|r| pax_record(r)).collect();
        let mut h = tar::Header::new_ustar();
        h.set_path("PaxHeaders.0/entry").unwrap();
        h.set_entry_type(EntryType::XHeader);
        h.set_mode(0o644);
        h.set_size(body.len() as u64);
        h.set_cksum();
        self.builder.append(&h, body.as_bytes()).unwrap();
        self
    }

    /// The `.tar.zst` payload, and the sum of its regular files' sizes.
    fn finish(self) -> (Vec<u8>, u64) {
        let tar = self.builder.into_inner().unwrap();
        (
            zstd::encode_all(tar.as_slice(), 3).unwrap(),
            self.file_bytes,
        )
    }
}

/// One pax record, `"<len> key=value\n"`, where `len` counts the whole record.
fn pax_record(key_value: &str) -> String {
    let mut len = key_value.len() + 3;
    while format!("{len} {key_value}\n").len() != len {
        len += 1;
    }
    format!("{len} {key_value}\n")
}

/// One update of the test catalog.
struct Spec {
    title: String,
    payload: Vec<u8>,
    installed_size: u64,
    handler: Value,
    allow_setid: bool,
}

impl Spec {
    /// A `files` update; its declared installed size is the archive's file bytes.
    fn files(title: &str, tar: Tar) -> Spec {
        let (payload, installed_size) = tar.finish();
        Spec {
            title: title.into(),
            payload,
            installed_size,
            handler: json!({"kind": "files"}),
            allow_setid: false,
        }
    }

    /// A `command` update running `install.sh` from a payload holding only it.
    fn command(title: &str, script: &str) -> Spec {
        let body = format!("#!/bin/sh\nset -eu\n{script}\n");
        let mut spec = Spec::files(title, Tar::empty().file("install.sh", &body, 0o755));
        spec.handler = json!({"kind": "command", "install": {"program": "install.sh"}});
        spec
    }

    fn installed_size(mut self, bytes: u64) -> Spec {
        self.installed_size = bytes;
        self
    }

    fn allow_setid(mut self) -> Spec {
        self.allow_setid = true;
        self
    }
}

/// A catalog of hostile updates, an agent's root and state, and a canary folder beside the root.
struct Env {
    base: TempDir,
    ids: BTreeMap<String, uuid::Uuid>,
}

impl Env {
    fn new(specs: Vec<Spec>) -> Env {
        Env::setup().write_catalog(specs)
    }

    /// The folders, the root's initial content and the canary, without a catalog yet (so that
    /// archives can name absolute paths in this environment).
    fn setup() -> Env {
        let base = tempfile::tempdir().unwrap();
        let env = Env {
            base,
            ids: BTreeMap::new(),
        };
        for dir in ["catalog/payloads", "state", "outside"] {
            fs::create_dir_all(env.base.path().join(dir)).unwrap();
        }
        fs::write(env.base.path().join("boot_id"), "boot-1\n").unwrap();
        // The root holds something of every kind, so that "unchanged" means something.
        let root = env.root();
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        fs::create_dir_all(root.join("var/tmp")).unwrap();
        fs::set_permissions(root.join("var/tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
        fs::write(root.join("etc/existing"), "keep\n").unwrap();
        fs::write(root.join("usr/bin/tool"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(root.join("usr/bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
        symlink("../usr/bin/tool", root.join("etc/tool-link")).unwrap();
        fs::write(env.outside().join("canary"), "canary\n").unwrap();
        env
    }

    fn write_catalog(mut self, specs: Vec<Spec>) -> Env {
        let mut updates = Vec::new();
        for (i, spec) in specs.into_iter().enumerate() {
            let id: uuid::Uuid = format!("00000000-0000-4000-8000-{:012x}", i + 1)
                .parse()
                .unwrap();
            let sha256 = sha256_hex(&spec.payload);
            fs::write(
                self.catalog_dir()
                    .join("payloads")
                    .join(format!("{sha256}.tar.zst")),
                &spec.payload,
            )
            .unwrap();
            let mut def = json!({
                "identity": {"update_id": id.to_string(), "revision_number": 1},
                "title": spec.title,
                "payload": {
                    "sha256": sha256,
                    "size": spec.payload.len(),
                    "installed_size": spec.installed_size,
                },
                "handler": spec.handler,
            });
            if spec.allow_setid {
                def["allow_setid"] = json!(true);
            }
            updates.push(def);
            self.ids.insert(spec.title, id);
        }
        let catalog = json!({
            "format": "wua-catalog",
            "format_version": 2,
            "name": "payload attacks",
            "updates": updates,
        });
        fs::write(
            self.catalog_dir().join("catalog.json"),
            serde_json::to_vec_pretty(&catalog).unwrap(),
        )
        .unwrap();
        self
    }

    fn root(&self) -> PathBuf {
        self.base.path().join("root")
    }

    /// The canary folder: a sibling of the root that the archives aim at.
    fn outside(&self) -> PathBuf {
        self.base.path().join("outside")
    }

    fn catalog_dir(&self) -> PathBuf {
        self.base.path().join("catalog")
    }

    fn session(&self) -> UpdateSession {
        UpdateSession::open(AgentConfig {
            boot_id_file: Some(self.base.path().join("boot_id")),
            ..AgentConfig::new(
                self.root(),
                self.base.path().join("state"),
                self.catalog_dir(),
            )
        })
        .unwrap()
    }

    /// Installs the update with this title alone; its result.
    fn install(&self, title: &str) -> wua::UpdateInstallationResult {
        let session = self.session();
        let update = session
            .catalog_updates()
            .unwrap()
            .iter()
            .find(|u| u.title() == title)
            .unwrap_or_else(|| panic!("no update {title}"))
            .clone();
        let mut updates = wua::UpdateCollection::new();
        updates.add(update).unwrap();
        let mut installer = session.create_update_installer();
        installer.set_updates(&updates);
        let result = installer.install().unwrap();
        assert_eq!(result.update_results.len(), 1);
        result.update_results[0]
    }

    /// What `wua catalog verify` says about the update's payload (the same checks, read only).
    fn verify(&self, title: &str) -> wua::Result<()> {
        let session = self.session();
        let catalog = session.catalog().unwrap();
        let def = catalog.find(self.ids[title]).unwrap().clone();
        catalog.check_payload(&def.payload)
    }

    /// Installs the update with this title and checks that it was refused as an attack and
    /// left no trace: see the module documentation. `why` is part of the message
    /// `wua catalog verify` gives for the payload (`None` when the payload itself is fine and
    /// the install command is what misbehaves). `named` are paths, relative to the test's
    /// base folder, that the archive tried to create outside the root.
    fn assert_refused(&self, title: &str, why: Option<&str>, named: &[&str]) {
        self.assert_failed_cleanly(title, WU_E_UH_INVALIDMETADATA, why, named);
    }

    /// [`Self::assert_refused`] with another HRESULT.
    fn assert_failed_cleanly(
        &self,
        title: &str,
        hresult: HResult,
        why: Option<&str>,
        named: &[&str],
    ) {
        let root_before = snapshot(&self.root());
        let outside_before = snapshot(&self.outside());
        assert!(!root_before.is_empty());

        let result = self.install(title);
        assert_eq!(
            result.result_code,
            OperationResultCode::Failed,
            "{title}: {result:?}"
        );
        assert_eq!(result.hresult, hresult, "{title}: {result:?}");

        assert_eq!(
            snapshot(&self.root()),
            root_before,
            "{title}: the root changed"
        );
        assert_eq!(
            snapshot(&self.outside()),
            outside_before,
            "{title}: the canary folder changed"
        );
        assert_eq!(
            fs::read_to_string(self.outside().join("canary")).unwrap(),
            "canary\n"
        );
        for path in named {
            let path = self.base.path().join(path);
            assert!(
                fs::symlink_metadata(&path).is_err(),
                "{title}: {} exists",
                path.display()
            );
        }
        assert!(
            !self.root().join(".wua-staging").exists(),
            "{title}: staging left behind"
        );

        let session = self.session();
        assert!(
            session.installed_updates().unwrap().is_empty(),
            "{title}: recorded as installed"
        );
        let history = session.query_history(0, 10).unwrap();
        let last = history.first().expect("the failure is in history");
        assert_eq!(last.title, title);
        assert_eq!(last.update_identity.update_id, self.ids[title]);
        assert_eq!(last.operation, UpdateOperation::Installation);
        assert_eq!(last.result_code, OperationResultCode::Failed);
        assert_eq!(last.hresult, hresult);

        if let Some(why) = why {
            let e = self.verify(title).expect_err("verify must refuse it too");
            assert_eq!(e.hresult(), WU_E_UH_INVALIDMETADATA, "{e}");
            assert!(e.to_string().contains(why), "{why:?} not in: {e}");
        }
    }

    /// The absolute path of `rel` in the test's base folder, as text (for archive fields).
    fn abs(&self, rel: &str) -> String {
        self.base.path().join(rel).to_str().unwrap().to_string()
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    hex::encode(digest.as_ref())
}

/// One update whose archive is `Tar::new()` with `attack` applied; the environment.
fn one(title: &str, attack: impl FnOnce(Tar) -> Tar) -> Env {
    Env::new(vec![Spec::files(title, attack(Tar::new()))])
}

// 1. `..` components ------------------------------------------------------------------------

#[test]
fn dotdot_paths_are_refused() {
    let env = one("Dotdot", |t| {
        t.file("../outside/pwned", "x\n", 0o644)
            .file("opt/../../outside/pwned2", "x\n", 0o644)
    });
    env.assert_refused(
        "Dotdot",
        Some("payload entry ../outside/pwned: path is absolute or leaves the root"),
        &["outside/pwned", "outside/pwned2", "pwned"],
    );
}

// 2. Absolute paths -------------------------------------------------------------------------

#[test]
fn absolute_paths_are_refused() {
    let env = Env::setup();
    let target = env.abs("outside/pwned");
    let env = env.write_catalog(vec![Spec::files(
        "Absolute",
        Tar::new().file(&target, "x\n", 0o644),
    )]);
    env.assert_refused(
        "Absolute",
        Some("path is absolute or leaves the root"),
        &["outside/pwned"],
    );
}

// 3. Symlinks pointing outside the root -----------------------------------------------------

#[test]
fn absolute_symlink_targets_are_refused() {
    let env = Env::setup();
    let canary = env.abs("outside/canary");
    let env = env.write_catalog(vec![Spec::files(
        "Absolute link",
        Tar::new()
            .symlink("opt/app/passwd", "/etc/passwd")
            .symlink("opt/app/canary", &canary),
    )]);
    env.assert_refused(
        "Absolute link",
        Some(
            "payload entry opt/app/passwd: symlink points outside the root: absolute target /etc/passwd; use a relative target",
        ),
        &[],
    );
}

#[test]
fn relative_symlinks_climbing_out_are_refused() {
    let env = one("Escaping link", |t| {
        t.symlink("opt/app/up", "../../../outside/canary")
            .file("opt/app/after", "a\n", 0o644)
    });
    env.assert_refused(
        "Escaping link",
        Some(
            "payload entry opt/app/up: symlink points outside the root: ../../../outside/canary climbs above the payload root",
        ),
        &[],
    );
}

#[test]
fn symlinks_escaping_through_other_symlinks_are_refused() {
    // Each link alone stays inside ("r" is the root itself; "r/../outside" reads as "outside"),
    // but once both are installed, `esc` leads to the canary folder beside the root.
    let env = one("Link chain", |t| {
        t.symlink("esc", "r/../outside").symlink("r", ".")
    });
    env.assert_refused(
        "Link chain",
        Some("payload entry esc: symlink points outside the root: r/../outside, followed through the archive's other symlinks"),
        &[],
    );
}

#[test]
fn entries_through_a_symlink_are_refused() {
    let env = one("Through link", |t| {
        t.symlink("opt/app/etc", "../../etc")
            .file("opt/app/etc/existing", "overwritten\n", 0o644)
    });
    env.assert_refused(
        "Through link",
        Some("payload entry opt/app/etc/existing: path goes through a symlink"),
        &[],
    );
    // A symlink after entries that need a directory in its place.
    let env = one("Link over dir", |t| {
        t.file("opt/app/lib/x", "x\n", 0o644)
            .symlink("opt/app/lib", "../../outside")
    });
    env.assert_refused(
        "Link over dir",
        Some("payload entry opt/app/lib: earlier entries of the archive need a directory"),
        &[],
    );
}

// 4. Hard links -----------------------------------------------------------------------------

#[test]
fn hard_links_are_refused() {
    let env = Env::setup();
    let canary = env.abs("outside/canary");
    let env = env.write_catalog(vec![Spec::files(
        "Hard link",
        Tar::new()
            .raw("opt/app/inside", EntryType::Link, 0o644, "opt/app/ok", b"")
            .raw("opt/app/canary", EntryType::Link, 0o644, &canary, b""),
    )]);
    env.assert_refused(
        "Hard link",
        Some("payload entry opt/app/inside: hard links are not allowed"),
        &[],
    );
    // The relative and absolute forms alike.
    let env = one("Hard link out", |t| {
        t.raw(
            "opt/app/canary",
            EntryType::Link,
            0o644,
            "../outside/canary",
            b"",
        )
    });
    env.assert_refused("Hard link out", Some("hard links are not allowed"), &[]);
}

// 5. Devices, FIFOs and other entry types -----------------------------------------------------

#[test]
fn character_devices_are_refused() {
    let env = one("Char device", |t| {
        t.raw("dev/mem", EntryType::Char, 0o666, "", b"")
    });
    env.assert_refused(
        "Char device",
        Some("payload entry dev/mem: character devices are not allowed"),
        &[],
    );
}

#[test]
fn block_devices_are_refused() {
    let env = one("Block device", |t| {
        t.raw("dev/sda", EntryType::Block, 0o660, "", b"")
    });
    env.assert_refused(
        "Block device",
        Some("payload entry dev/sda: block devices are not allowed"),
        &[],
    );
}

#[test]
fn fifos_are_refused() {
    let env = one("FIFO", |t| {
        t.raw("run/pipe", EntryType::Fifo, 0o644, "", b"")
    });
    env.assert_refused(
        "FIFO",
        Some("payload entry run/pipe: FIFOs are not allowed"),
        &[],
    );
}

#[test]
fn other_entry_types_are_refused() {
    let env = one("Contiguous", |t| {
        t.raw("opt/app/c", EntryType::Continuous, 0o644, "", b"c")
    });
    env.assert_refused("Contiguous", Some("are not allowed"), &[]);
    let env = one("Global pax", |t| {
        let record = pax_record("comment=hello");
        t.raw(
            "pax_global_header",
            EntryType::XGlobalHeader,
            0o644,
            "",
            record.as_bytes(),
        )
    });
    env.assert_refused(
        "Global pax",
        Some("pax global headers are not allowed"),
        &[],
    );
}

#[test]
fn a_pax_long_path_installs() {
    let long = format!("opt/app/{}/file", "d".repeat(150));
    let link_target = format!("{}/file", "d".repeat(150));
    let env = Env::new(vec![Spec::files(
        "Pax",
        Tar::new()
            .pax(&[&format!("path={long}"), "mtime=0"])
            .file("placeholder", "pax\n", 0o640)
            .pax(&["path=opt/app/link", &format!("linkpath={link_target}")])
            .symlink("placeholder-link", "placeholder"),
    )]);
    env.verify("Pax").unwrap();
    let result = env.install("Pax");
    assert_eq!(
        result.result_code,
        OperationResultCode::Succeeded,
        "{result:?}"
    );
    let root = env.root();
    assert_eq!(fs::read_to_string(root.join(&long)).unwrap(), "pax\n");
    assert_eq!(
        fs::metadata(root.join(&long)).unwrap().permissions().mode() & 0o7777,
        0o640
    );
    assert_eq!(
        fs::read_link(root.join("opt/app/link")).unwrap(),
        PathBuf::from(&link_target)
    );
    assert_eq!(
        fs::read_to_string(root.join("opt/app/link")).unwrap(),
        "pax\n"
    );
    assert!(!root.join("placeholder").exists());
    assert!(!root.join("placeholder-link").exists());
}

#[test]
fn special_files_from_an_install_command_are_refused() {
    // Planning reads every installed file; a FIFO would block that read for ever.
    let script = r#"mkdir -p "$DESTDIR/run"
mkfifo "$DESTDIR/run/pipe""#;
    let env = Env::new(vec![Spec::command("Command FIFO", script)]);
    env.assert_failed_cleanly("Command FIFO", WU_E_UH_INSTALLERFAILURE, None, &[]);
}

// 6. Setuid and setgid ----------------------------------------------------------------------

#[test]
fn setuid_without_permission_is_refused() {
    let env = one("Setuid", |t| t.file("usr/bin/su2", "#!/bin/sh\n", 0o4755));
    env.assert_refused(
        "Setuid",
        Some(
            "payload entry usr/bin/su2: mode 4755 has the setuid bit, which the update's metadata does not allow (\"allow_setid\")",
        ),
        &[],
    );
}

#[test]
fn setgid_without_permission_is_refused() {
    let env = one("Setgid", |t| t.file("usr/bin/mail2", "#!/bin/sh\n", 0o2755));
    env.assert_refused(
        "Setgid",
        Some("payload entry usr/bin/mail2: mode 2755 has the setgid bit"),
        &[],
    );
    let env = one("Setgid dir", |t| t.dir("opt/app/shared", 0o2775));
    env.assert_refused(
        "Setgid dir",
        Some("payload entry opt/app/shared: mode 2775 has the setgid bit"),
        &[],
    );
}

#[test]
fn setid_from_an_install_command_without_permission_is_refused() {
    let script = r#"mkdir -p "$DESTDIR/usr/local/bin"
printf 'tool\n' > "$DESTDIR/usr/local/bin/tool"
chmod 4755 "$DESTDIR/usr/local/bin/tool""#;
    let env = Env::new(vec![Spec::command("Command setuid", script)]);
    // The payload itself is fine; what the command writes is not.
    env.assert_refused("Command setuid", None, &[]);
    env.verify("Command setuid").unwrap();
}

#[test]
fn setid_with_allow_setid_installs_and_keeps_the_bits() {
    let script = r#"mkdir -p "$DESTDIR/usr/local/bin"
printf 'tool\n' > "$DESTDIR/usr/local/bin/tool"
chmod 4750 "$DESTDIR/usr/local/bin/tool""#;
    let env = Env::new(vec![
        Spec::files(
            "Allowed",
            Tar::new()
                .file("usr/bin/su2", "#!/bin/sh\necho su\n", 0o4755)
                .file("usr/bin/mail2", "#!/bin/sh\necho mail\n", 0o2755)
                .dir("opt/app/shared", 0o2775)
                .dir("opt/app/tmp", 0o1777),
        )
        .allow_setid(),
        Spec::command("Command allowed", script).allow_setid(),
    ]);
    env.verify("Allowed").unwrap();
    let result = env.install("Allowed");
    assert_eq!(
        result.result_code,
        OperationResultCode::Succeeded,
        "{result:?}"
    );
    let mode = |rel: &str| {
        fs::symlink_metadata(env.root().join(rel))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_ne!(mode("usr/bin/su2") & 0o4000, 0);
    assert_eq!(mode("usr/bin/su2"), 0o4755);
    assert_eq!(mode("usr/bin/mail2"), 0o2755);
    assert_eq!(mode("opt/app/shared"), 0o2775);
    assert_eq!(mode("opt/app/tmp"), 0o1777);
    assert_eq!(
        fs::read_to_string(env.root().join("usr/bin/su2")).unwrap(),
        "#!/bin/sh\necho su\n"
    );

    let result = env.install("Command allowed");
    assert_eq!(
        result.result_code,
        OperationResultCode::Succeeded,
        "{result:?}"
    );
    assert_eq!(mode("usr/local/bin/tool"), 0o4750);
    assert_eq!(
        env.session().installed_updates().unwrap().len(),
        2,
        "both recorded"
    );
}

// 7. Expansion beyond the declared size ---------------------------------------------------------

#[test]
fn files_larger_than_declared_are_refused() {
    let (payload, _) = Tar::new()
        .file("opt/app/big", &"x".repeat(100), 0o644)
        .finish();
    let env = Env::new(vec![Spec {
        title: "Too big".into(),
        payload,
        installed_size: 10,
        handler: json!({"kind": "files"}),
        allow_setid: false,
    }]);
    env.assert_refused(
        "Too big",
        Some(
            "payload entry opt/app/big: the payload expands beyond its declared installed size of 10 bytes",
        ),
        &[],
    );
}

#[test]
fn padding_beyond_the_declared_size_is_refused() {
    // A directory entry whose size field claims 16 MiB: zeros that compress to almost nothing,
    // and no file bytes to count.
    let env = Env::new(vec![Spec::files(
        "Padding",
        Tar::new().padded("opt/app/pad", EntryType::Directory, 16 << 20),
    )]);
    env.assert_refused(
        "Padding",
        Some("the archive expands beyond its declared size after entry opt/app/pad:"),
        &[],
    );
}

#[test]
fn headers_beyond_the_declared_size_are_refused() {
    // Extension headers (read before the entry they describe is handed out) of 4 MiB: a pax
    // header, then a GNU long name.
    let env = Env::new(vec![Spec::files(
        "Pax padding",
        Tar::new()
            .pax(&[&format!("comment={}", "x".repeat(4 << 20))])
            .file("opt/app/after", "a\n", 0o644),
    )]);
    env.assert_refused(
        "Pax padding",
        Some("the archive expands beyond its declared size after entry opt/app/ok:"),
        &[],
    );
    let env = Env::new(vec![
        Spec::files(
            "Long name padding",
            Tar::new().raw(
                "././@LongLink",
                EntryType::GNULongName,
                0o644,
                "",
                &vec![b'n'; 4 << 20],
            ),
        )
        .installed_size(3),
    ]);
    env.assert_refused(
        "Long name padding",
        Some("the archive expands beyond its declared size"),
        &[],
    );
}

#[test]
fn a_payload_file_that_never_ends_is_read_no_further_than_its_size() {
    let env = one("Endless", |t| t);
    let session = env.session();
    let catalog = session.catalog().unwrap();
    let path = catalog.payload_path(&catalog.find(env.ids["Endless"]).unwrap().payload);
    fs::remove_file(&path).unwrap();
    symlink("/dev/zero", &path).unwrap();
    env.assert_failed_cleanly("Endless", WU_E_UH_NEEDANOTHERDOWNLOAD, None, &[]);
}

#[test]
fn repeated_empty_entries_are_refused() {
    // The archive root, ten thousand times: identical headers that compress to almost nothing
    // and name nothing new.
    let mut tar = Tar::empty();
    for _ in 0..10_000 {
        tar = tar.dir("./", 0o755);
    }
    let env = Env::new(vec![Spec::files("Empty entries", tar).installed_size(0)]);
    env.assert_refused("Empty entries", Some("the path appears twice"), &[]);
}

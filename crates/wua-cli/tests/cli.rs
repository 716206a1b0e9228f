//! End-to-end tests of the `wua` binary: the bundled example catalog installed into a temporary
//! root, exact restoration on uninstall, exit codes, JSON output, cross-process busy, Ctrl-C.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use assert_cmd::cargo::CommandCargoExt;
use serde_json::Value;

use common::{Agent, Output, example_catalog, repo};

/// Everything under `root` (but the staging folder, which must not exist): kind, mode and
/// content or link target.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    fn go(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let meta = fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.file_type().is_symlink() {
                out.insert(
                    rel,
                    format!("symlink -> {}", fs::read_link(&path).unwrap().display()),
                );
            } else if meta.is_dir() {
                out.insert(rel, format!("dir {mode:o}"));
                go(base, &path, out);
            } else {
                let content = fs::read(&path).unwrap();
                out.insert(
                    rel,
                    format!("file {mode:o} {}", String::from_utf8_lossy(&content)),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    go(root, root, &mut out);
    out
}

fn update_results(report: &Value) -> BTreeMap<String, String> {
    report["updates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["title"].as_str().unwrap().to_string(),
                u["result_code"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn example_catalog_installs_and_uninstalls_exactly() {
    let agent = Agent::new(example_catalog());
    // A file the configuration update replaces, with its own content and mode, and a symlink
    // where the hello readme link goes: both must come back exactly.
    let root = agent.root();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/hello.conf"), "original=1\n").unwrap();
    fs::set_permissions(
        root.join("etc/hello.conf"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    fs::create_dir_all(root.join("usr/local/bin")).unwrap();
    std::os::unix::fs::symlink("/nowhere", root.join("usr/local/bin/hello-readme")).unwrap();
    let before = snapshot(&root);

    let (code, report) = agent.json(&["install", "--all", "--accept-eula"]);
    assert_eq!(
        code, 2,
        "one update fails: succeeded with errors\n{report:#}"
    );
    assert_eq!(report["schema_version"], 1);
    assert_eq!(report["operation"], "installation");
    assert_eq!(report["result_code"], "succeeded_with_errors");
    assert_eq!(report["reboot_required"], true);
    let results = update_results(&report);
    assert_eq!(results.len(), 8);
    assert_eq!(results["Monitoring agent 0.9 (fails to install)"], "failed");
    assert_eq!(
        results.values().filter(|r| *r == "succeeded").count(),
        7,
        "{results:?}"
    );
    let failed = report["updates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["result_code"] == "failed")
        .unwrap();
    assert_eq!(failed["hresult"]["name"], "WU_E_UH_INSTALLERFAILURE");
    // The exclusive firmware ran in a job of its own, first.
    assert_eq!(
        report["updates"][0]["title"],
        "Demo controller firmware 3.2"
    );
    // --all is WUA's default search: the superseded Hello Tools 0.9, the Demo OS 2 migration
    // (does not apply) and the Hello extras bundle (applies only once Hello Tools is installed)
    // were not part of it, and the bundle applies now.
    assert!(!results.contains_key("Hello Tools 0.9"), "{results:?}");
    assert!(!results.contains_key("Demo OS 2 settings migration"));
    assert_eq!(
        report["became_applicable"][0]["title"], "Hello extras (optional bundle)",
        "{report:#}"
    );
    assert_eq!(report["became_applicable"].as_array().unwrap().len(), 1);

    let after = snapshot(&root);
    assert_eq!(
        after["etc/hello.conf"],
        "file 644 greeting=hello, updated\n"
    );
    assert_eq!(
        after["usr/local/bin/hello-readme"],
        "symlink -> ../share/doc/hello/README"
    );
    assert!(after["usr/local/bin/hello"].starts_with("file 755 #!/bin/sh"));
    assert_eq!(after["usr/local/lib/toolkit/VERSION"], "file 644 2.1\n");
    assert!(after["etc/toolkit/toolkit.conf"].contains("version=2.1"));
    assert_eq!(
        after["boot/vmlinuz-demo"],
        "file 644 demo kernel image 6.1.0-wua1\n"
    );
    assert!(after.contains_key("usr/local/share/fonts/demo-sans.font"));
    assert!(after.contains_key("lib/firmware/demo-controller.bin"));
    assert!(
        !after.keys().any(|k| k.starts_with("opt")),
        "the failed update left files: {after:?}"
    );
    assert!(!after.keys().any(|k| k.starts_with(".wua-staging")));

    // The kernel update's restart is pending and mandatory: uninstall is refused until then.
    let (code, status) = agent.json(&["status"]);
    assert_eq!(code, 0);
    assert_eq!(status["reboot_required"], true);
    assert_eq!(status["reboot_required_before_installation"], true);
    let out = agent.run(&["uninstall", "--all"]);
    assert_eq!(out.code, 5, "{out:?}");
    assert!(out.stderr.contains("restart the machine"), "{out:?}");
    assert_eq!(
        snapshot(&root),
        after,
        "a refused uninstall changed the root"
    );

    agent.reboot(2);
    let (code, report) = agent.json(&["uninstall", "--all"]);
    assert_eq!(
        code, 3,
        "the kernel's uninstall needs a restart too\n{report:#}"
    );
    assert_eq!(report["skipped"][0]["title"], "Security baseline 2026-11");
    assert_eq!(update_results(&report).len(), 6);
    assert!(update_results(&report).values().all(|r| r == "succeeded"));

    // Everything is as before, but the permanent security baseline.
    let mut expected = before.clone();
    expected.insert("etc/security".into(), "dir 755".into());
    expected.insert(
        "etc/security/baseline.conf".into(),
        "file 644 password_min_length=14\nlockout_threshold=5\n".into(),
    );
    assert_eq!(snapshot(&root), expected);
}

#[test]
fn plain_output_numbers_updates_and_summarises() {
    let agent = Agent::new(example_catalog());
    let out = agent.run(&["install", "KB5000001", "kb5000002"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("Installing 2 updates in"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("[1/2] Installing Hello Tools 1.0…"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("[2/2] Hello Tools configuration update: Succeeded"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("Result: Succeeded (2 succeeded)"),
        "{}",
        out.stdout
    );
    // Installing Hello Tools made the Hello extras bundle applicable: said, with the command.
    assert!(
        out.stdout
            .contains("1 update applies now that did not before:"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("Install it with: wua install KB5000011"),
        "{}",
        out.stdout
    );
    // Installing again is a no-op, said so.
    let out = agent.run(&["install", "--all"]);
    assert!(out.stderr.contains("licence terms not accepted"), "{out:?}");
    let out = agent.run(&["install", "3f1c9a52-7d1e-4b8e-9a0f-1e"]);
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("Nothing to install."), "{out:?}");
    assert!(out.stderr.contains("already installed"), "{out:?}");
}

#[test]
fn bad_input_exits_64_with_a_clear_message() {
    let agent = Agent::new(example_catalog());
    let out = agent.run(&["install", "KB999"]);
    assert_eq!(out.code, 64, "{out:?}");
    assert!(
        out.stderr
            .contains("no catalog update has KB article KB999"),
        "{out:?}"
    );
    let out = agent.run(&["install", "zz"]);
    assert_eq!(out.code, 64);
    assert!(out.stderr.contains("neither an update id"), "{out:?}");
    let out = agent.run(&["install"]);
    assert_eq!(out.code, 64);
    assert!(out.stderr.contains("or pass --all"), "{out:?}");
    // Hello Tools 1.0 and 0.9 share this prefix.
    let out = agent.run(&["install", "3f1c"]);
    assert_eq!(out.code, 64, "{out:?}");
    assert!(out.stderr.contains("3f1c matches 2 updates"), "{out:?}");
    let out = agent.run(&["install", "--no-such-flag"]);
    assert_eq!(out.code, 64);
    let out = agent.run(&["uninstall", "KB5000001"]);
    assert_eq!(out.code, 64, "not installed: {out:?}");
    assert!(
        out.stderr.contains("no installed update has KB article"),
        "{out:?}"
    );
    // A directory that is not a catalog.
    let empty = tempfile::tempdir().unwrap();
    let mut c = Agent::new(empty.path().to_path_buf());
    c.catalog = empty.path().to_path_buf();
    let (code, err) = c.json(&["list"]);
    assert_eq!(code, 64);
    assert_eq!(err["error"]["hresult"]["name"], "WU_E_INVALID_FILE");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("catalog.json")
    );
}

#[test]
fn licence_terms_must_be_accepted_and_acceptance_persists() {
    let agent = Agent::new(example_catalog());
    let out = agent.run(&["install", "KB5000005"]);
    assert_eq!(out.code, 64, "{out:?}");
    assert!(out.stderr.contains("WU_E_EULAS_DECLINED"), "{out:?}");
    assert!(!agent.root().join("usr/local/share/fonts").exists());
    let out = agent.run(&["install", "KB5000005", "--accept-eula"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("DEMO SANS LICENCE"),
        "the terms are shown: {out:?}"
    );
    let (_, list) = agent.json(&["list"]);
    let font = list["updates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["title"] == "Demo Sans font")
        .unwrap();
    assert_eq!(font["eula_accepted"], true);
    assert_eq!(font["is_installed"], true);
}

#[test]
fn the_became_applicable_note_says_to_restart_first_when_a_restart_is_pending() {
    let agent = Agent::new(example_catalog());
    // The kernel refresh leaves a mandatory restart pending, which would refuse the next
    // install: the note says so instead of offering a command that fails.
    let out = agent.run(&["install", "KB5000001", "KB5000004"]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stdout
            .contains("After the restart, install it with: wua install KB5000011"),
        "{}",
        out.stdout
    );
    agent.reboot(2);
    let out = agent.run(&["install", "KB5000011"]);
    assert_eq!(out.code, 0, "{out:?}");
}

#[test]
fn history_records_installs_failures_and_uninstalls() {
    let agent = Agent::new(example_catalog());
    agent.run(&["install", "KB5000001", "KB5000006"]);
    agent.run(&["uninstall", "KB5000001"]);
    let (code, history) = agent.json(&["history"]);
    assert_eq!(code, 0);
    assert_eq!(history["total"], 3);
    let entries = history["entries"].as_array().unwrap();
    let summary: Vec<(String, String, String)> = entries
        .iter()
        .map(|e| {
            (
                e["operation"].as_str().unwrap().to_string(),
                e["result_code"].as_str().unwrap().to_string(),
                e["title"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "uninstallation".into(),
                "succeeded".into(),
                "Hello Tools 1.0".into()
            ),
            (
                "installation".into(),
                "failed".into(),
                "Monitoring agent 0.9 (fails to install)".into()
            ),
            (
                "installation".into(),
                "succeeded".into(),
                "Hello Tools 1.0".into()
            ),
        ]
    );
    assert_eq!(entries[1]["hresult"]["name"], "WU_E_UH_INSTALLERFAILURE");
    assert_eq!(
        entries[1]["unmapped_result_code"], 1,
        "the script's exit status"
    );
    assert_eq!(entries[0]["client_application_id"], "wua-cli");
    assert_eq!(
        entries[2]["uninstallation_steps"][0],
        "wua uninstall KB5000001"
    );
    let (_, page) = agent.json(&["history", "--start", "1", "--count", "1"]);
    assert_eq!(page["entries"].as_array().unwrap().len(), 1);
    assert_eq!(page["entries"][0]["result_code"], "failed");
    let out = agent.run(&["history", "--start", "-1"]);
    assert_eq!(out.code, 64, "{out:?}");
    assert!(out.stderr.contains("WU_E_INVALIDINDEX"));
}

/// A catalog with one update whose install command waits for `release` to exist (checked by the
/// script itself, up to 60 s), so a test can hold an install open without any timing.
fn blocking_catalog(dir: &Path, release: &Path) -> PathBuf {
    let src = dir.join("src/01-blocker");
    fs::create_dir_all(src.join("payload")).unwrap();
    fs::write(
        src.join("update.json"),
        r#"{"identity":{"update_id":"11111111-2222-4333-8444-555555555555","revision_number":1},
            "title":"Blocker","handler":{"kind":"command",
            "install":{"program":"wait.sh","timeout_secs":120}}}"#,
    )
    .unwrap();
    fs::write(
        src.join("payload/wait.sh"),
        format!(
            "#!/bin/sh\nfor i in $(seq 6000); do [ -e '{}' ] && break; sleep 0.01; done\nmkdir -p \"$DESTDIR/etc\"; echo done > \"$DESTDIR/etc/blocker\"\n",
            release.display()
        ),
    )
    .unwrap();
    fs::set_permissions(
        src.join("payload/wait.sh"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let out = dir.join("catalog");
    wua::catalog::build(&dir.join("src"), &out).unwrap();
    out
}

fn wait_until_busy(agent: &Agent, child: &mut Child) {
    for _ in 0..3000 {
        let (_, status) = agent.json(&["status"]);
        if status["is_busy"] == true {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut err =
                fs::read_to_string(agent.dir.path().join("first.log")).unwrap_or_default();
            err.push_str(
                &fs::read_to_string(agent.dir.path().join("first.out")).unwrap_or_default(),
            );
            err.push_str(&agent.run(&["history"]).stdout);
            panic!("the install ended ({status}) before it was seen busy: {err}");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("the install never became busy");
}

#[test]
fn an_install_in_another_process_makes_the_agent_busy() {
    let fixtures = tempfile::tempdir().unwrap();
    let release = fixtures.path().join("release");
    let agent = Agent::new(blocking_catalog(fixtures.path(), &release));
    let mut first = agent.cmd().args(["install", "--all"]).spawn().unwrap();
    wait_until_busy(&agent, &mut first);

    // The CLI in a third process is refused with the documented code…
    let out = agent.run(&["install", "--all", "--force"]);
    assert_eq!(out.code, 5, "{out:?}");
    assert!(out.stderr.contains("WU_E_INSTALL_NOT_ALLOWED"), "{out:?}");
    // …and so is the library in this one.
    let mut config = wua::AgentConfig::new(agent.root(), agent.state(), &agent.catalog);
    config.boot_id_file = Some(agent.dir.path().join("boot_id"));
    let session = wua::UpdateSession::open(config).unwrap();
    let mut installer = session.create_update_installer();
    assert!(installer.is_busy());
    installer.set_updates(&session.catalog_updates().unwrap().copy());
    installer.set_is_forced(true);
    let err = installer.install().unwrap_err();
    assert_eq!(err.hresult(), wua::install::BUSY);

    fs::write(&release, "").unwrap();
    assert!(first.wait().unwrap().success());
    assert!(!installer.is_busy());
    assert_eq!(
        fs::read_to_string(agent.root().join("etc/blocker")).unwrap(),
        "done\n"
    );
}

#[test]
fn ctrl_c_aborts_and_rolls_back() {
    let fixtures = tempfile::tempdir().unwrap();
    let release = fixtures.path().join("never");
    let agent = Agent::new(blocking_catalog(fixtures.path(), &release));
    let mut child = agent
        .cmd()
        .args(["--json", "install", "--all"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_busy(&agent, &mut child);
    // SAFETY: sending SIGINT to our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(4), "aborted");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["result_code"], "aborted");
    assert_eq!(report["hresult"]["name"], "WU_E_CALL_CANCELLED");
    assert_eq!(
        report["updates"][0]["hresult"]["name"],
        "WU_E_UH_OPERATIONCANCELLED"
    );
    assert!(
        snapshot(&agent.root()).is_empty(),
        "root changed: {:?}",
        snapshot(&agent.root())
    );
    let (_, history) = agent.json(&["history"]);
    assert_eq!(history["entries"][0]["result_code"], "aborted");
}

#[test]
fn example_catalog_is_up_to_date_and_verifies() {
    let out_dir = tempfile::tempdir().unwrap();
    let agent = Agent::new(example_catalog());
    let out = agent.run(&[
        "catalog",
        "build",
        repo().join("examples/catalog-src").to_str().unwrap(),
        out_dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let rebuilt = fs::read(out_dir.path().join("catalog.json")).unwrap();
    let committed = fs::read(example_catalog().join("catalog.json")).unwrap();
    assert!(
        rebuilt == committed,
        "examples/catalog is stale: run `cargo run -p wua --example build-catalog -- examples/catalog-src examples/catalog`"
    );
    let out = agent.run(&["catalog", "verify", example_catalog().to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("every payload verified"));
}

#[test]
fn the_bundled_catalog_is_the_default() {
    // No --catalog and no service: the embedded example repository is written to the cache
    // directory and registered as the demo's service.
    let agent = Agent::new(example_catalog());
    let cache = agent.dir.path().join("cache");
    let out = Command::cargo_bin("wua")
        .unwrap()
        .args(["--json", "list", "--root"])
        .arg(agent.root())
        .arg("--state-dir")
        .arg(agent.state())
        .env("HOME", agent.dir.path())
        .env("XDG_CACHE_HOME", &cache)
        .env_remove("WUA_CATALOG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["updates"].as_array().unwrap().len(), 13);
    if wua::session::current_uid() != 0 {
        assert!(
            cache
                .join("wua/example-repository/metadata/1.root.json")
                .is_file()
        );
    }
}

#[test]
fn completions_and_man_page_are_generated() {
    let agent = Agent::new(example_catalog());
    let out = agent.run(&["completions", "bash"]);
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("uninstall"));
    let out = agent.run(&["man"]);
    assert_eq!(out.code, 0);
    assert!(
        out.stdout.contains(".TH wua"),
        "{}",
        &out.stdout[..200.min(out.stdout.len())]
    );
}

/// A catalog with one `files` update that replaces `etc/big.conf` (and adds a file in a new
/// directory), for the fault tests below.
fn replacing_catalog(dir: &Path) -> PathBuf {
    let src = dir.join("src/01-replace");
    fs::create_dir_all(src.join("payload/etc")).unwrap();
    fs::create_dir_all(src.join("payload/usr/share/big")).unwrap();
    fs::write(
        src.join("update.json"),
        r#"{"identity":{"update_id":"22222222-3333-4444-8555-666666666666","revision_number":1},
            "title":"Replacer","handler":{"kind":"files"}}"#,
    )
    .unwrap();
    fs::write(src.join("payload/etc/big.conf"), "new\n").unwrap();
    fs::write(src.join("payload/usr/share/big/readme"), "readme\n").unwrap();
    let out = dir.join("catalog");
    wua::catalog::build(&dir.join("src"), &out).unwrap();
    out
}

/// A tmpfs mounted for the life of the value.
struct SmallFs(PathBuf);

impl SmallFs {
    /// Mounts a tmpfs of `size` at `dir`, where the system allows it (root, or a user with
    /// the capability); `None` otherwise.
    fn mount(dir: &Path, size: &str) -> Option<SmallFs> {
        fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallFs(dir.to_path_buf()))
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_midway_rolls_back_and_names_the_path() {
    let fixtures = tempfile::tempdir().unwrap();
    let mut agent = Agent::new(replacing_catalog(fixtures.path()));
    // The file the update replaces is larger than the state directory's file system, so moving
    // it to the backups (a copy, across file systems) runs out of space midway through the
    // transaction. Without the right to mount, the same failure is injected at that point.
    fs::create_dir_all(agent.root().join("etc")).unwrap();
    fs::write(
        agent.root().join("etc/big.conf"),
        vec![b'x'; 3 * 1024 * 1024],
    )
    .unwrap();
    let before = snapshot(&agent.root());
    let small_state = agent.dir.path().join("small-state");
    let mount = SmallFs::mount(&small_state, "1m");
    let out = match &mount {
        Some(_) => {
            agent.state_override = Some(small_state.clone());
            agent.run(&["install", "--all"])
        }
        None => {
            let out = agent
                .cmd()
                .args(["install", "--all"])
                .env(wua::checkpoint::FAIL_AT, "install:applying")
                .output()
                .unwrap();
            Output {
                code: out.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        }
    };
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("No space left on device"), "{out:?}");
    if mount.is_some() {
        assert!(
            out.stderr
                .contains(&small_state.join("backups").display().to_string()),
            "the error names the path: {out:?}"
        );
    }
    assert_eq!(snapshot(&agent.root()), before, "the root changed");
    let (_, history) = agent.json(&["history"]);
    assert_eq!(
        history["entries"][0]["result_code"], "failed",
        "{history:#}\n{out:?}"
    );
    assert_eq!(
        history["entries"][0]["hresult"]["name"],
        "WU_E_UH_INSTALLERFAILURE"
    );
    drop(mount);
}

#[test]
fn a_permission_error_midway_rolls_back_and_names_the_path() {
    use std::os::unix::process::CommandExt;
    let fixtures = tempfile::tempdir().unwrap();
    let agent = Agent::new(replacing_catalog(fixtures.path()));
    let root = agent.root();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/big.conf"), "old\n").unwrap();
    // usr/ is writable, etc/ is not: the new directory under usr/ is created, then replacing
    // etc/big.conf fails and everything is undone.
    fs::create_dir_all(root.join("usr")).unwrap();
    let mut cmd = agent.cmd();
    cmd.args(["install", "--all"]);
    let as_root = wua::session::current_uid() == 0;
    if as_root {
        // Root may write anywhere: run wua as "nobody", owning everything but etc/.
        let nobody = 65534;
        for p in [
            agent.dir.path().to_path_buf(),
            root.clone(),
            root.join("usr"),
        ] {
            std::os::unix::fs::chown(&p, Some(nobody), Some(nobody)).unwrap();
        }
        // The catalog stays root's, readable by all.
        fs::set_permissions(fixtures.path(), fs::Permissions::from_mode(0o755)).unwrap();
        cmd.uid(nobody).gid(nobody);
    } else {
        fs::set_permissions(root.join("etc"), fs::Permissions::from_mode(0o555)).unwrap();
    }
    let before = snapshot(&root);
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Permission denied"), "{stderr}");
    assert!(
        stderr.contains("etc/big.conf"),
        "the error names the path: {stderr}"
    );
    if !as_root {
        fs::set_permissions(root.join("etc"), fs::Permissions::from_mode(0o755)).unwrap();
    }
    assert_eq!(snapshot(&root), before, "the root changed");
}

#[test]
fn a_state_directory_on_another_file_system_keeps_backups_across_devices() {
    // Backups go to the state directory; on another file system (tmpfs in /dev/shm) every
    // backup and restore is a copy, which must be as exact and as undoable as a rename.
    let shm = Path::new("/dev/shm");
    let fixtures = tempfile::tempdir().unwrap();
    let mut agent = Agent::new(replacing_catalog(fixtures.path()));
    let state = tempfile::tempdir_in(shm).unwrap();
    let same_device = |a: &Path, b: &Path| {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(a).unwrap().dev() == fs::metadata(b).unwrap().dev()
    };
    assert!(
        !same_device(state.path(), &agent.root()),
        "/dev/shm must be another file system than the temporary directory for this test"
    );
    agent.state_override = Some(state.path().to_path_buf());
    fs::create_dir_all(agent.root().join("etc")).unwrap();
    fs::write(agent.root().join("etc/big.conf"), "original\n").unwrap();
    fs::set_permissions(
        agent.root().join("etc/big.conf"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let before = snapshot(&agent.root());
    let out = agent.run(&["install", "--all"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        fs::read_to_string(agent.root().join("etc/big.conf")).unwrap(),
        "new\n"
    );
    let backup = state
        .path()
        .join("backups/22222222-3333-4444-8555-666666666666/etc/big.conf");
    assert_eq!(fs::read_to_string(&backup).unwrap(), "original\n");
    let out = agent.run(&["uninstall", "--all"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(snapshot(&agent.root()), before, "not restored exactly");
    assert!(!backup.exists());
}

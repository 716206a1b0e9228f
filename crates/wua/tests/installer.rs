//! End-to-end tests of `UpdateInstaller` and `InstallationJob` against the real library: each
//! test builds its own catalog with `wua::catalog::build`, installs into a temporary root with a
//! temporary state directory, and checks results, the root's contents and the history.
//!
//! Nothing here measures time. Where a test must catch a job mid-flight it uses a command
//! update whose script signals that it started (a marker file) and then waits for a release
//! marker the test controls; the test waits for markers with a bounded number of checks.

mod common;

use std::fmt::Debug;
use std::fs;
use std::future::Future;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, mpsc};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

use common::{Fixture, UpdateSpec, blocking_script, cmd, read, wait_for, with};
use serde_json::json;
use wua::hresult::*;
use wua::{
    CleanUp, InstallationCompletedCallbackArgs as Completed, InstallationJob,
    InstallationProgressChangedCallbackArgs as Progress, NoCallback, OperationResultCode,
    UpdateCollection, UpdateInstallationResult, UpdateOperation,
};

use OperationResultCode::{
    Aborted, Failed, InProgress, NotStarted, Succeeded, SucceededWithErrors,
};

/// The HRESULT of a call that must fail.
fn code<T: Debug>(result: wua::Result<T>) -> HResult {
    result.expect_err("the call must fail").hresult()
}

/// A shared log that callbacks append to.
type Log<T> = Arc<Mutex<Vec<T>>>;

fn log<T>() -> Log<T> {
    Arc::new(Mutex::new(Vec::new()))
}

fn entries<T: Clone>(log: &Log<T>) -> Vec<T> {
    log.lock().unwrap().clone()
}

/// A command update that blocks (see [`blocking_script`]) until `release` exists, after
/// touching `started`.
fn blocking_update(fx: &Fixture, title: &str, started: &str, release: &str) -> UpdateSpec {
    let (started, release) = (fx.scratch(started), fx.scratch(release));
    UpdateSpec::command(
        title,
        cmd(
            "block.sh",
            &[started.to_str().unwrap(), release.to_str().unwrap()],
        ),
    )
    .script("block.sh", &blocking_script(title))
}

// 1 ------------------------------------------------------------------------------------------

#[test]
fn every_callback_sees_the_async_state_of_its_own_job() {
    let env_a = Fixture::new()
        .files_update("A", &[("etc/a", "a\n")])
        .build();
    let env_b = Fixture::new()
        .files_update("B", &[("etc/b", "b\n")])
        .build();
    let (session_a, session_b) = (env_a.session(), env_b.session());
    let installer_a = env_a.installer(&session_a, &["A"]);
    let installer_b = env_b.installer(&session_b, &["B"]);

    // Each log records what its job's callbacks saw as `async_state`.
    let seen_a: Log<String> = log();
    let seen_b: Log<String> = log();
    let job_a = installer_a
        .begin_install(
            {
                let seen = seen_a.clone();
                move |job: &InstallationJob<&'static str>, _: &Progress| {
                    seen.lock()
                        .unwrap()
                        .push(format!("progress {}", job.async_state()))
                }
            },
            {
                let seen = seen_a.clone();
                move |job: &InstallationJob<&'static str>, _: &Completed| {
                    seen.lock()
                        .unwrap()
                        .push(format!("completed {}", job.async_state()))
                }
            },
            "job-A",
        )
        .unwrap();
    let job_b = installer_b
        .begin_install(
            {
                let seen = seen_b.clone();
                move |job: &InstallationJob<u32>, _: &Progress| {
                    seen.lock()
                        .unwrap()
                        .push(format!("progress {}", job.async_state()))
                }
            },
            {
                let seen = seen_b.clone();
                move |job: &InstallationJob<u32>, _: &Completed| {
                    seen.lock()
                        .unwrap()
                        .push(format!("completed {}", job.async_state()))
                }
            },
            42u32,
        )
        .unwrap();
    assert_eq!(*job_a.async_state(), "job-A");
    assert_eq!(*job_b.async_state(), 42);

    assert_eq!(
        installer_a.end_install(&job_a).unwrap().result_code,
        Succeeded
    );
    assert_eq!(
        installer_b.end_install(&job_b).unwrap().result_code,
        Succeeded
    );
    // clean_up waits until every callback has been delivered.
    assert_eq!(job_a.clean_up(), CleanUp::Released);
    assert_eq!(job_b.clean_up(), CleanUp::Released);

    for (seen, state) in [(entries(&seen_a), "job-A"), (entries(&seen_b), "42")] {
        let (last, progress) = seen.split_last().expect("callbacks ran");
        assert_eq!(last, &format!("completed {state}"), "{seen:?}");
        assert!(!progress.is_empty(), "no progress callback: {seen:?}");
        assert!(
            progress.iter().all(|s| *s == format!("progress {state}")),
            "{seen:?}"
        );
    }
    // The state survives the job's end (it lives as long as the job).
    assert_eq!(*job_a.async_state(), "job-A");
}

// 2 ------------------------------------------------------------------------------------------

#[test]
fn no_updates_or_an_empty_collection_is_no_update() {
    let env = Fixture::new()
        .files_update("A", &[("etc/a", "a\n")])
        .build();
    let session = env.session();
    let mut installer = session.create_update_installer();
    // First with `updates` never set, then set to an empty collection.
    for round in ["unset", "empty"] {
        assert_eq!(code(installer.install()), WU_E_NO_UPDATE, "{round}");
        assert_eq!(code(installer.uninstall()), WU_E_NO_UPDATE, "{round}");
        assert_eq!(
            code(installer.begin_install(NoCallback, NoCallback, ())),
            WU_E_NO_UPDATE,
            "{round}"
        );
        assert_eq!(
            code(installer.begin_uninstall(NoCallback, NoCallback, ())),
            WU_E_NO_UPDATE,
            "{round}"
        );
        installer.set_updates(&UpdateCollection::new());
    }
    assert!(env.root_snapshot().is_empty());
    assert_eq!(session.get_total_history_count().unwrap(), 0);
}

// 3 ------------------------------------------------------------------------------------------

#[test]
fn a_running_install_makes_the_agent_busy_until_it_completes() {
    let fx = Fixture::new();
    let started = fx.scratch("started");
    let release = fx.scratch("release");
    let block = blocking_update(&fx, "Block", "started", "release");
    let env = fx
        .update(block)
        .files_update("Other", &[("etc/other", "o\n")])
        .build();
    let session = env.session();
    let first = env.installer(&session, &["Block"]);
    let second = env.installer(&session, &["Other"]);
    assert!(!first.is_busy());
    assert!(!second.is_busy());

    let job = first.begin_install(NoCallback, NoCallback, ()).unwrap();
    wait_for("the blocking command to start", || started.exists());
    assert!(first.is_busy());
    assert!(second.is_busy(), "IsBusy is agent-wide, not per installer");
    assert_eq!(wua::install::BUSY, WU_E_INSTALL_NOT_ALLOWED);
    assert_eq!(
        code(second.begin_install(NoCallback, NoCallback, ())),
        wua::install::BUSY
    );
    assert_eq!(code(second.install()), wua::install::BUSY);
    // Another session on the same state directory is refused too, uninstalls as well.
    let other_session = env.session();
    let third = env.installer(&other_session, &["Other"]);
    assert!(third.is_busy());
    assert_eq!(
        code(third.begin_uninstall(NoCallback, NoCallback, ())),
        wua::install::BUSY
    );
    assert!(!job.is_completed());

    fs::write(&release, "").unwrap();
    let result = first.end_install(&job).unwrap();
    assert_eq!(result.result_code, Succeeded);
    assert_eq!(
        read(&env.in_root("opt/Block/done")).as_deref(),
        Some("done\n")
    );
    assert!(!first.is_busy());
    assert!(!second.is_busy());
    // The refused calls left no trace, and the agent takes the next install at once.
    assert_eq!(session.get_total_history_count().unwrap(), 1);
    assert_eq!(second.install().unwrap().result_code, Succeeded);
}

// 4 ------------------------------------------------------------------------------------------

#[test]
fn end_install_misuse_is_invalid_operation() {
    let env = Fixture::new()
        .files_update("A", &[("etc/a", "a\n")])
        .build();
    let session = env.session();
    let installer = env.installer(&session, &["A"]);
    let other = env.installer(&session, &["A"]);

    let job = installer.begin_install(NoCallback, NoCallback, ()).unwrap();
    assert_eq!(code(other.end_install(&job)), WU_E_INVALID_OPERATION);
    assert_eq!(code(installer.end_uninstall(&job)), WU_E_INVALID_OPERATION);
    // The refused calls did not consume the job: the right call still gets the result, once.
    assert_eq!(installer.end_install(&job).unwrap().result_code, Succeeded);
    assert_eq!(code(installer.end_install(&job)), WU_E_INVALID_OPERATION);

    // The same rules for an uninstall job.
    let job = installer
        .begin_uninstall(NoCallback, NoCallback, ())
        .unwrap();
    assert_eq!(code(installer.end_install(&job)), WU_E_INVALID_OPERATION);
    assert_eq!(code(other.end_uninstall(&job)), WU_E_INVALID_OPERATION);
    assert_eq!(
        installer.end_uninstall(&job).unwrap().result_code,
        Succeeded
    );
    assert_eq!(code(installer.end_uninstall(&job)), WU_E_INVALID_OPERATION);
    assert!(!env.in_root("etc/a").exists());
}

// 5 ------------------------------------------------------------------------------------------

#[test]
fn request_abort_rolls_back_the_running_update_and_skips_the_rest() {
    let fx = Fixture::new();
    let started = fx.scratch("started");
    // "never" is never created: the command only ends by being killed.
    let block = blocking_update(&fx, "Blocker", "started", "never");
    let env = fx
        .update(block)
        .files_update("Later", &[("etc/later.conf", "later\n")])
        .build();
    let session = env.session();
    let installer = env.installer(&session, &["Blocker", "Later"]);

    let job = installer
        .begin_install(NoCallback, NoCallback, "abort me")
        .unwrap();
    wait_for("the blocking command to start", || started.exists());
    let progress = job.get_progress();
    assert_eq!(progress.current_update_index, 0);
    assert_eq!(progress.update_results[0].result_code, InProgress);
    assert_eq!(progress.update_results[1].result_code, NotStarted);
    job.request_abort();
    job.request_abort(); // idempotent

    let result = installer.end_install(&job).unwrap();
    assert_eq!(result.result_code, Aborted);
    assert_eq!(result.hresult, WU_E_CALL_CANCELLED);
    assert_eq!(result.update_results[0].result_code, Aborted);
    assert_eq!(result.update_results[0].hresult, WU_E_UH_OPERATIONCANCELLED);
    assert_eq!(
        result.update_results[1],
        UpdateInstallationResult {
            hresult: WU_E_CALL_CANCELLED,
            reboot_required: false,
            result_code: Aborted,
        }
    );
    // The root is as before: no installed file, no staging folder left behind.
    assert!(!env.in_root("etc/later.conf").exists());
    assert!(!env.in_root(".wua-staging").exists());
    assert!(env.root_snapshot().is_empty(), "{:?}", env.root_snapshot());
    assert!(session.installed_updates().unwrap().is_empty());
    // Only the update that was being processed has a history entry.
    let history = session.query_history(0, 10).unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].title, "Blocker");
    assert_eq!(history[0].operation, UpdateOperation::Installation);
    assert_eq!(history[0].result_code, Aborted);
    job.request_abort(); // harmless after completion
}

// 6 ------------------------------------------------------------------------------------------

#[test]
fn an_exclusive_update_must_be_installed_alone() {
    let env = Fixture::new()
        .update(
            UpdateSpec::files("Exclusive")
                .file("etc/exclusive", "x\n")
                .set(
                    "installation_behavior",
                    json!({ "impact": "requires_exclusive_handling" }),
                ),
        )
        .files_update("Normal", &[("etc/normal", "n\n")])
        .build();
    let session = env.session();
    for titles in [["Exclusive", "Normal"], ["Normal", "Exclusive"]] {
        let installer = env.installer(&session, &titles);
        assert_eq!(
            code(installer.begin_install(NoCallback, NoCallback, ())),
            WU_E_EXCLUSIVE_INSTALL_CONFLICT
        );
        assert_eq!(code(installer.install()), WU_E_EXCLUSIVE_INSTALL_CONFLICT);
    }
    // Refused synchronously: nothing installed, nothing recorded.
    assert!(env.root_snapshot().is_empty());
    assert_eq!(session.get_total_history_count().unwrap(), 0);

    let alone = env.installer(&session, &["Exclusive"]).install().unwrap();
    assert_eq!(alone.result_code, Succeeded);
    assert_eq!(read(&env.in_root("etc/exclusive")).as_deref(), Some("x\n"));
}

// 7 ------------------------------------------------------------------------------------------

#[test]
fn unaccepted_eula_fails_that_update_and_acceptance_persists() {
    let env = Fixture::new()
        .update(
            UpdateSpec::files("Licensed")
                .file("etc/licensed", "l\n")
                .set("eula_text", json!("You agree to everything.")),
        )
        .files_update("Free", &[("etc/free", "f\n")])
        .build();
    let session = env.session();

    let result = env
        .installer(&session, &["Licensed", "Free"])
        .install()
        .unwrap();
    assert_eq!(result.result_code, SucceededWithErrors);
    assert_eq!(result.hresult, WU_S_UPDATE_ERROR);
    assert_eq!(result.update_results[0].result_code, Failed);
    assert_eq!(result.update_results[0].hresult, WU_E_EULAS_DECLINED);
    assert_eq!(result.update_results[1].result_code, Succeeded);
    assert!(!env.in_root("etc/licensed").exists());
    assert!(env.in_root("etc/free").exists());

    // Alone, the whole call is refused.
    let alone = env.installer(&session, &["Licensed"]);
    assert_eq!(
        code(alone.begin_install(NoCallback, NoCallback, ())),
        WU_E_EULAS_DECLINED
    );
    assert_eq!(code(alone.install()), WU_E_EULAS_DECLINED);

    let licensed = env.updates(&session, &["Licensed"]);
    let update = licensed.get(0).unwrap();
    assert!(!update.eula_accepted());
    update.accept_eula().unwrap();
    assert!(update.eula_accepted());

    // Persisted: a new session reads the acceptance from the store.
    let fresh = env.session();
    assert!(
        env.updates(&fresh, &["Licensed"])
            .get(0)
            .unwrap()
            .eula_accepted()
    );
    let result = env.installer(&fresh, &["Licensed"]).install().unwrap();
    assert_eq!(result.result_code, Succeeded);
    assert_eq!(read(&env.in_root("etc/licensed")).as_deref(), Some("l\n"));
}

// 8 ------------------------------------------------------------------------------------------

#[test]
fn uninstalling_a_non_uninstallable_update_fails_and_keeps_its_files() {
    let env = Fixture::new()
        .update(
            UpdateSpec::files("Permanent")
                .file("etc/permanent", "p\n")
                .set("is_uninstallable", json!(false)),
        )
        .build();
    let session = env.session();
    let installer = env.installer(&session, &["Permanent"]);
    assert_eq!(installer.install().unwrap().result_code, Succeeded);

    let result = installer.uninstall().unwrap();
    assert_eq!(result.result_code, Failed);
    assert_eq!(result.hresult, WU_E_ALL_UPDATES_FAILED);
    assert_eq!(result.update_results[0].result_code, Failed);
    assert_eq!(result.update_results[0].hresult, WU_E_UNINSTALL_NOT_ALLOWED);
    assert_eq!(read(&env.in_root("etc/permanent")).as_deref(), Some("p\n"));
    assert_eq!(session.installed_updates().unwrap().len(), 1);
    let last = &session.query_history(0, 1).unwrap()[0];
    assert_eq!(last.operation, UpdateOperation::Uninstallation);
    assert_eq!(last.hresult, WU_E_UNINSTALL_NOT_ALLOWED);
}

// 9 ------------------------------------------------------------------------------------------

#[test]
fn a_mandatory_reboot_blocks_installs_until_the_boot_id_changes() {
    let env = Fixture::new()
        .update(UpdateSpec::files("Kernel").file("boot/kernel", "k\n").set(
            "installation_behavior",
            json!({ "reboot_behavior": "always_requires_reboot" }),
        ))
        .files_update("After", &[("etc/after", "a\n")])
        .build();
    let session = env.session();
    let kernel = env.installer(&session, &["Kernel"]);
    let after = env.installer(&session, &["After"]);
    assert!(!kernel.reboot_required_before_installation().unwrap());

    let result = kernel.install().unwrap();
    assert_eq!(result.result_code, Succeeded);
    assert!(result.reboot_required);
    assert!(result.update_results[0].reboot_required);
    assert!(session.system_information().reboot_required().unwrap());
    assert!(kernel.reboot_required_before_installation().unwrap());
    assert!(
        env.updates(&session, &["Kernel"])
            .get(0)
            .unwrap()
            .reboot_required()
    );
    assert_eq!(
        code(after.begin_install(NoCallback, NoCallback, ())),
        WU_E_INSTALL_NOT_ALLOWED
    );
    assert_eq!(
        code(kernel.begin_uninstall(NoCallback, NoCallback, ())),
        WU_E_INSTALL_NOT_ALLOWED
    );
    // A new session in the same boot still knows (the pending reboot is stored).
    let same_boot = env.session();
    assert!(same_boot.system_information().reboot_required().unwrap());
    assert_eq!(
        code(env.installer(&same_boot, &["After"]).install()),
        WU_E_INSTALL_NOT_ALLOWED
    );
    assert!(!env.in_root("etc/after").exists());

    env.reboot("boot-2");
    let rebooted = env.session();
    let after = env.installer(&rebooted, &["After"]);
    assert!(!rebooted.system_information().reboot_required().unwrap());
    assert!(!after.reboot_required_before_installation().unwrap());
    assert!(
        !env.updates(&rebooted, &["Kernel"])
            .get(0)
            .unwrap()
            .reboot_required()
    );
    let result = after.install().unwrap();
    assert_eq!(result.result_code, Succeeded);
    assert!(!result.reboot_required);
    assert_eq!(read(&env.in_root("etc/after")).as_deref(), Some("a\n"));
}

// 10 -----------------------------------------------------------------------------------------

#[test]
fn files_uninstall_restores_replaced_files_and_symlinks_exactly() {
    let env = Fixture::new()
        .update(
            UpdateSpec::files("App")
                .file("etc/app.conf", "new\n")
                .symlink("etc/current", "app-2.conf")
                .file("etc/new.conf", "fresh\n")
                .file_mode("opt/app/bin/tool", "#!/bin/sh\n", 0o755),
        )
        .build();
    // What was there before: a private file and a symlink the update replaces.
    fs::create_dir_all(env.in_root("etc")).unwrap();
    fs::write(env.in_root("etc/app.conf"), "original\n").unwrap();
    fs::set_permissions(
        env.in_root("etc/app.conf"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    symlink("app.conf", env.in_root("etc/current")).unwrap();
    let before = env.root_snapshot();
    assert_eq!(before["etc/app.conf"], "file 600 original\n");
    assert_eq!(before["etc/current"], "link -> app.conf");

    let session = env.session();
    let installer = env.installer(&session, &["App"]);
    assert_eq!(installer.install().unwrap().result_code, Succeeded);
    let installed = env.root_snapshot();
    assert_eq!(installed["etc/app.conf"], "file 644 new\n");
    assert_eq!(installed["etc/current"], "link -> app-2.conf");
    assert_eq!(installed["etc/new.conf"], "file 644 fresh\n");
    assert_eq!(installed["opt/app/bin/tool"], "file 755 #!/bin/sh\n");
    assert!(!installed.contains_key(".wua-staging"));

    assert_eq!(installer.uninstall().unwrap().result_code, Succeeded);
    // Content, mode and link target come back; new files and created directories go.
    assert_eq!(env.root_snapshot(), before);
    assert!(!env.in_root("opt").exists());
    assert!(!env.in_root(".wua-staging").exists());
    // The update's backups are gone from the state directory too.
    let backups = env
        .state_dir()
        .join("backups")
        .join(env.id("App").to_string());
    assert!(!backups.exists());
}

// 11 -----------------------------------------------------------------------------------------

#[test]
fn command_exit_codes_time_outs_and_uninstall_commands() {
    let fx = Fixture::new();
    let uninstall_marker = fx.scratch("uninstalled");
    let reboot_codes = json!({ "0": "succeeded", "5": "succeeded_reboot_required" });
    let env = fx
        .update(
            UpdateSpec::command("Ok", cmd("install.sh", &[]))
                .script(
                    "install.sh",
                    r#"mkdir -p "$DESTDIR/opt/ok"; echo ok > "$DESTDIR/opt/ok/out""#,
                )
                .set_handler(
                    "uninstall",
                    cmd("uninstall.sh", &[uninstall_marker.to_str().unwrap()]),
                )
                .script("uninstall.sh", r#"echo "$WUA_OPERATION" > "$1""#),
        )
        .update(
            UpdateSpec::command(
                "Reboot",
                with(cmd("install.sh", &[]), "exit_codes", reboot_codes),
            )
            .script(
                "install.sh",
                r#"mkdir -p "$DESTDIR/opt/reboot"; echo r > "$DESTDIR/opt/reboot/out"; exit 5"#,
            )
            .set(
                "installation_behavior",
                json!({ "reboot_behavior": "can_request_reboot" }),
            ),
        )
        .update(
            UpdateSpec::command("Unmapped", cmd("install.sh", &[])).script(
                "install.sh",
                r#"mkdir -p "$DESTDIR/opt/bad"; echo bad > "$DESTDIR/opt/bad/out"; exit 3"#,
            ),
        )
        .update(
            UpdateSpec::command(
                "Hung",
                with(cmd("install.sh", &[]), "timeout_secs", json!(1)),
            )
            .script(
                "install.sh",
                r#"mkdir -p "$DESTDIR/opt/hung"; echo h > "$DESTDIR/opt/hung/out"; sleep 600"#,
            ),
        )
        .build();
    let session = env.session();

    // 0 → Succeeded, and what the command wrote under $DESTDIR is installed.
    let ok = env.installer(&session, &["Ok"]);
    let result = ok.install().unwrap();
    assert_eq!(result.update_results[0].result_code, Succeeded);
    assert!(!result.reboot_required);
    assert_eq!(read(&env.in_root("opt/ok/out")).as_deref(), Some("ok\n"));

    // 5, mapped to succeeded_reboot_required → a reboot is needed, but not a mandatory one
    // (the update can request a reboot; it does not always require one).
    let result = env.installer(&session, &["Reboot"]).install().unwrap();
    assert_eq!(result.result_code, Succeeded);
    assert!(result.reboot_required);
    assert!(result.update_results[0].reboot_required);
    assert!(session.system_information().reboot_required().unwrap());
    assert!(!ok.reboot_required_before_installation().unwrap());
    assert_eq!(read(&env.in_root("opt/reboot/out")).as_deref(), Some("r\n"));

    // 3 is not mapped → Failed, nothing of its output installed, raw code kept in history.
    let before = env.root_snapshot();
    let result = env.installer(&session, &["Unmapped"]).install().unwrap();
    assert_eq!(result.result_code, Failed);
    assert_eq!(result.update_results[0].hresult, WU_E_UH_INSTALLERFAILURE);
    assert_eq!(env.root_snapshot(), before);
    let entry = &session.query_history(0, 1).unwrap()[0];
    assert_eq!(entry.title, "Unmapped");
    assert_eq!(entry.hresult, WU_E_UH_INSTALLERFAILURE);
    assert_eq!(entry.unmapped_result_code, 3);

    // A command running past its time-out is killed → WU_E_UH_INSTALLERHUNG.
    let result = env.installer(&session, &["Hung"]).install().unwrap();
    assert_eq!(result.result_code, Failed);
    assert_eq!(result.update_results[0].hresult, WU_E_UH_INSTALLERHUNG);
    assert_eq!(env.root_snapshot(), before);

    // The uninstall command runs at uninstall, and the files go.
    assert!(!uninstall_marker.exists());
    assert_eq!(ok.uninstall().unwrap().result_code, Succeeded);
    assert_eq!(read(&uninstall_marker).as_deref(), Some("uninstall\n"));
    assert!(!env.in_root("opt/ok").exists());
    assert!(env.in_root("opt/reboot/out").exists());
}

// 12 -----------------------------------------------------------------------------------------

#[test]
fn damaged_or_missing_payloads_fail_without_writing_anything() {
    let env = Fixture::new()
        .files_update("Damaged", &[("etc/damaged", "d\n")])
        .files_update("Missing", &[("etc/missing", "m\n")])
        .files_update("Good", &[("etc/good", "g\n")])
        .build();
    // Same size, different bytes: only the digest can tell.
    let damaged = env.payload_path("Damaged");
    let mut bytes = fs::read(&damaged).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&damaged, bytes).unwrap();
    fs::remove_file(env.payload_path("Missing")).unwrap();

    let session = env.session();
    let updates = env.updates(&session, &["Damaged", "Missing", "Good"]);
    assert!(updates.get(0).unwrap().is_downloaded());
    assert!(!updates.get(1).unwrap().is_downloaded());

    let result = env
        .installer(&session, &["Damaged", "Missing"])
        .install()
        .unwrap();
    assert_eq!(result.result_code, Failed);
    assert_eq!(
        result.update_results[0].hresult,
        WU_E_UH_NEEDANOTHERDOWNLOAD
    );
    assert_eq!(result.update_results[1].hresult, WU_E_DM_NOTDOWNLOADED);
    assert!(env.root_snapshot().is_empty(), "{:?}", env.root_snapshot());

    // Mixed with a good update, only the good one lands.
    let mut installer = session.create_update_installer();
    installer.set_updates(&updates);
    let result = installer.install().unwrap();
    assert_eq!(result.result_code, SucceededWithErrors);
    assert_eq!(result.update_results[0].result_code, Failed);
    assert_eq!(result.update_results[1].result_code, Failed);
    assert_eq!(result.update_results[2].result_code, Succeeded);
    let root = env.root_snapshot();
    assert_eq!(root.keys().collect::<Vec<_>>(), ["etc", "etc/good"]);
}

// 13 -----------------------------------------------------------------------------------------

#[test]
fn history_records_install_uninstall_and_failure_newest_first() {
    let env = Fixture::new()
        .files_update("Hist", &[("etc/hist", "h\n")])
        .update(
            UpdateSpec::command("Broken", cmd("install.sh", &[])).script("install.sh", "exit 3"),
        )
        .build();
    let mut session = env.session();
    session.set_client_application_id("wua-integration-tests");
    let hist = env.installer(&session, &["Hist"]);
    assert_eq!(hist.install().unwrap().result_code, Succeeded);
    assert_eq!(hist.uninstall().unwrap().result_code, Succeeded);
    let mut broken = env.installer(&session, &["Broken"]);
    broken.set_client_application_id("override");
    assert_eq!(broken.install().unwrap().result_code, Failed);

    let history = session.query_history(0, 10).unwrap();
    let summary: Vec<_> = history
        .iter()
        .map(|e| {
            (
                e.title.as_str(),
                e.operation,
                e.result_code,
                e.hresult,
                e.client_application_id.as_str(),
            )
        })
        .collect();
    use UpdateOperation::{Installation, Uninstallation};
    assert_eq!(
        summary,
        [
            (
                "Broken",
                Installation,
                Failed,
                WU_E_UH_INSTALLERFAILURE,
                "override"
            ),
            (
                "Hist",
                Uninstallation,
                Succeeded,
                S_OK,
                "wua-integration-tests"
            ),
            (
                "Hist",
                Installation,
                Succeeded,
                S_OK,
                "wua-integration-tests"
            ),
        ]
    );
    assert_eq!(history[0].update_identity.update_id, env.id("Broken"));
    assert_eq!(history[0].unmapped_result_code, 3);
    assert_eq!(history[2].update_identity.update_id, env.id("Hist"));
    assert_eq!(history[2].update_identity.revision_number, 1);
    assert!(history[0].date >= history[2].date);

    assert_eq!(session.get_total_history_count().unwrap(), 3);
    assert_eq!(session.query_history(1, 1).unwrap(), history[1..2]);
    assert!(session.query_history(3, 5).unwrap().is_empty());
    assert_eq!(code(session.query_history(-1, 1)), WU_E_INVALIDINDEX);
    assert_eq!(code(session.query_history(0, 0)), WU_E_INVALIDINDEX);
    // Persisted: a new session reads the same history.
    assert_eq!(env.session().query_history(0, 10).unwrap(), history);
}

// 14 -----------------------------------------------------------------------------------------

#[test]
fn callbacks_survive_panics_are_released_by_clean_up_and_may_call_clean_up() {
    let env = Fixture::new()
        .files_update("A", &[("etc/a", "a\n"), ("etc/b", "b\n")])
        .build();
    let session = env.session();
    let installer = env.installer(&session, &["A"]);

    // A progress callback that panics every time: the job still runs to completion and the
    // completion callback still fires, once, seeing the job completed.
    let progress_calls = Arc::new(AtomicUsize::new(0));
    let completions: Log<bool> = log();
    let job = installer
        .begin_install(
            {
                let calls = progress_calls.clone();
                move |_: &InstallationJob<()>, _: &Progress| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    panic!("this progress callback panics on purpose");
                }
            },
            {
                let completions = completions.clone();
                move |job: &InstallationJob<()>, _: &Completed| {
                    completions.lock().unwrap().push(job.is_completed())
                }
            },
            (),
        )
        .unwrap();
    // clean_up waits for the job and its callbacks, then releases them.
    assert_eq!(job.clean_up(), CleanUp::Released);
    assert!(job.is_completed());
    assert_eq!(entries(&completions), [true]);
    assert!(
        progress_calls.load(Ordering::SeqCst) > 1,
        "later progress still delivered"
    );
    assert_eq!(Arc::strong_count(&completions), 1, "callbacks not released");
    assert_eq!(
        Arc::strong_count(&progress_calls),
        1,
        "callbacks not released"
    );
    assert_eq!(installer.end_install(&job).unwrap().result_code, Succeeded);
    assert_eq!(read(&env.in_root("etc/b")).as_deref(), Some("b\n"));

    // clean_up from inside the completion callback cannot wait for itself.
    let inside: Log<CleanUp> = log();
    let job = installer
        .begin_uninstall(
            NoCallback,
            {
                let inside = inside.clone();
                move |job: &InstallationJob<()>, _: &Completed| {
                    inside.lock().unwrap().push(job.clean_up())
                }
            },
            (),
        )
        .unwrap();
    assert_eq!(
        installer.end_uninstall(&job).unwrap().result_code,
        Succeeded
    );
    assert_eq!(job.clean_up(), CleanUp::Released);
    assert_eq!(entries(&inside), [CleanUp::MarkedForDisconnect]);
    assert_eq!(
        CleanUp::MarkedForDisconnect.hresult(),
        WU_S_MARKED_FOR_DISCONNECT
    );
    assert_eq!(Arc::strong_count(&inside), 1);

    // From inside a progress callback: the callbacks are released when it returns, so neither
    // another progress callback nor the completion callback runs.
    let seen: Log<String> = log();
    let job = installer
        .begin_install(
            {
                let seen = seen.clone();
                move |job: &InstallationJob<()>, _: &Progress| {
                    let outcome = job.clean_up();
                    seen.lock().unwrap().push(format!("progress {outcome:?}"))
                }
            },
            {
                let seen = seen.clone();
                move |_: &InstallationJob<()>, _: &Completed| {
                    seen.lock().unwrap().push("completed".into())
                }
            },
            (),
        )
        .unwrap();
    assert_eq!(job.clean_up(), CleanUp::Released);
    assert_eq!(entries(&seen), ["progress MarkedForDisconnect"]);
    assert_eq!(Arc::strong_count(&seen), 1);
    assert_eq!(installer.end_install(&job).unwrap().result_code, Succeeded);
}

#[test]
fn clean_up_on_several_clones_at_once_waits_for_the_completion_callback_in_each() {
    // Regression: only the first of concurrent clean_up calls used to wait for the callback
    // dispatcher; the others released the callbacks before the completion callback had run.
    // The first progress callback is held until every caller is on its way into clean_up, so
    // callbacks are still queued when they arrive.
    for round in 0..10 {
        let env = Fixture::new()
            .files_update("A", &[("etc/a", "a\n"), ("etc/b", "b\n"), ("etc/c", "c\n")])
            .build();
        let session = env.session();
        let installer = env.installer(&session, &["A"]);
        let (entered_tx, entered) = mpsc::channel::<()>();
        let (gate, gate_rx) = mpsc::channel::<()>();
        let mut entered_tx = Some(entered_tx);
        let completions: Log<()> = log();
        let job = installer
            .begin_install(
                move |_: &InstallationJob<()>, _: &Progress| {
                    if let Some(tx) = entered_tx.take() {
                        tx.send(()).unwrap();
                        gate_rx.recv().unwrap();
                    }
                },
                {
                    let completions = completions.clone();
                    move |_: &InstallationJob<()>, _: &Completed| {
                        completions.lock().unwrap().push(())
                    }
                },
                (),
            )
            .unwrap();
        entered.recv().unwrap();
        job.wait(); // the job completes while its callbacks are held up
        let barrier = Arc::new(Barrier::new(5));
        let callers: Vec<_> = (0..4)
            .map(|_| {
                let (job, completions, barrier) =
                    (job.clone(), completions.clone(), barrier.clone());
                thread::spawn(move || {
                    barrier.wait();
                    let outcome = job.clean_up();
                    (outcome, completions.lock().unwrap().len())
                })
            })
            .collect();
        barrier.wait();
        gate.send(()).unwrap();
        for caller in callers {
            assert_eq!(
                caller.join().unwrap(),
                (CleanUp::Released, 1),
                "round {round}: clean_up returned before the completion callback ran"
            );
        }
        assert_eq!(installer.end_install(&job).unwrap().result_code, Succeeded);
    }
}

// 15 -----------------------------------------------------------------------------------------

#[test]
fn progress_never_goes_back_and_ends_at_100() {
    let env = Fixture::new()
        .files_update("One", &[("etc/1a", "1a\n"), ("etc/1b", "1b\n")])
        .files_update("Two", &[("etc/2a", "2a\n"), ("etc/2b", "2b\n")])
        .files_update("Three", &[("etc/3a", "3a\n"), ("etc/3b", "3b\n")])
        .build();
    let session = env.session();
    let installer = env.installer(&session, &["One", "Two", "Three"]);
    let snapshots: Log<(usize, u32, u32)> = log();
    let job = installer
        .begin_install(
            {
                let snapshots = snapshots.clone();
                move |_: &InstallationJob<()>, args: &Progress| {
                    let p = &args.progress;
                    snapshots.lock().unwrap().push((
                        p.current_update_index,
                        p.current_update_percent_complete,
                        p.percent_complete,
                    ))
                }
            },
            NoCallback,
            (),
        )
        .unwrap();
    let result = installer.end_install(&job).unwrap();
    job.clean_up();

    let snapshots = entries(&snapshots);
    assert!(snapshots.len() >= 3, "{snapshots:?}");
    for pair in snapshots.windows(2) {
        assert!(pair[0].0 <= pair[1].0, "index went back: {snapshots:?}");
        assert!(pair[0].2 <= pair[1].2, "percent went back: {snapshots:?}");
    }
    assert!(snapshots.iter().all(|s| s.1 <= 100 && s.2 <= 100));
    assert_eq!(snapshots.last().unwrap(), &(2, 100, 100));
    // Every update was reported while it was the current one.
    for index in 0..3 {
        assert!(snapshots.iter().any(|s| s.0 == index), "{snapshots:?}");
    }

    let progress = job.get_progress();
    assert_eq!(progress.percent_complete, 100);
    assert_eq!(
        progress.get_update_result(2).unwrap().result_code,
        Succeeded
    );
    assert_eq!(code(progress.get_update_result(3)), WU_E_INVALIDINDEX);
    assert_eq!(result.get_update_result(0).unwrap().result_code, Succeeded);
    assert_eq!(code(result.get_update_result(3)), WU_E_INVALIDINDEX);
    assert_eq!(
        code(result.get_update_result(usize::MAX)),
        WU_E_INVALIDINDEX
    );
}

// 16 -----------------------------------------------------------------------------------------

/// Wakes a parked thread.
struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Counts its wake-ups.
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A minimal executor: polls on this thread and parks between wake-ups.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(output) => return output,
            // A spurious unpark only costs another poll.
            Poll::Pending => thread::park(),
        }
    }
}

#[test]
fn the_completion_future_resolves_when_the_job_completes() {
    let fx = Fixture::new();
    let started = fx.scratch("started");
    let release = fx.scratch("release");
    let block = blocking_update(&fx, "Block", "started", "release");
    let env = fx.update(block).build();
    let session = env.session();
    let installer = env.installer(&session, &["Block"]);
    let job = installer.begin_install(NoCallback, NoCallback, ()).unwrap();
    wait_for("the blocking command to start", || started.exists());

    // While the command waits for its release marker, the future is pending.
    let mut completion = pin!(job.completion());
    let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let waker = Waker::from(counter.clone());
    assert!(
        completion
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending()
    );
    assert!(!job.is_completed());

    fs::write(&release, "").unwrap();
    block_on(completion);
    assert!(job.is_completed());
    // The waker registered by the first poll was woken too.
    assert_eq!(counter.0.load(Ordering::SeqCst), 1);
    // An already completed job's future is ready at once.
    block_on(job.completion());
    assert_eq!(installer.end_install(&job).unwrap().result_code, Succeeded);
}

// 17 -----------------------------------------------------------------------------------------

/// A then B install `etc/x`. Uninstalling one keeps the other's content on disk; uninstalling
/// both, in either order, brings back what was there before A (or nothing, directory included).
fn overlapping_uninstall(original: Option<&str>, a_first: bool) {
    let env = Fixture::new()
        .files_update("A", &[("etc/x", "from A\n")])
        .files_update("B", &[("etc/x", "from B\n")])
        .build();
    if let Some(text) = original {
        fs::create_dir_all(env.in_root("etc")).unwrap();
        fs::write(env.in_root("etc/x"), text).unwrap();
    }
    let before = env.root_snapshot();
    let session = env.session();
    let a = env.installer(&session, &["A"]);
    let b = env.installer(&session, &["B"]);
    let x = env.in_root("etc/x");
    assert_eq!(a.install().unwrap().result_code, Succeeded);
    assert_eq!(b.install().unwrap().result_code, Succeeded);
    assert_eq!(read(&x).as_deref(), Some("from B\n"));

    if a_first {
        assert_eq!(a.uninstall().unwrap().result_code, Succeeded);
        assert_eq!(read(&x).as_deref(), Some("from B\n"), "B still owns etc/x");
        assert_eq!(b.uninstall().unwrap().result_code, Succeeded);
    } else {
        assert_eq!(b.uninstall().unwrap().result_code, Succeeded);
        assert_eq!(read(&x).as_deref(), Some("from A\n"), "A's content is back");
        assert_eq!(a.uninstall().unwrap().result_code, Succeeded);
    }
    assert_eq!(read(&x).as_deref(), original);
    assert_eq!(env.root_snapshot(), before);
    assert!(session.installed_updates().unwrap().is_empty());
}

#[test]
fn overlapping_files_are_restored_whichever_update_is_uninstalled_first() {
    for original in [Some("original\n"), None] {
        for a_first in [true, false] {
            overlapping_uninstall(original, a_first);
        }
    }
}

// 18 -----------------------------------------------------------------------------------------

#[test]
fn a_forced_reinstall_under_a_later_update_keeps_the_original_file() {
    // Regression: a forced reinstall used to move the update to the end of the install order,
    // so uninstalling the later update handed it that update's backup and threw away the
    // original content the reinstalled update was keeping.
    for a_first in [true, false] {
        let env = Fixture::new()
            .files_update("A", &[("etc/x", "from A\n")])
            .files_update("B", &[("etc/x", "from B\n")])
            .build();
        fs::create_dir_all(env.in_root("etc")).unwrap();
        fs::write(env.in_root("etc/x"), "original\n").unwrap();
        let before = env.root_snapshot();
        let session = env.session();
        let mut a = env.installer(&session, &["A"]);
        let b = env.installer(&session, &["B"]);
        let x = env.in_root("etc/x");
        assert_eq!(a.install().unwrap().result_code, Succeeded);
        assert_eq!(b.install().unwrap().result_code, Succeeded);
        a.set_is_forced(true);
        let result = a.install().unwrap();
        assert_eq!(
            result.update_results[0].hresult, S_OK,
            "reinstalled, not skipped"
        );
        assert_eq!(read(&x).as_deref(), Some("from A\n"));
        // The reinstall keeps A's place: A is still listed before B.
        let order: Vec<_> = session
            .installed_updates()
            .unwrap()
            .iter()
            .map(|u| u.title().to_string())
            .collect();
        assert_eq!(order, ["A", "B"]);

        if a_first {
            assert_eq!(a.uninstall().unwrap().result_code, Succeeded);
        } else {
            assert_eq!(b.uninstall().unwrap().result_code, Succeeded);
            assert_eq!(
                read(&x).as_deref(),
                Some("from A\n"),
                "A is still installed"
            );
        }
        let rest = if a_first { &b } else { &a };
        assert_eq!(rest.uninstall().unwrap().result_code, Succeeded);
        assert_eq!(
            read(&x).as_deref(),
            Some("original\n"),
            "a_first = {a_first}"
        );
        assert_eq!(env.root_snapshot(), before);
    }
}

// 20 -----------------------------------------------------------------------------------------

#[test]
fn a_failure_midway_leaves_the_root_as_it_was() {
    // The update's first file goes into place, then a regular file stands where it installs a
    // directory: the transaction must undo the first move and restore the replaced file.
    let env = Fixture::new()
        .files_update(
            "Blocked",
            &[("etc/a.conf", "new a\n"), ("etc/b/c.conf", "new c\n")],
        )
        .build();
    fs::create_dir_all(env.in_root("etc")).unwrap();
    fs::write(env.in_root("etc/a.conf"), "original a\n").unwrap();
    fs::write(env.in_root("etc/b"), "a file, not a directory\n").unwrap();
    let before = env.root_snapshot();

    let session = env.session();
    let result = env.installer(&session, &["Blocked"]).install().unwrap();
    assert_eq!(result.result_code, Failed);
    assert_eq!(result.update_results[0].hresult, WU_E_UH_INSTALLERFAILURE);
    assert_eq!(env.root_snapshot(), before, "the root changed");
    assert!(!env.in_root(".wua-staging").exists());
    assert!(!session.store().is_installed(env.id("Blocked")).unwrap());
    let history = session.query_history(0, 1).unwrap();
    assert_eq!(history[0].result_code, Failed);
    // No backup of the restored file is left behind in the state directory.
    let backups = env
        .state_dir()
        .join("backups")
        .join(env.id("Blocked").to_string());
    assert!(!backups.join("etc/a.conf").exists());
}

// 21 -----------------------------------------------------------------------------------------

#[test]
fn a_new_revision_upgrades_in_place_and_uninstalls_to_the_original() {
    let env = Fixture::new()
        .files_update(
            "App",
            &[("etc/app.conf", "v1\n"), ("usr/lib/app/old.so", "old\n")],
        )
        .build();
    fs::create_dir_all(env.in_root("etc")).unwrap();
    fs::write(env.in_root("etc/app.conf"), "original\n").unwrap();
    let before = env.root_snapshot();
    let session = env.session();
    let installer = env.installer(&session, &["App"]);
    assert_eq!(installer.install().unwrap().result_code, Succeeded);

    // Revision 2 of the same update: the configuration changes, old.so goes, new.so comes.
    let src = env.scratch("src-v2/001");
    fs::create_dir_all(src.join("payload/etc")).unwrap();
    fs::create_dir_all(src.join("payload/usr/lib/app")).unwrap();
    fs::write(src.join("payload/etc/app.conf"), "v2\n").unwrap();
    fs::write(src.join("payload/usr/lib/app/new.so"), "new\n").unwrap();
    fs::write(
        src.join("update.json"),
        serde_json::to_vec(&json!({
            "identity": {"update_id": env.id("App"), "revision_number": 2},
            "title": "App", "handler": {"kind": "files"}
        }))
        .unwrap(),
    )
    .unwrap();
    let catalog_v2 = env.scratch("catalog-v2");
    wua::catalog::build(&env.scratch("src-v2"), &catalog_v2).unwrap();
    let config = wua::AgentConfig {
        catalog_dir: Some(catalog_v2),
        ..env.config()
    };
    let session = wua::UpdateSession::open(config).unwrap();
    let v2 = session.catalog_updates().unwrap();
    assert!(
        !v2.get(0).unwrap().is_installed(),
        "revision 2 is not installed yet"
    );
    let mut installer = session.create_update_installer();
    installer.set_updates(&v2.copy());
    let result = installer.install().unwrap();
    assert_eq!(result.result_code, Succeeded);
    assert_eq!(
        result.update_results[0].hresult, S_OK,
        "upgraded, not skipped"
    );
    let upgraded = env.root_snapshot();
    assert_eq!(upgraded["etc/app.conf"], "file 644 v2\n");
    assert_eq!(upgraded["usr/lib/app/new.so"], "file 644 new\n");
    assert!(!upgraded.contains_key("usr/lib/app/old.so"), "{upgraded:?}");
    let installed = session.installed_updates().unwrap();
    assert_eq!(installed.get(0).unwrap().identity().revision_number, 2);
    // Installing revision 2 again is a no-op.
    assert_eq!(
        installer.install().unwrap().update_results[0].hresult,
        WU_S_ALREADY_INSTALLED
    );

    // Uninstalling the upgraded update restores what was there before revision 1.
    installer.set_updates(&installed.copy());
    assert_eq!(installer.uninstall().unwrap().result_code, Succeeded);
    assert_eq!(env.root_snapshot(), before);
}

// 22 -----------------------------------------------------------------------------------------

#[test]
fn an_unreadable_boot_id_file_is_a_clear_error() {
    let env = Fixture::new().files_update("A", &[("a", "a")]).build();
    let config = wua::AgentConfig {
        boot_id_file: Some(env.scratch("no-such-boot-id")),
        ..env.config()
    };
    let err = wua::UpdateSession::open(config).unwrap_err();
    assert!(
        err.to_string().contains("cannot read the boot id file"),
        "{err}"
    );
    assert!(err.to_string().contains("no-such-boot-id"), "{err}");
    fs::write(env.scratch("empty"), "\n").unwrap();
    let config = wua::AgentConfig {
        boot_id_file: Some(env.scratch("empty")),
        ..env.config()
    };
    let err = wua::UpdateSession::open(config).unwrap_err();
    assert_eq!(err.hresult(), WU_E_INVALID_FILE);
}

// 23 -----------------------------------------------------------------------------------------

/// A callback object, as a COM client would pass one: it implements both callback traits.
struct Recorder {
    seen: Arc<Mutex<Vec<String>>>,
}

impl wua::InstallationProgressChangedCallback<String> for Recorder {
    fn invoke(&mut self, job: &InstallationJob<String>, args: &Progress) {
        self.seen.lock().unwrap().push(format!(
            "{} progress {}",
            job.async_state(),
            args.progress.percent_complete
        ));
    }
}

impl wua::InstallationCompletedCallback<String> for Recorder {
    fn invoke(&mut self, job: &InstallationJob<String>, _: &Completed) {
        self.seen
            .lock()
            .unwrap()
            .push(format!("{} completed", job.async_state()));
    }
}

#[test]
fn callback_objects_and_boxed_trait_objects_work_like_closures() {
    let env = Fixture::new().files_update("A", &[("a", "a")]).build();
    let session = env.session();
    let installer = env.installer(&session, &["A"]);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let on_progress: Box<dyn wua::InstallationProgressChangedCallback<String>> =
        Box::new(Recorder { seen: seen.clone() });
    let on_completed: Box<dyn wua::InstallationCompletedCallback<String>> =
        Box::new(Recorder { seen: seen.clone() });
    let job = installer
        .begin_install(on_progress, on_completed, "boxed".to_string())
        .unwrap();
    assert_eq!(installer.end_install(&job).unwrap().result_code, Succeeded);
    assert_eq!(job.clean_up(), CleanUp::Released);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.last().map(String::as_str), Some("boxed completed"));
    assert!(seen.iter().any(|s| s == "boxed progress 100"), "{seen:?}");
    assert_eq!(seen.iter().filter(|s| s.ends_with("completed")).count(), 1);

    // The plain object, unboxed, on an uninstall.
    let seen2 = Arc::new(Mutex::new(Vec::new()));
    let job = installer
        .begin_uninstall(
            Recorder {
                seen: seen2.clone(),
            },
            Recorder {
                seen: seen2.clone(),
            },
            "plain".to_string(),
        )
        .unwrap();
    assert_eq!(
        installer.end_uninstall(&job).unwrap().result_code,
        Succeeded
    );
    job.clean_up();
    assert_eq!(
        seen2.lock().unwrap().last().map(String::as_str),
        Some("plain completed")
    );
}

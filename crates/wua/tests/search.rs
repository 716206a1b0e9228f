//! End-to-end tests of `UpdateSearcher`, `SearchJob` and `SearchResult` against the real library:
//! each test builds its own catalog with `wua::catalog::build`, writes the machine state its
//! rules look at (files, `os-release`, a dpkg status file) into a temporary root, and searches
//! with real sessions on a temporary state directory.
//!
//! Nothing here measures time. The one test that must catch a search mid-flight
//! (`request_abort_…`) holds the search's worker at a known update through the engine's
//! per-update trace event (see [`gate`]): rules never read FIFOs, so no file can block a search.

mod common;

use std::fmt::Debug;
use std::fs;
use std::os::unix::fs::symlink;
use std::sync::mpsc;

use common::{Env, Fixture, UpdateSpec, cmd, fixture_id, read, titles};
use serde_json::{Value, json};
use uuid::Uuid;
use wua::hresult::*;
use wua::search::UpdateSearcher;
use wua::{
    CleanUp, NoCallback, OperationResultCode, SearchCompletedCallbackArgs, SearchJob,
    UpdateCollection, UpdateExceptionContext, UpdateOperation, UpdateSession, Verdict,
};

use OperationResultCode::{Aborted, Failed, Succeeded, SucceededWithErrors};

const CAT_TOOLS: &str = "11111111-1111-4111-8111-111111111111";
const CAT_DOCS: &str = "22222222-2222-4222-8222-222222222222";
const CAT_EXTRA: &str = "33333333-3333-4333-8333-333333333333";
const CAT_NONE: &str = "44444444-4444-4444-8444-444444444444";

/// SHA-256 of `hello`.
const HELLO_SHA256: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

/// The HRESULT of a call that must fail.
fn code<T: Debug>(result: wua::Result<T>) -> HResult {
    result.expect_err("the call must fail").hresult()
}

/// The titles a successful, warning-free search returns.
fn found(searcher: &UpdateSearcher, criteria: &str) -> Vec<String> {
    let result = searcher
        .search(criteria)
        .unwrap_or_else(|e| panic!("{criteria}: {e}"));
    assert_eq!(
        result.result_code, Succeeded,
        "{criteria}: {:?}",
        result.warnings
    );
    assert!(
        result.warnings.is_empty(),
        "{criteria}: {:?}",
        result.warnings
    );
    assert!(result.updates.is_read_only(), "{criteria}");
    titles(&result.updates)
}

/// `found`, for a list of expected titles.
fn assert_found(searcher: &UpdateSearcher, criteria: &str, want: &[&str]) {
    assert_eq!(found(searcher, criteria), want, "criteria: {criteria}");
}

/// The one update with this title in a collection.
fn pick<'a>(updates: &'a UpdateCollection, title: &str) -> &'a std::sync::Arc<wua::Update> {
    updates
        .iter()
        .find(|u| u.title() == title)
        .unwrap_or_else(|| panic!("no {title} in {:?}", titles(updates)))
}

/// A `files` update installing one file, `opt/<title with dashes>`.
fn plain(title: &str) -> UpdateSpec {
    let path = format!("opt/{}", title.to_lowercase().replace(' ', "-"));
    UpdateSpec::files(title).file(&path, &format!("{title}\n"))
}

/// A plain update whose `is_installable` rule is `rule`.
fn gated(title: &str, rule: Value) -> UpdateSpec {
    plain(title).set("applicability", json!({ "is_installable": rule }))
}

fn category(id: &str, name: &str) -> Value {
    json!({ "id": id, "name": name })
}

/// Installs the updates with these titles (from the whole catalog) in one job.
fn install(env: &Env, session: &UpdateSession, titles: &[&str]) -> wua::InstallationResult {
    env.installer(session, titles).install().expect("install")
}

/// Rewrites the built `catalog.json` through `edit`.
fn edit_catalog(env: &Env, edit: impl FnOnce(&mut Value)) {
    let path = env.catalog_dir().join(wua::catalog::CATALOG_FILE);
    let mut json: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    edit(&mut json);
    fs::write(&path, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
}

// 1. Criteria -------------------------------------------------------------------------------

/// A catalog with one update per distinguishing property.
fn criteria_fixture() -> Env {
    Fixture::new()
        .update(plain("Soft").set("categories", json!([category(CAT_TOOLS, "Tools")])))
        .update(
            plain("Driver")
                .set("type", json!("driver"))
                .set("categories", json!([category(CAT_DOCS, "Docs")])),
        )
        .update(plain("Optional").set("browse_only", json!(true)).set(
            "categories",
            json!([category(CAT_TOOLS, "Tools"), category(CAT_DOCS, "Docs")]),
        ))
        .update(
            plain("Picky")
                .set("is_assigned", json!(false))
                .set("auto_select_on_web_sites", json!(true)),
        )
        .update(plain("Rev5").revision(5))
        .update(plain("Removal").set("deployment_action", json!("uninstallation")))
        .update(plain("Detect").set("deployment_action", json!("detection")))
        .build()
}

#[test]
fn every_criterion_and_operator_selects_the_right_updates() {
    let env = criteria_fixture();
    let session = env.session();
    let searcher = session.create_update_searcher();
    let all = ["Soft", "Driver", "Optional", "Picky", "Rev5"];
    let software = ["Soft", "Optional", "Picky", "Rev5"];
    let id = |t: &str| env.id(t);

    // Empty criteria are WUA's default.
    assert_found(&searcher, "", &all);
    assert_found(&searcher, "  ", &all);
    assert_found(&searcher, "IsInstalled = 0 and IsHidden = 0", &all);

    // Type = / !=.
    assert_found(&searcher, "Type = 'Software'", &software);
    assert_found(&searcher, "Type = 'Driver'", &["Driver"]);
    assert_found(&searcher, "Type != 'Software'", &["Driver"]);
    assert_found(&searcher, "Type != 'Driver'", &software);

    // DeploymentAction: explicit values, and 'Installation' implied per AND-group.
    assert_found(&searcher, "DeploymentAction = 'Installation'", &all);
    assert_found(
        &searcher,
        "DeploymentAction = 'Uninstallation'",
        &["Removal"],
    );
    assert_found(&searcher, "DeploymentAction = 'Detection'", &["Detect"]);
    assert_found(
        &searcher,
        "DeploymentAction = 'Uninstallation' and Type = 'Driver'",
        &[],
    );
    // Removal is Software, but the first group implies Installation; only the second group,
    // which names its action, admits it.
    assert_found(
        &searcher,
        "(Type = 'Driver') or (DeploymentAction = 'Uninstallation')",
        &["Driver", "Removal"],
    );
    assert_found(
        &searcher,
        "Type = 'Software' or DeploymentAction = 'Detection'",
        &["Soft", "Optional", "Picky", "Rev5", "Detect"],
    );

    // The flags.
    assert_found(&searcher, "IsAssigned = 1", &["Soft", "Driver", "Rev5"]);
    assert_found(&searcher, "IsAssigned = 0", &["Optional", "Picky"]);
    assert_found(&searcher, "BrowseOnly = 1", &["Optional"]);
    assert_found(
        &searcher,
        "BrowseOnly = 0",
        &["Soft", "Driver", "Picky", "Rev5"],
    );
    assert_found(
        &searcher,
        "AutoSelectOnWebSites = 1",
        &["Soft", "Driver", "Picky", "Rev5"],
    );
    assert_found(&searcher, "AutoSelectOnWebSites = 0", &["Optional"]);

    // UpdateID = / !=, RevisionNumber with UpdateID.
    let soft = id("Soft");
    assert_found(&searcher, &format!("UpdateID = '{soft}'"), &["Soft"]);
    assert_found(
        &searcher,
        &format!("UpdateID != '{soft}'"),
        &["Driver", "Optional", "Picky", "Rev5"],
    );
    let removal = id("Removal");
    assert_found(&searcher, &format!("UpdateID = '{removal}'"), &[]);
    assert_found(
        &searcher,
        &format!("UpdateID = '{removal}' and DeploymentAction = 'Uninstallation'"),
        &["Removal"],
    );
    let rev5 = id("Rev5");
    assert_found(
        &searcher,
        &format!("UpdateID = '{rev5}' and RevisionNumber = 5"),
        &["Rev5"],
    );
    assert_found(
        &searcher,
        &format!("UpdateID = '{rev5}' and RevisionNumber = 1"),
        &[],
    );
    assert_found(
        &searcher,
        &format!("UpdateID = '{soft}' and RevisionNumber = 1"),
        &["Soft"],
    );

    // CategoryIDs contains.
    assert_found(
        &searcher,
        &format!("CategoryIDs contains '{CAT_TOOLS}'"),
        &["Soft", "Optional"],
    );
    assert_found(
        &searcher,
        &format!("CategoryIDs contains '{CAT_DOCS}'"),
        &["Driver", "Optional"],
    );
    assert_found(
        &searcher,
        &format!("CategoryIDs contains '{CAT_NONE}'"),
        &[],
    );

    // State criteria before anything is installed, hidden or waiting for a restart.
    assert_found(&searcher, "IsInstalled = 1", &[]);
    assert_found(&searcher, "IsPresent = 1", &[]);
    assert_found(&searcher, "IsPresent = 0", &all);
    assert_found(&searcher, "IsHidden = 1", &[]);
    assert_found(&searcher, "RebootRequired = 1", &[]);
    assert_found(&searcher, "RebootRequired = 0", &all);

    // Keywords, property names and string values are case-insensitive.
    assert_found(
        &searcher,
        "type = 'DRIVER' AND isinstalled = 0",
        &["Driver"],
    );
    assert_found(
        &searcher,
        &format!("UPDATEID = '{}'", soft.to_string().to_uppercase()),
        &["Soft"],
    );
    assert_found(
        &searcher,
        &format!(
            "(categoryids CONTAINS '{}') Or BROWSEONLY = 1",
            CAT_TOOLS.to_uppercase()
        ),
        &["Soft", "Optional"],
    );
    assert_found(
        &searcher,
        "deploymentaction = 'uninstallation'",
        &["Removal"],
    );

    // Installed by wua: IsInstalled and IsPresent follow, and the default search drops it.
    assert_eq!(install(&env, &session, &["Soft"]).result_code, Succeeded);
    assert_found(&searcher, "IsInstalled = 1", &["Soft"]);
    assert_found(
        &searcher,
        "IsInstalled = 0",
        &["Driver", "Optional", "Picky", "Rev5"],
    );
    assert_found(&searcher, "IsPresent = 1", &["Soft"]);
    assert_found(&searcher, "", &["Driver", "Optional", "Picky", "Rev5"]);
    let result = searcher.search("IsInstalled = 1").unwrap();
    let soft_update = result.updates.get(0).unwrap();
    assert!(soft_update.is_installed() && soft_update.is_present());
}

#[test]
fn escape_string_makes_literals_and_invalid_criteria_are_refused() {
    let env = criteria_fixture();
    let session = env.session();
    let searcher = session.create_update_searcher();

    assert_eq!(searcher.escape_string("it's"), "it''s");
    assert_eq!(searcher.escape_string("plain"), "plain");
    // An escaped value round-trips into the criteria.
    let soft = env.id("Soft").to_string();
    assert_found(
        &searcher,
        &format!("UpdateID = '{}'", searcher.escape_string(&soft)),
        &["Soft"],
    );
    // The doubled quote reaches the value as one quote (and 'Soft'ware' is no update type).
    let e = searcher
        .search(&format!("Type = '{}'", searcher.escape_string("Soft'ware")))
        .unwrap_err();
    assert_eq!(e.hresult(), WU_E_INVALID_CRITERIA);
    assert!(e.to_string().contains("found 'Soft'ware'"), "{e}");

    for bad in [
        "IsInstalled = 2",
        "(IsInstalled = 0 or IsHidden = 0) and Type = 'Software'",
        "Colour = 'red'",
        "RevisionNumber = 1",
        &format!("UpdateID != '{soft}' and RevisionNumber = 1"),
        "IsHidden != 0",
        "Type contains 'Software'",
        &format!("CategoryIDs = '{CAT_TOOLS}'"),
        "UpdateID = 'not-a-uuid'",
        "Type = 'Software",
        "IsInstalled = 0 and",
    ] {
        let e = searcher.search(bad).expect_err(bad);
        assert_eq!(e.hresult(), WU_E_INVALID_CRITERIA, "{bad}: {e}");
        assert!(e.to_string().contains("at position "), "{bad}: {e}");
    }
}

#[test]
fn reboot_required_and_is_present_follow_the_store() {
    let env = Fixture::new()
        .update(plain("Restarter").set(
            "installation_behavior",
            json!({ "reboot_behavior": "always_requires_reboot" }),
        ))
        .update(plain("Calm"))
        .build();
    let session = env.session();
    let result = install(&env, &session, &["Restarter"]);
    assert_eq!(result.result_code, Succeeded);
    assert!(result.reboot_required);

    let searcher = session.create_update_searcher();
    assert_found(&searcher, "RebootRequired = 1", &["Restarter"]);
    assert_found(&searcher, "RebootRequired = 0", &["Calm"]);
    let pending = searcher.search("RebootRequired = 1").unwrap();
    assert!(pending.updates.get(0).unwrap().reboot_required());

    // A real reboot (a new boot id) ends the pending restart.
    env.reboot("boot-2");
    let rebooted = env.session().create_update_searcher();
    assert_found(&rebooted, "RebootRequired = 1", &[]);
    assert_found(&rebooted, "RebootRequired = 0", &["Restarter", "Calm"]);

    // Revision 2 of Restarter in the catalog: another revision is installed, so it is present
    // but not installed.
    edit_catalog(&env, |json| {
        json["updates"][0]["identity"]["revision_number"] = json!(2);
    });
    let upgraded = env.session().create_update_searcher();
    assert_found(&upgraded, "IsPresent = 1", &["Restarter"]);
    assert_found(&upgraded, "IsInstalled = 1", &[]);
    assert_found(
        &upgraded,
        "IsPresent = 1 and IsInstalled = 0",
        &["Restarter"],
    );
    let result = upgraded.search("IsPresent = 1").unwrap();
    let restarter = result.updates.get(0).unwrap();
    assert!(restarter.is_present() && !restarter.is_installed());
}

// 2. Search jobs ----------------------------------------------------------------------------

type Seen = (String, bool, String);

/// A completion callback reporting the job's state, `is_completed` and criteria.
fn reporting(
    tx: mpsc::Sender<Seen>,
) -> impl FnMut(&SearchJob<String>, &SearchCompletedCallbackArgs) + Send + 'static {
    move |job: &SearchJob<String>, _: &SearchCompletedCallbackArgs| {
        tx.send((
            job.async_state().clone(),
            job.is_completed(),
            job.criteria().to_string(),
        ))
        .unwrap();
    }
}

fn two_updates() -> Env {
    Fixture::new()
        .update(plain("First"))
        .update(plain("Second").set("type", json!("driver")))
        .build()
}

#[test]
fn each_search_job_hands_its_own_state_to_its_callback() {
    let env = two_updates();
    let session = env.session();
    let searcher = session.create_update_searcher();
    let (tx, rx) = mpsc::channel();
    let first = searcher
        .begin_search(
            "Type = 'Software'",
            reporting(tx.clone()),
            "one".to_string(),
        )
        .unwrap();
    let second = searcher
        .begin_search("Type = 'Driver'", reporting(tx), "two".to_string())
        .unwrap();
    assert_eq!(first.async_state(), "one");
    assert_eq!(second.async_state(), "two");

    let r2 = searcher.end_search(&second).unwrap();
    let r1 = searcher.end_search(&first).unwrap();
    assert_eq!(titles(&r1.updates), ["First"]);
    assert_eq!(titles(&r2.updates), ["Second"]);
    assert_eq!(r1.result_code, Succeeded);
    assert!(first.is_completed() && second.is_completed());

    // clean_up waits for the callbacks: afterwards both have reported.
    assert_eq!(first.clean_up(), CleanUp::Released);
    assert_eq!(second.clean_up(), CleanUp::Released);
    let mut seen: Vec<Seen> = rx.try_iter().collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("one".into(), true, "Type = 'Software'".into()),
            ("two".into(), true, "Type = 'Driver'".into()),
        ]
    );
}

#[test]
fn end_search_may_be_called_once_and_only_by_the_searcher_that_began() {
    let env = two_updates();
    let session = env.session();
    let searcher = session.create_update_searcher();
    let other = session.create_update_searcher();
    let job = searcher.begin_search("", NoCallback, ()).unwrap();

    // Another searcher's job: refused, and the job is not used up.
    assert_eq!(code(other.end_search(&job)), WU_E_INVALID_OPERATION);
    let result = searcher.end_search(&job).unwrap();
    assert_eq!(titles(&result.updates), ["First", "Second"]);
    // A second end_search, on the job or a clone of it.
    assert_eq!(code(searcher.end_search(&job)), WU_E_INVALID_OPERATION);
    assert_eq!(
        code(searcher.end_search(&job.clone())),
        WU_E_INVALID_OPERATION
    );
}

#[test]
fn invalid_criteria_are_reported_by_end_search() {
    let env = two_updates();
    let session = env.session();
    let searcher = session.create_update_searcher();
    let (tx, rx) = mpsc::channel();
    // As WUA does, begin_search accepts the criteria and the job reports them.
    let job = searcher
        .begin_search("IsInstalled = 2", reporting(tx), "bad".to_string())
        .expect("begin_search does not parse the criteria itself");
    let e = searcher.end_search(&job).unwrap_err();
    assert_eq!(e.hresult(), WU_E_INVALID_CRITERIA);
    assert!(e.to_string().contains("expected 0 or 1"), "{e}");
    // Ended, even with an error.
    assert_eq!(code(searcher.end_search(&job)), WU_E_INVALID_OPERATION);
    // The completion callback ran anyway.
    assert_eq!(job.clean_up(), CleanUp::Released);
    assert_eq!(
        rx.try_iter().collect::<Vec<_>>(),
        [("bad".to_string(), true, "IsInstalled = 2".to_string())]
    );
}

#[test]
fn clean_up_releases_after_completion_and_marks_inside_the_callback() {
    let env = two_updates();
    let session = env.session();
    let searcher = session.create_update_searcher();
    let (tx, rx) = mpsc::channel();
    let job = searcher
        .begin_search(
            "",
            move |job: &SearchJob<u32>, _: &SearchCompletedCallbackArgs| {
                // Never call clean_up from the job's own callback: it cannot wait here.
                tx.send((job.clean_up(), *job.async_state())).unwrap();
            },
            7u32,
        )
        .unwrap();
    let result = searcher.end_search(&job).unwrap();
    assert_eq!(result.updates.len(), 2);
    assert_eq!(job.clean_up(), CleanUp::Released);
    assert_eq!(
        rx.try_iter().collect::<Vec<_>>(),
        [(CleanUp::MarkedForDisconnect, 7)]
    );
    assert_eq!(
        CleanUp::MarkedForDisconnect.hresult(),
        WU_S_MARKED_FOR_DISCONNECT
    );
    // Again, and on a clone: still released, nothing runs twice.
    assert_eq!(job.clone().clean_up(), CleanUp::Released);
    assert_eq!(rx.try_iter().count(), 0);

    // clean_up without end_search waits for the search and its callback.
    let (tx, rx) = mpsc::channel();
    let job = searcher
        .begin_search("Type = 'Driver'", reporting(tx), "waited".to_string())
        .unwrap();
    assert_eq!(job.clean_up(), CleanUp::Released);
    assert!(job.is_completed());
    assert_eq!(rx.try_iter().count(), 1);
    assert_eq!(
        titles(&searcher.end_search(&job).unwrap().updates),
        ["Second"]
    );
}

#[test]
fn end_search_may_be_called_from_the_completion_callback() {
    let env = two_updates();
    let session = env.session();
    let searcher = std::sync::Arc::new(session.create_update_searcher());
    let (tx, rx) = mpsc::channel();
    let inside = searcher.clone();
    let job = searcher
        .begin_search(
            "Type = 'Driver'",
            move |job: &SearchJob<()>, _: &SearchCompletedCallbackArgs| {
                tx.send(inside.end_search(job).map(|r| titles(&r.updates)))
                    .unwrap();
            },
            (),
        )
        .unwrap();
    assert_eq!(job.clean_up(), CleanUp::Released);
    let ended = rx.try_recv().expect("the callback ran");
    assert_eq!(ended.unwrap(), ["Second"]);
    // It was ended there.
    assert_eq!(code(searcher.end_search(&job)), WU_E_INVALID_OPERATION);
}

#[test]
fn unsupported_search_scopes_fail_and_the_current_user_has_no_updates() {
    use wua::SearchScope;

    let env = two_updates();
    let session = env.session();
    let mut searcher = session.create_update_searcher();
    assert_eq!(searcher.search_scope(), SearchScope::Default);
    searcher.set_search_scope(SearchScope::MachineOnly);
    assert_found(&searcher, "", &["First", "Second"]);
    searcher.set_search_scope(SearchScope::CurrentUserOnly);
    let result = searcher.search("").unwrap();
    assert_eq!(result.result_code, Succeeded);
    assert!(result.updates.is_empty());
    for scope in [
        SearchScope::MachineAndCurrentUser,
        SearchScope::MachineAndAllUsers,
        SearchScope::AllUsers,
    ] {
        searcher.set_search_scope(scope);
        assert_eq!(code(searcher.search("")), WU_E_UNSUPPORTED_SEARCHSCOPE);
        let job = searcher.begin_search("", NoCallback, ()).unwrap();
        assert_eq!(
            code(searcher.end_search(&job)),
            WU_E_UNSUPPORTED_SEARCHSCOPE
        );
    }
    assert_eq!(
        code(searcher.set_can_automatically_upgrade_service(true)),
        E_INVALIDARG
    );
    searcher
        .set_can_automatically_upgrade_service(false)
        .unwrap();
    assert!(!searcher.can_automatically_upgrade_service());
}

#[test]
fn a_panicking_callback_does_not_stop_end_search() {
    let env = two_updates();
    let session = env.session();
    let searcher = session.create_update_searcher();
    let job = searcher
        .begin_search(
            "Type = 'Software'",
            |_: &SearchJob<()>, _: &SearchCompletedCallbackArgs| {
                panic!("a completion callback that fails");
            },
            (),
        )
        .unwrap();
    let result = searcher.end_search(&job).unwrap();
    assert_eq!(result.result_code, Succeeded);
    assert_eq!(titles(&result.updates), ["First"]);
    assert_eq!(job.clean_up(), CleanUp::Released);
    // The searcher still works.
    assert_found(&searcher, "Type = 'Driver'", &["Second"]);
}

/// Holds a search's worker thread at a chosen update, through the engine's per-update trace
/// event (`search: examining update`, with a `title` field), so a test can act while the
/// search is known to be running. A global `tracing` subscriber, installed once for this test
/// binary, looks at every event and stops only at armed titles.
mod gate {
    use std::collections::HashMap;
    use std::sync::{Mutex, Once, mpsc};
    use std::time::Duration;

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    /// Armed gates: title → (tell the test it is reached, wait for its release).
    type Armed = HashMap<String, (mpsc::Sender<()>, mpsc::Receiver<()>)>;
    static ARMED: Mutex<Option<Armed>> = Mutex::new(None);
    static INSTALL: Once = Once::new();

    struct Title(Option<String>);

    impl Visit for Title {
        fn record_str(&mut self, field: &Field, value: &str) {
            if field.name() == "title" {
                self.0 = Some(value.to_string());
            }
        }
        fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
    }

    struct Gates;

    impl Subscriber for Gates {
        fn enabled(&self, metadata: &Metadata<'_>) -> bool {
            metadata.target().starts_with("wua::search")
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut title = Title(None);
            event.record(&mut title);
            let Some(title) = title.0 else { return };
            // One-shot: the gate is taken out, so only the first event for it stops.
            let gate = ARMED
                .lock()
                .unwrap()
                .as_mut()
                .and_then(|armed| armed.remove(&title));
            if let Some((reached, release)) = gate {
                let _ = reached.send(());
                // Returns when released, or when the test dropped its handle (a failed test).
                let _ = release.recv();
            }
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    /// A gate the test holds.
    pub struct Held {
        reached: mpsc::Receiver<()>,
        release: mpsc::Sender<()>,
    }

    /// Arms a gate at the update with this title (unique within this test binary).
    pub fn arm(title: &str) -> Held {
        INSTALL.call_once(|| {
            tracing::subscriber::set_global_default(Gates)
                .expect("no other global tracing subscriber in this test binary");
        });
        let (reached_tx, reached) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        ARMED
            .lock()
            .unwrap()
            .get_or_insert_with(HashMap::new)
            .insert(title.to_string(), (reached_tx, release_rx));
        Held { reached, release }
    }

    impl Held {
        /// Waits until the search stands at the gate. The bound only stops a hung test.
        pub fn wait_reached(&self) {
            self.reached
                .recv_timeout(Duration::from_secs(120))
                .expect("the search never reached the gate");
        }

        /// Lets the search go on.
        pub fn release(self) {
            let _ = self.release.send(());
        }
    }
}

#[test]
fn request_abort_ends_the_search_with_aborted_and_no_updates() {
    let env = Fixture::new()
        .update(plain("Abort gate"))
        .update(plain("After the gate"))
        .build();
    let session = env.session();
    let searcher = session.create_update_searcher();

    // The worker stops at the first update, after that update's abort check; the abort is
    // requested there, so the check before the second update sees it.
    let gate = gate::arm("Abort gate");
    let (tx, rx) = mpsc::channel();
    let job = searcher
        .begin_search("", reporting(tx), "aborted".to_string())
        .unwrap();
    gate.wait_reached();
    assert!(!job.is_completed());
    job.request_abort();
    job.request_abort(); // idempotent
    gate.release();
    let result = searcher.end_search(&job).unwrap();
    assert_eq!(result.result_code, Aborted);
    assert!(result.updates.is_empty());
    assert!(result.warnings.is_empty());
    // Completed all the same: the callback ran.
    assert_eq!(job.clean_up(), CleanUp::Released);
    assert_eq!(rx.try_iter().count(), 1);

    // After completion an abort request changes nothing.
    let job = searcher.begin_search("", NoCallback, ()).unwrap();
    job.wait();
    job.request_abort();
    let result = searcher.end_search(&job).unwrap();
    assert_eq!(result.result_code, Succeeded);
    assert_eq!(titles(&result.updates), ["Abort gate", "After the gate"]);
}

// 3. Applicability --------------------------------------------------------------------------

const DPKG_STATUS: &str = "\
Package: libfoo
Status: install ok installed
Architecture: amd64
Version: 1:2.0-1

Package: oldpkg
Status: deinstall ok config-files
Architecture: all
Version: 3.0-1

Package: tilde
Status: install ok installed
Architecture: all
Version: 1.0~rc1
";

#[test]
fn each_rule_kind_decides_whether_an_update_applies() {
    let arch = std::env::consts::ARCH;
    let other_arch = if arch == "s390x" { "riscv64" } else { "s390x" };
    let present = json!({ "file_exists": "etc/present" });
    let absent = json!({ "file_exists": "etc/absent" });
    // (title, is_installable rule, the reason it does not apply or None if it applies)
    let cases: Vec<(&str, Value, Option<String>)> = vec![
        ("exists", present.clone(), None),
        (
            "missing",
            absent.clone(),
            Some("file_exists etc/absent: not found".into()),
        ),
        (
            "sha matches",
            json!({ "file_sha256": { "path": "opt/tool", "sha256": HELLO_SHA256 } }),
            None,
        ),
        (
            "sha differs",
            json!({ "file_sha256": { "path": "opt/tool", "sha256": "0".repeat(64) } }),
            Some(format!(
                "file_sha256 opt/tool 000000000000…: has sha256 {HELLO_SHA256}"
            )),
        ),
        (
            "version new enough",
            json!({ "file_version": { "path": "opt/app/VERSION", "pattern": "^version=(\\S+)",
                                        "op": ">=", "version": "1.4" } }),
            None,
        ),
        (
            "version too old",
            json!({ "file_version": { "path": "opt/app/VERSION", "pattern": "^version=(\\S+)",
                                        "op": ">", "version": "1.4.2" } }),
            Some("file_version opt/app/VERSION /^version=(\\S+)/ > 1.4.2: found 1.4.2".into()),
        ),
        (
            "version pattern only",
            json!({ "file_version": { "path": "opt/app/VERSION", "pattern": "^name=app$" } }),
            None,
        ),
        (
            "debian 12 or later",
            json!({ "os_release": { "field": "VERSION_ID", "op": ">=", "value": "12" } }),
            None,
        ),
        (
            "ubuntu only",
            json!({ "os_release": { "field": "ID", "op": "=", "value": "ubuntu" } }),
            Some("os_release ID = ubuntu: is debian".into()),
        ),
        ("this arch", json!({ "arch": [arch] }), None),
        (
            "other arch",
            json!({ "arch": [other_arch] }),
            Some(format!("arch [{other_arch}]: this machine is {arch}")),
        ),
        (
            "epoch wins",
            json!({ "package": { "name": "libfoo", "op": ">=", "version": "3.0" } }),
            None,
        ),
        (
            "config files only",
            json!({ "package": { "name": "oldpkg" } }),
            Some("package oldpkg: not installed (status deinstall ok config-files)".into()),
        ),
        (
            "tilde sorts before",
            json!({ "package": { "name": "tilde", "op": "<", "version": "1.0" } }),
            None,
        ),
        (
            "tilde is no release",
            json!({ "package": { "name": "tilde", "op": ">=", "version": "1.0" } }),
            Some("package tilde >= 1.0: installed 1.0~rc1".into()),
        ),
        (
            "all hold",
            json!({ "all": [present.clone(), { "not": absent.clone() }] }),
            None,
        ),
        (
            "all but one",
            json!({ "all": [present.clone(), absent.clone()] }),
            Some("file_exists etc/absent: not found".into()),
        ),
        (
            "any holds",
            json!({ "any": [absent.clone(), { "arch": [arch] }] }),
            None,
        ),
        (
            "none holds",
            json!({ "any": [absent.clone(), { "arch": [other_arch] }] }),
            Some("none of 2 holds: file_exists etc/absent: not found".into()),
        ),
        (
            "not present",
            json!({ "not": present }),
            Some("not (file_exists etc/present: exists)".into()),
        ),
    ];
    let env = cases
        .iter()
        .fold(Fixture::new(), |fx, (title, rule, _)| {
            fx.update(gated(title, rule.clone()))
        })
        .build();
    env.write_in_root("etc/present", "x\n");
    env.write_in_root("opt/tool", "hello");
    env.write_in_root("opt/app/VERSION", "name=app\nversion=1.4.2\n");
    env.write_in_root("etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n");
    env.write_in_root("var/lib/dpkg/status", DPKG_STATUS);

    let session = env.session();
    let searcher = session.create_update_searcher();
    let applying: Vec<&str> = cases
        .iter()
        .filter(|(_, _, why)| why.is_none())
        .map(|(t, ..)| *t)
        .collect();
    assert_found(&searcher, "", &applying);

    // Every update of the catalog, with whether it applies.
    let all = session.catalog_updates().unwrap();
    for (title, _, why) in &cases {
        assert_eq!(pick(&all, title).is_installable(), why.is_none(), "{title}");
    }

    // explain names the deciding rule and what it found.
    let (_, explanations) = searcher.explain("").unwrap();
    for (title, _, why) in &cases {
        let verdict = &explanations
            .iter()
            .find(|e| e.update.title() == *title)
            .unwrap()
            .verdict;
        match why {
            None => assert!(verdict.is_selected(), "{title}: {verdict}"),
            Some(reason) => assert_eq!(
                verdict,
                &Verdict::NotApplicable {
                    reason: reason.clone()
                },
                "{title}"
            ),
        }
    }
}

#[test]
fn is_installed_rules_and_installs_by_wua_decide_is_installed() {
    let env = Fixture::new()
        // Detected as installed by its rule; its own is_installable does not hold, which does
        // not matter for an installed update.
        .update(plain("Detected").set(
            "applicability",
            json!({ "is_installed": { "file_exists": "etc/detected" },
                    "is_installable": { "file_exists": "etc/absent" } }),
        ))
        .update(plain("Undetected").set(
            "applicability",
            json!({ "is_installed": { "file_exists": "etc/not-there" } }),
        ))
        .update(plain("By wua"))
        .build();
    env.write_in_root("etc/detected", "yes\n");
    let session = env.session();
    let searcher = session.create_update_searcher();
    assert_found(&searcher, "IsInstalled = 1", &["Detected"]);
    assert_found(&searcher, "IsInstalled = 0", &["Undetected", "By wua"]);
    assert_found(&searcher, "IsPresent = 1", &["Detected"]);

    assert_eq!(install(&env, &session, &["By wua"]).result_code, Succeeded);
    assert_found(&searcher, "IsInstalled = 1", &["Detected", "By wua"]);
    assert_found(&searcher, "IsInstalled = 0", &["Undetected"]);
    let (_, explanations) = searcher.explain("IsInstalled = 1").unwrap();
    let because = |title: &str| match &explanations
        .iter()
        .find(|e| e.update.title() == title)
        .unwrap()
        .verdict
    {
        Verdict::Selected { because, .. } => because.clone(),
        other => panic!("{title}: {other}"),
    };
    assert_eq!(because("Detected"), "file_exists etc/detected: exists");
    assert_eq!(because("By wua"), "installed by wua");

    // The detection rule is read afresh by each search.
    fs::remove_file(env.in_root("etc/detected")).unwrap();
    assert_found(&searcher, "IsInstalled = 1", &["By wua"]);
}

#[test]
fn prerequisites_are_rechecked_within_one_job_and_non_applicable_installs_fail() {
    let env = Fixture::new()
        .update(plain("Base"))
        .update(gated(
            "Needs base",
            json!({ "update_installed": fixture_id(0) }),
        ))
        .update(plain("Detected base").set(
            "applicability",
            json!({ "is_installed": { "file_exists": "etc/detected-base" } }),
        ))
        .update(gated(
            "Needs detected base",
            json!({ "update_installed": fixture_id(2) }),
        ))
        .update(gated(
            "Never applies",
            json!({ "file_exists": "etc/absent" }),
        ))
        .build();
    let session = env.session();
    let searcher = session.create_update_searcher();
    assert_found(&searcher, "", &["Base", "Detected base"]);
    // A prerequisite detected by its is_installed rule counts as installed.
    env.write_in_root("etc/detected-base", "");
    assert_found(&searcher, "", &["Base", "Needs detected base"]);

    // Base and its dependant in one job: the dependant does not apply yet when the job starts,
    // and is checked again after Base is installed.
    let updates = env.updates(&session, &["Base", "Needs base"]);
    assert!(!updates.get(1).unwrap().is_installable());
    let mut installer = session.create_update_installer();
    installer.set_updates(&updates);
    let result = installer.install().unwrap();
    assert_eq!(result.result_code, Succeeded, "{result:?}");
    assert_eq!(result.update_results[1].hresult, S_OK);
    assert_eq!(
        read(&env.in_root("opt/needs-base")).as_deref(),
        Some("Needs base\n")
    );
    assert_found(
        &searcher,
        "IsInstalled = 1",
        &["Base", "Needs base", "Detected base"],
    );

    // The dependant alone, before its prerequisite: not applicable, and nothing is written.
    let fresh = Fixture::new()
        .update(plain("Base"))
        .update(gated(
            "Needs base",
            json!({ "update_installed": fixture_id(0) }),
        ))
        .build();
    let session = fresh.session();
    let result = install(&fresh, &session, &["Needs base"]);
    assert_eq!(result.result_code, Failed);
    assert_eq!(result.update_results[0].hresult, WU_E_NOT_APPLICABLE);
    assert!(
        fresh.root_snapshot().is_empty(),
        "{:?}",
        fresh.root_snapshot()
    );
    assert!(session.installed_updates().unwrap().is_empty());

    // An update that never applies, taken from the catalog and given to the installer: it fails
    // on its own, the others of the job install.
    let session = env.session();
    let before = env.root_snapshot();
    let result = install(&env, &session, &["Never applies", "Detected base"]);
    assert_eq!(result.result_code, SucceededWithErrors);
    assert_eq!(result.update_results[0].result_code, Failed);
    assert_eq!(result.update_results[0].hresult, WU_E_NOT_APPLICABLE);
    assert_eq!(result.update_results[1].result_code, Succeeded);
    assert!(!env.in_root("opt/never-applies").exists());
    let after = env.root_snapshot();
    let added: Vec<&String> = after.keys().filter(|k| !before.contains_key(*k)).collect();
    assert_eq!(added, ["opt/detected-base"]);
    let history = session.query_history(0, 2).unwrap();
    assert_eq!(history[1].title, "Never applies");
    assert_eq!(history[1].result_code, Failed);
    assert_eq!(history[1].hresult, WU_E_NOT_APPLICABLE);
}

#[test]
fn an_installed_prerequisite_the_catalog_no_longer_lists_still_counts() {
    let env = Fixture::new()
        .update(plain("Gone"))
        .update(gated(
            "Needs gone",
            json!({ "update_installed": fixture_id(0) }),
        ))
        .build();
    let session = env.session();
    assert_found(&session.create_update_searcher(), "", &["Gone"]);
    assert_eq!(install(&env, &session, &["Gone"]).result_code, Succeeded);
    edit_catalog(&env, |json| {
        json["updates"].as_array_mut().unwrap().remove(0);
    });
    let session = env.session();
    assert_found(&session.create_update_searcher(), "", &["Needs gone"]);
    assert_eq!(titles(&session.installed_updates().unwrap()), ["Gone"]);
    assert_eq!(
        install(&env, &session, &["Needs gone"]).result_code,
        Succeeded
    );
}

// 4. Hidden updates and EULAs ---------------------------------------------------------------

#[test]
fn hiding_persists_and_mandatory_or_deadline_updates_cannot_be_hidden() {
    let env = Fixture::new()
        .update(plain("Hideable"))
        .update(plain("Mandatory").set("is_mandatory", json!(true)))
        .update(plain("Deadline").set("deadline", json!("2030-01-01T00:00:00Z")))
        .update(plain("Other"))
        .build();
    let all = ["Hideable", "Mandatory", "Deadline", "Other"];
    let session = env.session();
    let searcher = session.create_update_searcher();
    let result = searcher.search("").unwrap();
    assert_eq!(titles(&result.updates), all);

    let hideable = pick(&result.updates, "Hideable");
    assert!(!hideable.is_hidden());
    hideable.set_hidden(true).unwrap();
    assert!(hideable.is_hidden());
    for title in ["Mandatory", "Deadline"] {
        let update = pick(&result.updates, title);
        let e = update.set_hidden(true).unwrap_err();
        assert_eq!(e.hresult(), WU_E_DS_DECLINENOTALLOWED, "{title}: {e}");
        assert!(!update.is_hidden(), "{title}");
        // Unhiding is always allowed.
        update.set_hidden(false).unwrap();
    }

    // A new session on the same state sees the hidden update.
    let session = env.session();
    let searcher = session.create_update_searcher();
    assert_found(&searcher, "", &["Mandatory", "Deadline", "Other"]);
    assert_found(&searcher, "IsHidden = 1", &["Hideable"]);
    assert_found(&searcher, "Type = 'Software'", &all);
    let hidden = searcher.search("IsHidden = 1").unwrap();
    let hideable = hidden.updates.get(0).unwrap();
    assert!(hideable.is_hidden());
    assert!(session.store().is_hidden(env.id("Hideable")).unwrap());
    assert!(pick(&session.catalog_updates().unwrap(), "Hideable").is_hidden());

    // Unhide, and it is back in the next session.
    hideable.set_hidden(false).unwrap();
    assert!(!hideable.is_hidden());
    let searcher = env.session().create_update_searcher();
    assert_found(&searcher, "", &all);
    assert_found(&searcher, "IsHidden = 1", &[]);
}

/// Who `accept_eula` records: `USER`, else `LOGNAME`, else the uid.
fn expected_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid {}", wua::session::current_uid()))
}

// tests/installer.rs covers installing with unaccepted licence terms (WU_E_EULAS_DECLINED) and
// that acceptance persists; this covers who and when.
#[test]
fn eula_acceptance_records_who_and_when_across_sessions() {
    let env = Fixture::new()
        .update(plain("Licensed").set("eula_text", json!("You agree to everything.")))
        .update(plain("Free"))
        .build();
    let session = env.session();
    let result = session.create_update_searcher().search("").unwrap();
    let licensed = pick(&result.updates, "Licensed");
    assert!(!licensed.eula_accepted());
    assert_eq!(licensed.eula_text(), Some("You agree to everything."));
    assert_eq!(licensed.eula_acceptance().unwrap(), None);

    let before = jiff::Timestamp::now();
    licensed.accept_eula().unwrap();
    let after = jiff::Timestamp::now();
    assert!(licensed.eula_accepted());

    let session = env.session();
    let result = session.create_update_searcher().search("").unwrap();
    let licensed = pick(&result.updates, "Licensed");
    assert!(licensed.eula_accepted());
    let acceptance = licensed.eula_acceptance().unwrap().expect("recorded");
    assert_eq!(acceptance.accepted_by, expected_user());
    assert!(
        before <= acceptance.accepted_at && acceptance.accepted_at <= after,
        "{before} <= {} <= {after}",
        acceptance.accepted_at
    );
    // An update without terms has nothing to accept or record.
    let free = pick(&result.updates, "Free");
    assert!(free.eula_accepted());
    free.accept_eula().unwrap();
    assert_eq!(free.eula_acceptance().unwrap(), None);
}

// 5. Supersedence ---------------------------------------------------------------------------

fn supersedence_fixture() -> Env {
    Fixture::new()
        .update(plain("Old"))
        .update(plain("New").set("superseded_update_ids", json!([fixture_id(0)])))
        .update(plain("Unrelated"))
        .build()
}

#[test]
fn superseded_updates_are_left_out_unless_asked_for_or_their_superseder_is_hidden() {
    let env = supersedence_fixture();
    let session = env.session();
    let mut searcher = session.create_update_searcher();
    assert!(!searcher.include_potentially_superseded_updates());
    assert_found(&searcher, "", &["New", "Unrelated"]);
    let (_, explanations) = searcher.explain("").unwrap();
    assert_eq!(
        explanations[0].verdict,
        Verdict::Superseded {
            by: env.id("New"),
            by_title: "New".into(),
            by_installed: false
        }
    );

    searcher.set_include_potentially_superseded_updates(true);
    assert_found(&searcher, "", &["Old", "New", "Unrelated"]);
    searcher.set_include_potentially_superseded_updates(false);

    // The superseding update hidden: IsHidden = 0 leaves it out, so the older one is offered.
    let new = pick(&session.catalog_updates().unwrap(), "New").clone();
    new.set_hidden(true).unwrap();
    assert_found(&searcher, "", &["Old", "Unrelated"]);
    assert_found(&searcher, "IsHidden = 0", &["Old", "Unrelated"]);
    // Criteria that do not exclude hidden updates keep the newer one, and so drop the older.
    assert_found(&searcher, "Type = 'Software'", &["New", "Unrelated"]);
    searcher.set_include_potentially_superseded_updates(true);
    assert_found(&searcher, "IsHidden = 1", &["New"]);
    searcher.set_include_potentially_superseded_updates(false);
    new.set_hidden(false).unwrap();
}

#[test]
fn an_installed_superseder_hides_the_old_update_but_an_installed_old_one_is_found() {
    let env = supersedence_fixture();
    let session = env.session();
    let searcher = session.create_update_searcher();

    assert_eq!(install(&env, &session, &["New"]).result_code, Succeeded);
    assert_found(&searcher, "", &["Unrelated"]);
    let (_, explanations) = searcher.explain("").unwrap();
    assert_eq!(
        explanations[0].verdict,
        Verdict::Superseded {
            by: env.id("New"),
            by_title: "New".into(),
            by_installed: true
        }
    );
    assert!(
        explanations[0]
            .verdict
            .to_string()
            .ends_with("which is installed"),
        "{}",
        explanations[0].verdict
    );

    // The old update installed too (say, before the new one was published): a superseded
    // update that is installed is still found, so it can be uninstalled.
    assert_eq!(install(&env, &session, &["Old"]).result_code, Succeeded);
    assert_found(&searcher, "IsInstalled = 1", &["Old", "New"]);
    assert_found(&searcher, "", &["Unrelated"]);
}

// 6. Bundles and catalog validation ---------------------------------------------------------

fn bundle_fixture() -> Env {
    Fixture::new()
        .update(UpdateSpec::files("Part A").file("opt/bundle/a", "a\n"))
        .update(UpdateSpec::files("Part B").file("opt/bundle/b", "b\n"))
        .update(
            UpdateSpec::files("Bundle")
                .file("opt/bundle/own", "own\n")
                .set("bundled_updates", json!([fixture_id(0), fixture_id(1)])),
        )
        .update(UpdateSpec::files("Good part").file("opt/broken/good", "good\n"))
        .update(UpdateSpec::command("Bad part", cmd("fail.sh", &[])).script("fail.sh", "exit 3"))
        .update(
            UpdateSpec::files("Broken bundle")
                .file("opt/broken/own", "own\n")
                .set("bundled_updates", json!([fixture_id(3), fixture_id(4)])),
        )
        .build()
}

/// The newest `n` history entries as (title, operation, result).
fn recent(session: &UpdateSession, n: i64) -> Vec<(String, UpdateOperation, OperationResultCode)> {
    session
        .query_history(0, n)
        .unwrap()
        .into_iter()
        .map(|e| (e.title, e.operation, e.result_code))
        .collect()
}

#[test]
fn bundles_are_returned_instead_of_their_parts_and_install_parts_first() {
    use UpdateOperation::{Installation, Uninstallation};

    let env = bundle_fixture();
    let session = env.session();
    let searcher = session.create_update_searcher();
    assert_found(&searcher, "", &["Bundle", "Broken bundle"]);
    // Not even by id.
    assert_found(
        &searcher,
        &format!("UpdateID = '{}'", env.id("Part A")),
        &[],
    );

    let result = searcher.search("").unwrap();
    let bundle = pick(&result.updates, "Bundle");
    let parts = bundle.bundled_updates();
    assert!(parts.is_read_only());
    assert_eq!(titles(&parts), ["Part A", "Part B"]);
    assert_eq!(
        bundle.max_download_size(),
        bundle.payload().size + parts.iter().map(|p| p.payload().size).sum::<u64>()
    );
    assert!(bundle.is_downloaded());
    let (_, explanations) = searcher.explain("").unwrap();
    assert_eq!(
        explanations[1].verdict,
        Verdict::Bundled {
            parent: env.id("Bundle"),
            parent_title: "Bundle".into()
        }
    );

    // Installing: the parts in order, then the bundle; each with its own history entry.
    let mut installer = session.create_update_installer();
    installer.set_updates(&UpdateCollection::from_iter([bundle.clone()]));
    let installed = installer.install().unwrap();
    assert_eq!(installed.result_code, Succeeded, "{installed:?}");
    assert_eq!(installed.update_results.len(), 1);
    for (path, content) in [("a", "a\n"), ("b", "b\n"), ("own", "own\n")] {
        assert_eq!(
            read(&env.in_root(&format!("opt/bundle/{path}"))).as_deref(),
            Some(content)
        );
    }
    assert_eq!(
        recent(&session, 3),
        [
            ("Bundle".into(), Installation, Succeeded),
            ("Part B".into(), Installation, Succeeded),
            ("Part A".into(), Installation, Succeeded),
        ]
    );
    assert_eq!(
        titles(&session.installed_updates().unwrap()),
        ["Part A", "Part B", "Bundle"]
    );
    assert_found(&searcher, "IsInstalled = 1", &["Bundle"]);

    // Installing it again installs nothing.
    let again = installer.install().unwrap();
    assert_eq!(again.result_code, Succeeded);
    assert_eq!(again.update_results[0].hresult, WU_S_ALREADY_INSTALLED);
    assert_eq!(session.get_total_history_count().unwrap(), 3);

    // Uninstalling: the bundle, then the parts in reverse.
    let installed_now = searcher.search("IsInstalled = 1").unwrap();
    installer.set_updates(&installed_now.updates.copy());
    let removed = installer.uninstall().unwrap();
    assert_eq!(removed.result_code, Succeeded, "{removed:?}");
    assert_eq!(
        recent(&session, 3),
        [
            ("Part A".into(), Uninstallation, Succeeded),
            ("Part B".into(), Uninstallation, Succeeded),
            ("Bundle".into(), Uninstallation, Succeeded),
        ]
    );
    assert!(env.root_snapshot().is_empty(), "{:?}", env.root_snapshot());
    assert!(session.installed_updates().unwrap().is_empty());
    // Uninstalling it again removes nothing.
    let again = installer.uninstall().unwrap();
    assert_eq!(again.result_code, Succeeded);
    assert_eq!(again.update_results[0].hresult, WU_S_ALREADY_UNINSTALLED);
    assert_eq!(session.get_total_history_count().unwrap(), 6);
}

#[test]
fn a_failing_part_fails_its_bundle_before_the_bundle_payload() {
    let env = bundle_fixture();
    let session = env.session();
    let result = install(&env, &session, &["Broken bundle"]);
    assert_eq!(result.result_code, Failed, "{result:?}");
    assert_eq!(result.update_results[0].result_code, Failed);
    assert_eq!(result.update_results[0].hresult, WU_E_UH_INSTALLERFAILURE);
    assert!(!env.in_root("opt/broken/own").exists());
    // Parts done before the failing one stay done (docs/catalog-format.md 2.9).
    assert_eq!(
        read(&env.in_root("opt/broken/good")).as_deref(),
        Some("good\n")
    );
    let history = session.query_history(0, 2).unwrap();
    assert_eq!(
        (history[0].title.as_str(), history[0].result_code),
        ("Bad part", Failed)
    );
    assert_eq!(
        (history[1].title.as_str(), history[1].result_code),
        ("Good part", Succeeded)
    );
    assert_eq!(titles(&session.installed_updates().unwrap()), ["Good part"]);
    assert_found(&session.create_update_searcher(), "IsInstalled = 1", &[]);
}

#[test]
fn a_bundle_that_does_not_apply_installs_none_of_its_parts() {
    let env = Fixture::new()
        .update(plain("Loose part"))
        .update(
            gated("Gated bundle", json!({ "file_exists": "etc/absent" }))
                .set("bundled_updates", json!([fixture_id(0)])),
        )
        .build();
    let session = env.session();
    assert_found(&session.create_update_searcher(), "", &[]);
    let result = install(&env, &session, &["Gated bundle"]);
    assert_eq!(result.result_code, Failed, "{result:?}");
    assert_eq!(result.update_results[0].hresult, WU_E_NOT_APPLICABLE);
    assert!(env.root_snapshot().is_empty(), "{:?}", env.root_snapshot());
    assert!(session.installed_updates().unwrap().is_empty());
    let history = session.query_history(0, 10).unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(
        (history[0].title.as_str(), history[0].hresult),
        ("Gated bundle", WU_E_NOT_APPLICABLE)
    );

    // Once it applies, its part is installed first as usual.
    env.write_in_root("etc/absent", "");
    let session = env.session();
    assert_found(&session.create_update_searcher(), "", &["Gated bundle"]);
    assert_eq!(
        install(&env, &session, &["Gated bundle"]).result_code,
        Succeeded
    );
    assert_eq!(
        titles(&session.installed_updates().unwrap()),
        ["Loose part", "Gated bundle"]
    );
}

#[test]
fn a_part_with_unaccepted_terms_refuses_its_whole_bundle() {
    let env = Fixture::new()
        .update(plain("Free part"))
        .update(plain("Licensed part").set("eula_text", json!("Terms.")))
        .update(plain("Terms bundle").set("bundled_updates", json!([fixture_id(0), fixture_id(1)])))
        .build();
    let session = env.session();
    let result = session.create_update_searcher().search("").unwrap();
    let bundle = pick(&result.updates, "Terms bundle").clone();
    assert!(bundle.eula_accepted(), "the bundle itself has no terms");
    let mut installer = session.create_update_installer();
    // Alone, the bundle counts as unaccepted: the call fails as a whole (DIGEST §10.7).
    installer.set_updates(&UpdateCollection::from_iter([bundle.clone()]));
    let whole = installer.install().unwrap_err();
    assert_eq!(whole.hresult(), WU_E_EULAS_DECLINED, "{whole}");
    // With an accepted update beside it, the bundle fails on its own, before any part runs.
    let free = pick(&session.catalog_updates().unwrap(), "Free part").clone();
    installer.set_updates(&UpdateCollection::from_iter([bundle.clone(), free]));
    let refused = installer.install().unwrap();
    assert_eq!(
        refused.result_code,
        OperationResultCode::SucceededWithErrors
    );
    assert_eq!(refused.update_results[0].hresult, WU_E_EULAS_DECLINED);
    assert_eq!(
        titles(&session.installed_updates().unwrap()),
        ["Free part"],
        "no part of the refused bundle is installed"
    );

    bundle
        .bundled_updates()
        .get(1)
        .unwrap()
        .accept_eula()
        .unwrap();
    assert_eq!(installer.install().unwrap().result_code, Succeeded);
    assert_eq!(
        titles(&session.installed_updates().unwrap()),
        ["Free part", "Licensed part", "Terms bundle"]
    );
}

#[test]
fn invalid_relationships_are_refused_by_the_catalog() {
    let refused = |fixture: Fixture, needle: &str| {
        let e = match fixture.try_build() {
            Ok(_) => panic!("the catalog must be refused ({needle})"),
            Err(e) => e,
        };
        assert_eq!(e.hresult(), WU_E_INVALID_RELATIONSHIP, "{e}");
        assert!(e.to_string().contains(needle), "{needle}: {e}");
    };
    // A bundle naming an update the catalog does not have.
    refused(
        Fixture::new().update(plain("Lonely").set("bundled_updates", json!([fixture_id(5)]))),
        "which is not in the catalog",
    );
    // A bundle of bundles.
    refused(
        Fixture::new()
            .update(plain("Leaf"))
            .update(plain("Inner").set("bundled_updates", json!([fixture_id(0)])))
            .update(plain("Outer").set("bundled_updates", json!([fixture_id(1)]))),
        "which is a bundle itself",
    );
    // is_installed rules that depend on each other.
    refused(
        Fixture::new()
            .update(plain("Chicken").set(
                "applicability",
                json!({ "is_installed": { "update_installed": fixture_id(1) } }),
            ))
            .update(plain("Egg").set(
                "applicability",
                json!({ "is_installed": { "any": [
                    { "file_exists": "etc/egg" },
                    { "update_installed": fixture_id(0) }
                ] } }),
            )),
        "cycle",
    );
    // A rule naming its own update.
    refused(
        Fixture::new().update(plain("Ouroboros").set(
            "applicability",
            json!({ "is_installed": { "not": { "update_installed": fixture_id(0) } } }),
        )),
        "cycle",
    );

    // The same checks when a session opens a catalog edited after it was built.
    let env = Fixture::new().update(plain("Fine")).build();
    edit_catalog(&env, |json| {
        json["updates"][0]["bundled_updates"] = json!([fixture_id(9)]);
    });
    assert_eq!(
        code(UpdateSession::open(env.config())),
        WU_E_INVALID_RELATIONSHIP
    );
}

#[test]
fn a_version_1_catalog_still_opens() {
    let env = Fixture::new()
        .update(plain("Old format").set("superseded_update_ids", json!([fixture_id(1)])))
        .update(plain("Older"))
        .build();
    edit_catalog(&env, |json| json["format_version"] = json!(1));
    let session = env.session();
    let searcher = session.create_update_searcher();
    assert_found(&searcher, "", &["Old format"]);
    let update = pick(&session.catalog_updates().unwrap(), "Old format").clone();
    assert!(update.is_installable() && !update.browse_only() && update.is_assigned());
    assert!(update.bundled_updates().is_empty());
    assert_eq!(
        install(&env, &session, &["Old format"]).result_code,
        Succeeded
    );

    // A version-1 file cannot use version-2 fields.
    edit_catalog(&env, |json| json["updates"][1]["browse_only"] = json!(true));
    assert_eq!(code(UpdateSession::open(env.config())), WU_E_INVALID_FILE);
}

// 7. Warnings -------------------------------------------------------------------------------

#[test]
fn a_rule_that_cannot_be_evaluated_is_a_warning_and_leaves_the_update_out() {
    // A symbolic-link loop cannot be looked at, even by root.
    let loop_rule = json!({ "file_exists": "etc/loop" });
    let env = Fixture::new()
        .update(gated("Unknowable", loop_rule.clone()))
        .update(plain("Twice unknowable").set(
            "applicability",
            json!({ "is_installed": { "file_sha256": { "path": "etc/loop", "sha256": HELLO_SHA256 } },
                    "is_installable": loop_rule }),
        ))
        .update(plain("Fine"))
        .build();
    fs::create_dir_all(env.in_root("etc")).unwrap();
    symlink("loop", env.in_root("etc/loop")).unwrap();
    let session = env.session();
    let searcher = session.create_update_searcher();

    let check = |result: wua::SearchResult| {
        assert_eq!(result.result_code, SucceededWithErrors);
        assert_eq!(titles(&result.updates), ["Fine"]);
        // One warning per update, however many of its rules failed.
        assert_eq!(result.warnings.len(), 2, "{:?}", result.warnings);
        for (warning, title) in result
            .warnings
            .iter()
            .zip(["Unknowable", "Twice unknowable"])
        {
            assert_eq!(warning.context, UpdateExceptionContext::General);
            assert_eq!(warning.hresult, WU_E_UNEXPECTED);
            let id = env.id(title).to_string();
            assert!(
                warning.message.contains(&format!("update {id} ({title})")),
                "{}",
                warning.message
            );
            assert!(warning.message.contains("etc/loop"), "{}", warning.message);
        }
    };
    check(searcher.search("").unwrap());
    let job = searcher.begin_search("", NoCallback, ()).unwrap();
    check(searcher.end_search(&job).unwrap());

    let (result, explanations) = searcher.explain("").unwrap();
    check(result);
    match &explanations[0].verdict {
        Verdict::NotApplicable { reason } => {
            assert!(
                reason.starts_with("is_installable could not be evaluated: "),
                "{reason}"
            )
        }
        other => panic!("{other}"),
    }
}

#[test]
fn relationships_too_deep_to_evaluate_are_a_warning_for_the_updates_that_need_them() {
    // A chain of is_installed rules, each update detected as installed when the next one is,
    // the last by a file: 67 updates, deeper than detection follows (64 levels).
    const CHAIN: usize = 67;
    let fixture = (0..CHAIN).fold(Fixture::new(), |fx, i| {
        let rule = if i + 1 < CHAIN {
            json!({ "update_installed": fixture_id(i + 1) })
        } else {
            json!({ "file_exists": "etc/base" })
        };
        fx.update(
            plain(&format!("Link {i:02}")).set("applicability", json!({ "is_installed": rule })),
        )
    });
    let env = fixture.build();
    env.write_in_root("etc/base", "");
    let session = env.session();
    let searcher = session.create_update_searcher();
    let result = searcher.search("IsInstalled = 1").unwrap();
    // Links 3 and later reach the file within 64 levels, whichever update the search looked at
    // first; links 0 to 2 cannot, and each of them is named in a warning.
    let deep: Vec<String> = (3..CHAIN).map(|i| format!("Link {i:02}")).collect();
    assert_eq!(titles(&result.updates), deep);
    assert_eq!(result.result_code, SucceededWithErrors);
    let warned: Vec<bool> = (0..CHAIN)
        .map(|i| {
            let id = fixture_id(i).to_string();
            result.warnings.iter().any(|w| w.message.contains(&id))
        })
        .collect();
    assert_eq!(
        warned.iter().filter(|w| **w).count(),
        3,
        "{:?}",
        result.warnings
    );
    assert!(warned[..3].iter().all(|w| *w), "{:?}", result.warnings);
    for w in &result.warnings {
        assert_eq!(w.hresult, WU_E_TOO_DEEP_RELATION);
    }
    let (_, explanations) = searcher.explain("IsInstalled = 1").unwrap();
    assert_eq!(
        explanations[0].verdict,
        Verdict::CriteriaNotMet {
            unmet: vec![
                "IsInstalled = 1: it is not installed: is_installed: update relationships too \
                 deep to evaluate (more than 64 levels of update_installed rules)"
                    .into()
            ]
        }
    );
}

// 8. explain --------------------------------------------------------------------------------

#[test]
fn explain_gives_every_verdict_with_its_reason() {
    let env = Fixture::new()
        .update(plain("Chosen"))
        .update(plain("Part"))
        .update(plain("Holder").set("bundled_updates", json!([fixture_id(1)])))
        .update(plain("Wrong type").set("type", json!("driver")))
        .update(plain("Uninstaller").set("deployment_action", json!("uninstallation")))
        .update(gated(
            "Inapplicable",
            json!({ "file_exists": "etc/absent" }),
        ))
        .update(plain("Older"))
        .update(plain("Newer").set("superseded_update_ids", json!([fixture_id(6)])))
        .update(gated("Guarded", json!({ "file_exists": "etc/present" })))
        .build();
    env.write_in_root("etc/present", "");
    let session = env.session();
    let searcher = session.create_update_searcher();
    let criteria = "Type = 'Software' or IsHidden = 1";
    let (result, explanations) = searcher.explain(criteria).unwrap();
    assert_eq!(
        titles(&result.updates),
        ["Chosen", "Holder", "Newer", "Guarded"]
    );
    // Every update of the catalog, in catalog order.
    let explained: Vec<&str> = explanations.iter().map(|e| e.update.title()).collect();
    assert_eq!(
        explained,
        [
            "Chosen",
            "Part",
            "Holder",
            "Wrong type",
            "Uninstaller",
            "Inapplicable",
            "Older",
            "Newer",
            "Guarded"
        ]
    );
    let verdict = |i: usize| explanations[i].verdict.clone();
    assert_eq!(
        verdict(0),
        Verdict::Selected {
            matched: "Type = 'Software'".into(),
            because: "applies everywhere (no is_installable rule)".into()
        }
    );
    assert_eq!(
        verdict(1),
        Verdict::Bundled {
            parent: env.id("Holder"),
            parent_title: "Holder".into()
        }
    );
    // One unmet criterion per AND-group, with what the update has instead.
    assert_eq!(
        verdict(3),
        Verdict::CriteriaNotMet {
            unmet: vec![
                "Type = 'Software': it is Driver".into(),
                "IsHidden = 1: it is not hidden".into()
            ]
        }
    );
    assert_eq!(
        verdict(4),
        Verdict::CriteriaNotMet {
            unmet: vec![
                "DeploymentAction = 'Installation' (implied): it is deployed for Uninstallation"
                    .into();
                2
            ]
        }
    );
    assert_eq!(
        verdict(5),
        Verdict::NotApplicable {
            reason: "file_exists etc/absent: not found".into()
        }
    );
    assert_eq!(
        verdict(6),
        Verdict::Superseded {
            by: env.id("Newer"),
            by_title: "Newer".into(),
            by_installed: false
        }
    );
    assert_eq!(
        verdict(8),
        Verdict::Selected {
            matched: "Type = 'Software'".into(),
            because: "file_exists etc/present: exists".into()
        }
    );
    // The printed forms name the same things.
    assert_eq!(
        verdict(3).to_string(),
        "left out by the criteria: Type = 'Software': it is Driver; or IsHidden = 1: it is not hidden"
    );
    assert_eq!(
        verdict(5).to_string(),
        "left out: does not apply: file_exists etc/absent: not found"
    );
    assert!(verdict(1).to_string().contains("bundled in \"Holder\""));
    assert!(
        verdict(6).to_string().contains("superseded by \"Newer\""),
        "{}",
        verdict(6)
    );
    assert!(
        verdict(0)
            .to_string()
            .starts_with("selected: matches Type = 'Software'")
    );
    // explain and search agree.
    assert_eq!(found(&searcher, criteria), titles(&result.updates));
}

// 9. Root categories ------------------------------------------------------------------------

#[test]
fn root_categories_list_each_catalog_category_once() {
    let tools = category(CAT_TOOLS, "Tools");
    let docs = category(CAT_DOCS, "Docs");
    let env = Fixture::new()
        .update(plain("One").set("categories", json!([tools.clone()])))
        .update(plain("Two").set("categories", json!([docs.clone(), tools.clone()])))
        .update(plain("Three").set("categories", json!([docs])))
        .update(plain("Four"))
        .update(
            gated("Five", json!({ "file_exists": "etc/absent" }))
                .set("categories", json!([category(CAT_EXTRA, "Extra"), tools])),
        )
        .build();
    let session = env.session();
    let searcher = session.create_update_searcher();
    let want: Vec<(Uuid, String)> = vec![
        (CAT_TOOLS.parse().unwrap(), "Tools".into()),
        (CAT_DOCS.parse().unwrap(), "Docs".into()),
        (CAT_EXTRA.parse().unwrap(), "Extra".into()),
    ];
    for criteria in [
        "",
        "IsInstalled = 1",
        &format!("CategoryIDs contains '{CAT_DOCS}'"),
    ] {
        let result = searcher.search(criteria).unwrap();
        let got: Vec<(Uuid, String)> = result
            .root_categories
            .iter()
            .map(|c| (c.id, c.name.clone()))
            .collect();
        assert_eq!(got, want, "{criteria}");
    }
    assert_found(
        &searcher,
        &format!("CategoryIDs contains '{CAT_DOCS}'"),
        &["Two", "Three"],
    );
}

#[test]
fn uninstalling_a_bundle_keeps_parts_another_installed_bundle_lists() {
    let env = Fixture::new()
        .update(plain("Shared part"))
        .update(plain("Own part"))
        .update(plain("First bundle").set("bundled_updates", json!([fixture_id(0), fixture_id(1)])))
        .update(plain("Second bundle").set("bundled_updates", json!([fixture_id(0)])))
        .build();
    let session = env.session();
    let found = session.create_update_searcher().search("").unwrap();
    assert_eq!(titles(&found.updates), ["First bundle", "Second bundle"]);
    let mut installer = session.create_update_installer();
    installer.set_updates(&found.updates);
    assert_eq!(installer.install().unwrap().result_code, Succeeded);

    // Taken from the installed updates, as `wua uninstall` does: they carry their parts too.
    let installed = session.installed_updates().unwrap();
    let first = pick(&installed, "First bundle").clone();
    assert_eq!(
        titles(&first.bundled_updates()),
        ["Shared part", "Own part"]
    );
    installer.set_updates(&UpdateCollection::from_iter([first]));
    assert_eq!(installer.uninstall().unwrap().result_code, Succeeded);
    assert_eq!(
        titles(&session.installed_updates().unwrap()),
        ["Shared part", "Second bundle"],
        "the part the second bundle needs stays installed"
    );
    assert!(env.in_root("opt/shared-part").exists());
    assert!(!env.in_root("opt/own-part").exists());
}

#[test]
fn one_session_sees_machine_changes_between_searches() {
    // Searches reuse detection answers while nothing a rule looked at has changed: every kind
    // of change a rule depends on must show in the next search of the same session.
    let env = Fixture::new()
        .update(gated("Needs marker", json!({ "file_exists": "etc/marker" })))
        .update(gated(
            "Needs Debian 13",
            json!({ "os_release": { "field": "VERSION_ID", "op": ">=", "value": "13" } }),
        ))
        .update(gated(
            "Needs libdemo 2",
            json!({ "package": { "name": "libdemo", "op": ">=", "version": "2.0" } }),
        ))
        .update(gated(
            "Needs version 5",
            json!({ "file_version": { "path": "opt/app/VERSION", "pattern": "^(\\S+)$", "op": ">=", "version": "5" } }),
        ))
        .build();
    let session = env.session();
    let searcher = session.create_update_searcher();
    let found = || titles(&searcher.search("").unwrap().updates);
    // Nothing the rules look at exists yet, so the answers are settled and the second search
    // reuses them; a file appearing must still show.
    assert!(found().is_empty(), "{:?}", found());
    assert!(
        found().is_empty(),
        "a repeated search gives the same answer"
    );
    env.write_in_root("opt/app/VERSION", "5\n");
    assert_eq!(found(), ["Needs version 5"]);
    fs::remove_file(env.in_root("opt/app/VERSION")).unwrap();
    assert!(found().is_empty(), "{:?}", found());

    env.write_in_root("etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n");
    env.write_in_root(
        "var/lib/dpkg/status",
        "Package: libdemo\nStatus: install ok installed\nVersion: 1.9\nArchitecture: amd64\n",
    );
    env.write_in_root("opt/app/VERSION", "4\n");
    assert!(found().is_empty(), "{:?}", found());
    assert!(
        found().is_empty(),
        "a repeated search gives the same answer"
    );

    env.write_in_root("etc/marker", "");
    assert_eq!(found(), ["Needs marker"]);
    env.write_in_root("etc/os-release", "ID=debian\nVERSION_ID=\"13\"\n");
    assert_eq!(found(), ["Needs marker", "Needs Debian 13"]);
    env.write_in_root(
        "var/lib/dpkg/status",
        "Package: libdemo\nStatus: install ok installed\nVersion: 2.1\nArchitecture: amd64\n",
    );
    assert_eq!(
        found(),
        ["Needs marker", "Needs Debian 13", "Needs libdemo 2"]
    );
    env.write_in_root("opt/app/VERSION", "5\n");
    assert_eq!(
        found(),
        [
            "Needs marker",
            "Needs Debian 13",
            "Needs libdemo 2",
            "Needs version 5"
        ]
    );
    fs::remove_file(env.in_root("etc/marker")).unwrap();
    assert_eq!(
        found(),
        ["Needs Debian 13", "Needs libdemo 2", "Needs version 5"]
    );
}

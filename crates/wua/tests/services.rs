//! `IUpdateServiceManager`, `ServerSelection`/`ServiceID`/`Online` on the searcher, and the
//! downloader and installer reading a signed service (a TUF repository in a directory, so no
//! network), through the library API.

mod common;

use std::path::PathBuf;

use common::Fixture;
use wua::hresult::*;
use wua::repository::author::{self, InitOptions, PublishOptions};
use wua::service::{ServerSelection, ServiceSource};
use wua::{AgentConfig, OperationResultCode, UpdateSession};

/// A signed repository publishing a two-update catalog, and a machine with no service yet.
struct Setup {
    env: common::Env,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let env = Fixture::new()
            .files_update("Alpha", &[("opt/alpha", "a")])
            .files_update("Beta", &[("opt/beta", "b")])
            .build();
        let dir = tempfile::tempdir().unwrap();
        let setup = Setup { env, dir };
        author::generate_keys(&setup.keys()).unwrap();
        author::init_repository(&setup.repo(), &setup.keys(), &InitOptions::from_now()).unwrap();
        author::publish(
            &setup.repo(),
            &setup.keys(),
            &setup.env.catalog_dir(),
            &PublishOptions::from_now(),
        )
        .unwrap();
        setup
    }

    fn keys(&self) -> PathBuf {
        self.dir.path().join("keys")
    }

    fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    fn trusted_root(&self) -> PathBuf {
        self.repo().join("metadata/1.root.json")
    }

    /// A session reading the registered services (no catalog directory).
    fn session(&self) -> UpdateSession {
        let config = AgentConfig {
            boot_id_file: self.env.config().boot_id_file,
            ..AgentConfig::with_services(self.env.root(), self.dir.path().join("state"))
        };
        UpdateSession::open(config).unwrap()
    }

    fn add(&self, session: &UpdateSession, name: &str) -> wua::service::UpdateService {
        session
            .create_update_service_manager()
            .add_service(
                name,
                ServiceSource::Directory(self.repo()),
                &self.trusted_root(),
            )
            .unwrap()
    }
}

#[test]
fn services_are_added_listed_made_default_and_removed() {
    let s = Setup::new();
    let session = s.session();
    let manager = session.create_update_service_manager();
    assert!(manager.services().unwrap().is_empty());
    let first = s.add(&session, "first");
    assert!(
        first.is_default_au_service,
        "the first service is the default"
    );
    assert!(!first.is_scan_package_service);
    assert_eq!(first.content_validation_cert.len(), 64);
    let second = s.add(&session, "second");
    assert!(!second.is_default_au_service);

    let dup = manager
        .add_service(
            "first",
            ServiceSource::Directory(s.repo()),
            &s.trusted_root(),
        )
        .unwrap_err();
    assert_eq!(dup.hresult(), WU_E_DUPLICATE_ITEM);

    let chosen = manager.register_service_with_au("second").unwrap();
    assert!(chosen.is_default_au_service);
    assert!(!manager.find("first").unwrap().is_default_au_service);

    // Removing the default makes the oldest remaining one the default.
    manager
        .remove_service(&second.service_id.to_string())
        .unwrap();
    let left = manager.services().unwrap();
    assert_eq!(left.len(), 1);
    assert!(left[0].is_default_au_service);
    assert_eq!(
        manager.remove_service("second").unwrap_err().hresult(),
        WU_E_UNKNOWN_SERVICE
    );
    // Registrations persist across sessions.
    assert_eq!(
        s.session()
            .create_update_service_manager()
            .services()
            .unwrap(),
        left
    );
}

#[test]
fn a_root_that_is_not_a_tuf_root_is_refused() {
    let s = Setup::new();
    let session = s.session();
    let bogus = s.dir.path().join("bogus.json");
    std::fs::write(&bogus, b"{\"signed\": {}, \"signatures\": []}").unwrap();
    let err = session
        .create_update_service_manager()
        .add_service("x", ServiceSource::Directory(s.repo()), &bogus)
        .unwrap_err();
    assert!(err.hresult().is_failure());
    assert!(err.to_string().contains("bogus.json"), "{err}");
    assert!(
        session
            .create_update_service_manager()
            .services()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn the_searcher_chooses_its_service_by_server_selection() {
    let s = Setup::new();
    let session = s.session();
    // No service: the default search has nowhere to go.
    let err = session.create_update_searcher().search("").unwrap_err();
    assert_eq!(err.hresult(), WU_E_NO_SERVICE);

    let service = s.add(&session, "corp");
    let mut searcher = session.create_update_searcher();
    assert_eq!(searcher.server_selection(), ServerSelection::Default);
    // Offline before the first refresh: nothing verified to read.
    searcher.set_online(false);
    assert_eq!(
        searcher.search("").unwrap_err().hresult(),
        WU_E_NO_CONNECTION
    );
    searcher.set_online(true);
    let found = searcher.search("").unwrap();
    assert_eq!(common::titles(&found.updates), ["Alpha", "Beta"]);
    assert!(found.updates.iter().all(|u| !u.is_downloaded()));
    assert_eq!(
        found.updates.get(0).unwrap().service_id(),
        Some(service.service_id)
    );

    searcher.set_server_selection(ServerSelection::Others);
    assert_eq!(searcher.search("").unwrap_err().hresult(), E_INVALIDARG);
    searcher.set_service_id(uuid::Uuid::new_v4().to_string());
    assert_eq!(
        searcher.search("").unwrap_err().hresult(),
        WU_E_UNKNOWN_SERVICE
    );
    searcher.set_service_id(service.service_id.to_string());
    assert_eq!(searcher.search("").unwrap().updates.len(), 2);
    // Offline now works: the metadata was verified and stored.
    searcher.set_online(false);
    assert_eq!(searcher.search("").unwrap().updates.len(), 2);
    assert_eq!(
        s.session()
            .create_update_searcher()
            .search("")
            .unwrap()
            .updates
            .len(),
        2
    );
}

#[test]
fn updates_install_only_after_their_download() {
    let s = Setup::new();
    let session = s.session();
    s.add(&session, "corp");
    let found = session.create_update_searcher().search("").unwrap();

    // Not downloaded: the installer fails each update with the documented code (DIGEST §10.6)
    // and installs nothing.
    let mut installer = session.create_update_installer();
    installer.set_updates(&found.updates);
    let result = installer.install().unwrap();
    assert_eq!(result.result_code, OperationResultCode::Failed);
    assert!(
        result
            .update_results
            .iter()
            .all(|r| r.hresult == WU_E_DM_NOTDOWNLOADED),
        "{result:?}"
    );
    assert!(!s.env.in_root("opt/alpha").exists());

    let mut downloader = session.create_update_downloader();
    downloader.set_updates(&found.updates);
    let downloaded = downloader.download().unwrap();
    assert_eq!(downloaded.result_code, OperationResultCode::Succeeded);
    // The next search sees them downloaded (verified in the cache).
    let again = session.create_update_searcher().search("").unwrap();
    assert!(again.updates.iter().all(|u| u.is_downloaded()));
    let mut installer = session.create_update_installer();
    installer.set_updates(&again.updates);
    let result = installer.install().unwrap();
    assert_eq!(result.result_code, OperationResultCode::Succeeded);
    assert_eq!(
        std::fs::read_to_string(s.env.in_root("opt/alpha")).unwrap(),
        "a"
    );
    // History records where they came from.
    let history = session.query_history(0, 10).unwrap();
    let service = session
        .create_update_service_manager()
        .find("corp")
        .unwrap();
    assert!(
        history
            .iter()
            .filter(|e| e.result_code == OperationResultCode::Succeeded)
            .all(|e| e.service_id == service.service_id.to_string() && e.server_selection == 3)
    );
}

#[test]
fn a_catalog_directory_session_still_searches_its_directory_by_default() {
    let s = Setup::new();
    let session = UpdateSession::open(s.env.config()).unwrap();
    // A service registered in the same state does not change the default source.
    s.add(&session, "corp");
    let found = session.create_update_searcher().search("").unwrap();
    assert_eq!(found.updates.len(), 2);
    assert!(found.updates.iter().all(|u| u.service_id().is_none()));
    assert!(found.updates.iter().all(|u| u.is_downloaded()));
}

#[test]
fn a_payload_damaged_in_the_cache_is_evicted_and_downloaded_again() {
    let s = Setup::new();
    let session = s.session();
    s.add(&session, "corp");
    let found = session.create_update_searcher().search("").unwrap();
    let mut downloader = session.create_update_downloader();
    downloader.set_updates(&found.updates);
    downloader.download().unwrap();
    let alpha = session
        .create_update_searcher()
        .search(&format!("UpdateID = '{}'", s.env.id("Alpha")))
        .unwrap();
    let alpha = alpha.updates.get(0).unwrap().clone();
    assert!(alpha.is_downloaded());
    // Damage it after verification: same length, other bytes.
    let cached = alpha.catalog().unwrap().payload_path(alpha.payload());
    let mut bytes = std::fs::read(&cached).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&cached, &bytes).unwrap();

    let mut one = wua::UpdateCollection::new();
    one.add(alpha.clone()).unwrap();
    let mut installer = session.create_update_installer();
    installer.set_updates(&one);
    let result = installer.install().unwrap();
    assert_eq!(
        result.update_results[0].hresult,
        WU_E_UH_NEEDANOTHERDOWNLOAD
    );
    assert!(!cached.exists(), "the damaged file left the cache");
    assert!(!s.env.in_root("opt/alpha").exists());

    let again = session
        .create_update_searcher()
        .search(&format!("UpdateID = '{}'", s.env.id("Alpha")))
        .unwrap();
    assert!(!again.updates.get(0).unwrap().is_downloaded());
    let mut downloader = session.create_update_downloader();
    downloader.set_updates(&again.updates);
    assert_eq!(
        downloader.download().unwrap().result_code,
        OperationResultCode::Succeeded
    );
    let mut installer = session.create_update_installer();
    installer.set_updates(
        &session
            .create_update_searcher()
            .search(&format!("UpdateID = '{}'", s.env.id("Alpha")))
            .unwrap()
            .updates,
    );
    assert_eq!(
        installer.install().unwrap().result_code,
        OperationResultCode::Succeeded
    );
    assert_eq!(
        std::fs::read_to_string(s.env.in_root("opt/alpha")).unwrap(),
        "a"
    );
}

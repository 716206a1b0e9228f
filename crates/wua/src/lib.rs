//! # wua — the Windows Update Agent API's update model, in Rust
//!
//! A portable update agent: a session opens an agent's state (a catalog of updates, a target
//! root, a state directory), and an [`UpdateInstaller`] installs and uninstalls updates into the
//! root, synchronously or as asynchronous [`InstallationJob`]s that report progress and
//! completion to the caller's callbacks and hand back the caller's own state
//! ([`InstallationJob::async_state`]).
//!
//! ```no_run
//! use wua::{AgentConfig, NoCallback, UpdateSession};
//!
//! let session = UpdateSession::open(AgentConfig::new("/tmp/root", "/tmp/state", "examples/catalog"))?;
//! let found = session.create_update_searcher().search("IsInstalled = 0 and Type = 'Software'")?;
//! let mut installer = session.create_update_installer();
//! installer.set_updates(&found.updates);
//! let job = installer.begin_install(
//!     |job: &wua::InstallationJob<&str>, args: &wua::InstallationProgressChangedCallbackArgs| {
//!         println!("{}: {}%", job.async_state(), args.progress.percent_complete)
//!     },
//!     NoCallback,
//!     "nightly batch",
//! )?;
//! let result = installer.end_install(&job)?;
//! println!("{}", result.result_code);
//! # Ok::<(), wua::Error>(())
//! ```
//!
//! Updates come from signed update services — TUF repositories in a directory or over HTTPS,
//! registered with [`service::UpdateServiceManager`] — or, unsigned, from a catalog directory
//! (as above). [`download::UpdateDownloader`] fetches verified payloads into a cache before
//! they are installed.
//!
//! Modules follow WUA's object model: [`model`] (updates, collections, enums), [`hresult`] (every
//! WU_E_*/WU_S_* code), [`error`], [`session`], [`service`] (update services), [`search`]
//! (criteria, applicability, search jobs), [`rules`] (detection rules), [`download`],
//! [`install`], [`handlers`], [`catalog`], [`repository`] (signed catalogs: client and
//! publisher), [`net`], [`store`]. `docs/ARCHITECTURE.md` maps each WUA interface member to its
//! Rust item.

#![warn(missing_docs)]

pub mod catalog;
pub mod checkpoint;
pub mod download;
pub mod error;
pub mod handlers;
pub mod hresult;
pub mod install;
mod job;
mod lock;
pub mod model;
pub mod net;
pub mod repository;
pub mod rules;
pub mod search;
pub mod service;
pub mod session;
pub mod store;
pub mod transaction;

pub use catalog::{Catalog, UpdateDefinition};
pub use download::{
    DownloadCompletedCallback, DownloadCompletedCallbackArgs, DownloadJob, DownloadPhase,
    DownloadPriority, DownloadProgress, DownloadProgressChangedCallback,
    DownloadProgressChangedCallbackArgs, DownloadResult, UpdateDownloadResult, UpdateDownloader,
};
pub use error::{Error, Result};
pub use hresult::HResult;
pub use install::{
    CleanUp, InstallationCompletedCallback, InstallationCompletedCallbackArgs, InstallationJob,
    InstallationProgress, InstallationProgressChangedCallback,
    InstallationProgressChangedCallbackArgs, InstallationResult, NoCallback,
    UpdateInstallationResult, UpdateInstaller,
};
pub use model::{
    Category, DeploymentAction, InstallationBehavior, InstallationImpact,
    InstallationRebootBehavior, OperationResultCode, SearchScope, Update, UpdateCollection,
    UpdateExceptionContext, UpdateIdentity, UpdateOperation, UpdateType,
};
pub use search::{
    Explanation, SearchCompletedCallback, SearchCompletedCallbackArgs, SearchJob, SearchResult,
    UpdateException, UpdateSearcher, Verdict,
};
pub use session::{AgentConfig, SystemInformation, UpdateSession};
pub use store::UpdateHistoryEntry;

//! The agent's state: an embedded SQLite database (`wua.db`) in the state directory.
//!
//! It records installed updates with their file manifests, pending reboots (tied to the boot id,
//! so a real reboot clears them), accepted EULAs, and the update history that
//! `IUpdateSearcher::QueryHistory` reads. Every outcome of an install or uninstall is written in
//! one SQLite transaction with its history entry, so the database never shows half an operation.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::catalog::UpdateDefinition;
use crate::error::{Error, Result};
use crate::hresult::{
    HResult, WU_E_DUPLICATE_ITEM, WU_E_INVALID_FILE, WU_E_INVALIDINDEX, WU_E_UNEXPECTED,
};
use crate::model::{Category, OperationResultCode, UpdateIdentity, UpdateOperation};
use crate::service::{ServiceSource, UpdateService};

/// The database file name inside the state directory.
pub const DB_FILE: &str = "wua.db";
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS installed_updates (
    update_id TEXT PRIMARY KEY,
    revision_number INTEGER NOT NULL,
    title TEXT NOT NULL,
    install_seq INTEGER NOT NULL,
    installed_at TEXT NOT NULL,
    definition TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS installed_files (
    update_id TEXT NOT NULL REFERENCES installed_updates(update_id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    kind TEXT NOT NULL,
    sha256 TEXT,
    mode INTEGER NOT NULL,
    link_target TEXT,
    backup TEXT,
    PRIMARY KEY (update_id, path)
);
CREATE INDEX IF NOT EXISTS installed_files_by_path ON installed_files(path);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    operation INTEGER NOT NULL,
    result_code INTEGER NOT NULL,
    hresult INTEGER NOT NULL,
    unmapped_result_code INTEGER NOT NULL,
    date TEXT NOT NULL,
    update_id TEXT NOT NULL,
    revision_number INTEGER NOT NULL,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    client_application_id TEXT NOT NULL,
    server_selection INTEGER NOT NULL,
    service_id TEXT NOT NULL,
    support_url TEXT NOT NULL,
    uninstallation_notes TEXT NOT NULL,
    uninstallation_steps TEXT NOT NULL,
    categories TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pending_reboots (
    update_id TEXT PRIMARY KEY,
    boot_id TEXT NOT NULL,
    mandatory INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS transactions (
    txid TEXT PRIMARY KEY,
    committed_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS eula_acceptances (
    update_id TEXT NOT NULL,
    revision_number INTEGER NOT NULL,
    accepted_by TEXT NOT NULL,
    accepted_at TEXT NOT NULL,
    PRIMARY KEY (update_id, revision_number)
);
CREATE TABLE IF NOT EXISTS services (
    service_id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    source_kind TEXT NOT NULL,
    location TEXT NOT NULL,
    is_default INTEGER NOT NULL,
    is_scan_package INTEGER NOT NULL,
    issue_date TEXT NOT NULL,
    content_validation_cert TEXT NOT NULL,
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS hidden_updates (
    update_id TEXT PRIMARY KEY,
    hidden_by TEXT NOT NULL,
    hidden_at TEXT NOT NULL
);
"#;

/// What kind of file-system object a manifest entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory the update created (directories that already existed are not recorded).
    Dir,
    /// A symbolic link.
    Symlink,
}

impl EntryKind {
    fn as_str(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Dir => "dir",
            EntryKind::Symlink => "symlink",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "file" => EntryKind::File,
            "dir" => EntryKind::Dir,
            "symlink" => EntryKind::Symlink,
            _ => return None,
        })
    }
}

/// One path an installed update put into the target root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Path relative to the target root, `/`-separated.
    pub path: String,
    /// What was installed there.
    pub kind: EntryKind,
    /// SHA-256 of the installed content (files only).
    pub sha256: Option<String>,
    /// Permission bits installed.
    pub mode: u32,
    /// Link target (symlinks only).
    pub link_target: Option<String>,
    /// Where the object this update replaced is kept, relative to the backups directory; `None`
    /// when the path did not exist before.
    pub backup: Option<String>,
}

/// An update installed by wua, as the store knows it.
#[derive(Clone, Debug)]
pub struct InstalledUpdate {
    /// The definition it was installed from (kept so it can be uninstalled without the catalog).
    pub definition: UpdateDefinition,
    /// When it was installed.
    pub installed_at: Timestamp,
    /// Order of first installation (larger is later); a forced reinstall keeps its place.
    pub install_seq: i64,
    /// What it put into the root.
    pub files: Vec<ManifestEntry>,
}

/// `IUpdateHistoryEntry` (+`IUpdateHistoryEntry2.Categories`): one recorded operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpdateHistoryEntry {
    /// `Operation`.
    pub operation: UpdateOperation,
    /// `ResultCode`.
    pub result_code: OperationResultCode,
    /// `HResult`: the mapped code.
    pub hresult: HResult,
    /// `UnmappedResultCode`: the raw code, e.g. a command's exit status.
    pub unmapped_result_code: i32,
    /// `Date`.
    pub date: Timestamp,
    /// `UpdateIdentity`.
    pub update_identity: UpdateIdentity,
    /// `Title`.
    pub title: String,
    /// `Description`.
    pub description: String,
    /// `ClientApplicationID`.
    pub client_application_id: String,
    /// `ServerSelection` (0 = `ssDefault`: the agent's configured catalog).
    pub server_selection: i32,
    /// `ServiceID` (empty for the default catalog).
    pub service_id: String,
    /// `SupportUrl`.
    pub support_url: String,
    /// `UninstallationNotes`.
    pub uninstallation_notes: String,
    /// `UninstallationSteps`.
    pub uninstallation_steps: Vec<String>,
    /// `Categories`.
    pub categories: Vec<Category>,
}

/// What an uninstall passes on to another installed update (see `handlers::files`).
#[derive(Clone, Debug)]
pub(crate) enum Handover {
    /// A later update replaced this path: its backup becomes the one the uninstalled update
    /// had (`None`: the path did not exist before either).
    Backup {
        to_update: Uuid,
        path: String,
        backup: Option<String>,
    },
    /// A directory the uninstalled update created still holds another update's files: that
    /// update now owns it, so the directory goes when the last of them is uninstalled.
    Dir {
        to_update: Uuid,
        entry: ManifestEntry,
    },
}

/// The agent's database. Safe to share between threads; several processes may open the same
/// file (WAL mode, with a busy timeout).
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    boot_id: String,
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if needed) the database in `state_dir`. `boot_id` identifies the current
    /// boot; reboots recorded under another boot id are considered done.
    pub fn open(state_dir: &Path, boot_id: impl Into<String>) -> Result<Store> {
        std::fs::create_dir_all(state_dir)
            .map_err(|e| Error::io("cannot create state directory", state_dir, e))?;
        let path = state_dir.join(DB_FILE);
        let conn = Connection::open(&path).map_err(|e| db_error(&path, e))?;
        let store = Store {
            path,
            boot_id: boot_id.into(),
            conn: Mutex::new(conn),
        };
        store.init()?;
        Ok(store)
    }

    fn init(&self) -> Result<()> {
        let conn = self.conn();
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(|e| db_error(&self.path, e))?;
        // WAL is a property of the database file, set once. Switching needs an exclusive lock
        // that SQLite does not wait for (the busy handler is not called), so when several
        // processes open a new database at once, retry for a while.
        let mut attempts = 0;
        loop {
            let mode: rusqlite::Result<String> =
                conn.query_row("PRAGMA journal_mode", [], |r| r.get(0));
            let result = match mode {
                Ok(m) if m.eq_ignore_ascii_case("wal") => Ok(()),
                Ok(_) => conn
                    .query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0))
                    .map(|_| ()),
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => break,
                Err(rusqlite::Error::SqliteFailure(f, _))
                    if matches!(
                        f.code,
                        rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                    ) && attempts < 3000 =>
                {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => return Err(db_error(&self.path, e)),
            }
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| db_error(&self.path, e))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(|e| db_error(&self.path, e))?;
        conn.execute_batch(SCHEMA)
            .map_err(|e| db_error(&self.path, e))?;
        let version: Option<String> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| db_error(&self.path, e))?;
        match version.as_deref().map(str::parse::<i64>) {
            None => {
                conn.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?1)",
                    [SCHEMA_VERSION.to_string()],
                )
                .map_err(|e| db_error(&self.path, e))?;
            }
            Some(Ok(SCHEMA_VERSION)) => {}
            Some(other) => {
                return Err(Error::code(
                    WU_E_UNEXPECTED,
                    format!(
                        "the agent database {} has schema version {:?}, which this wua does not know; use the wua that wrote it or a newer one",
                        self.path.display(),
                        other.ok()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the connection cannot leave SQLite inconsistent (statements are
        // atomic and transactions roll back on drop), so a poisoned lock is safe to reuse.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>) -> Result<T> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| db_error(&self.path, e))?;
        let value = f(&tx).map_err(|e| db_error(&self.path, e))?;
        tx.commit().map_err(|e| db_error(&self.path, e))?;
        Ok(value)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The boot id this store compares pending reboots against.
    pub fn boot_id(&self) -> &str {
        &self.boot_id
    }

    /// Every installed update, oldest first, with its manifest.
    pub fn installed_updates(&self) -> Result<Vec<InstalledUpdate>> {
        let conn = self.conn();
        let ids: Vec<String> = (|| {
            let mut stmt =
                conn.prepare("SELECT update_id FROM installed_updates ORDER BY install_seq")?;
            stmt.query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()
        })()
        .map_err(|e| db_error(&self.path, e))?;
        ids.iter()
            .filter_map(|id| Uuid::parse_str(id).ok())
            .map(|id| {
                Ok(self
                    .installed_update_with(&conn, id)?
                    .expect("listed just now"))
            })
            .collect()
    }

    /// The identities (id and revision) of every installed update.
    pub fn installed_identities(&self) -> Result<std::collections::HashSet<UpdateIdentity>> {
        let conn = self.conn();
        (|| {
            let mut stmt =
                conn.prepare("SELECT update_id, revision_number FROM installed_updates")?;
            stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i32>(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })()
        .map(|rows| {
            rows.into_iter()
                .filter_map(|(id, revision_number)| {
                    Some(UpdateIdentity {
                        update_id: Uuid::parse_str(&id).ok()?,
                        revision_number,
                    })
                })
                .collect()
        })
        .map_err(|e| db_error(&self.path, e))
    }

    /// The installed update with this id, if any.
    pub fn installed_update(&self, update_id: Uuid) -> Result<Option<InstalledUpdate>> {
        let conn = self.conn();
        self.installed_update_with(&conn, update_id)
    }

    fn installed_update_with(
        &self,
        conn: &Connection,
        update_id: Uuid,
    ) -> Result<Option<InstalledUpdate>> {
        let row: Option<(String, String, i64)> = conn
            .query_row(
                "SELECT definition, installed_at, install_seq FROM installed_updates WHERE update_id = ?1",
                [update_id.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(|e| db_error(&self.path, e))?;
        let Some((definition, installed_at, install_seq)) = row else {
            return Ok(None);
        };
        let definition: UpdateDefinition = serde_json::from_str(&definition).map_err(|e| {
            Error::code(
                WU_E_UNEXPECTED,
                format!(
                    "{}: the recorded definition of installed update {update_id} is unreadable: {e}",
                    self.path.display()
                ),
            )
        })?;
        let files = (|| {
            let mut stmt = conn.prepare(
                "SELECT path, kind, sha256, mode, link_target, backup FROM installed_files
                 WHERE update_id = ?1 ORDER BY rowid",
            )?;
            stmt.query_map([update_id.to_string()], |r| {
                let kind: String = r.get(1)?;
                Ok(ManifestEntry {
                    path: r.get(0)?,
                    kind: EntryKind::parse(&kind).unwrap_or(EntryKind::File),
                    sha256: r.get(2)?,
                    mode: r.get(3)?,
                    link_target: r.get(4)?,
                    backup: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })()
        .map_err(|e| db_error(&self.path, e))?;
        Ok(Some(InstalledUpdate {
            definition,
            installed_at: installed_at.parse().unwrap_or(Timestamp::UNIX_EPOCH),
            install_seq,
            files,
        }))
    }

    /// True when wua has installed this update.
    pub fn is_installed(&self, update_id: Uuid) -> Result<bool> {
        self.exists(
            "SELECT 1 FROM installed_updates WHERE update_id = ?1",
            [update_id.to_string()],
        )
    }

    /// Whether the query returns a row.
    fn exists(&self, sql: &str, params: impl rusqlite::Params) -> Result<bool> {
        self.conn()
            .query_row(sql, params, |_| Ok(()))
            .optional()
            .map(|o| o.is_some())
            .map_err(|e| db_error(&self.path, e))
    }

    /// Other installed updates that have `path` in their manifest, with their install order,
    /// oldest first.
    pub(crate) fn owners_of(&self, path: &str, except: Uuid) -> Result<Vec<(Uuid, i64)>> {
        let conn = self.conn();
        (|| {
            // Called once per path of an uninstall: keep the statement prepared.
            let mut stmt = conn.prepare_cached(
                "SELECT f.update_id, u.install_seq FROM installed_files f
                 JOIN installed_updates u ON u.update_id = f.update_id
                 WHERE f.path = ?1 AND f.update_id != ?2 ORDER BY u.install_seq",
            )?;
            stmt.query_map(params![path, except.to_string()], |r| {
                let id: String = r.get(0)?;
                Ok((Uuid::parse_str(&id).unwrap_or_default(), r.get(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })()
        .map_err(|e| db_error(&self.path, e))
    }

    /// Another installed update with something below the directory `dir`, if any.
    pub(crate) fn owner_below(&self, dir: &str, except: Uuid) -> Result<Option<Uuid>> {
        // Paths below `dir` sort between "dir/" and "dir0" ('0' follows '/'): a range the path
        // index answers without scanning the table.
        let (low, high) = (format!("{dir}/"), format!("{dir}0"));
        let conn = self.conn();
        (|| {
            let mut stmt = conn.prepare_cached(
                "SELECT update_id FROM installed_files
                 WHERE path >= ?1 AND path < ?2 AND update_id != ?3 LIMIT 1",
            )?;
            stmt.query_row(params![low, high, except.to_string()], |r| {
                r.get::<_, String>(0)
            })
            .optional()
        })()
        .map(|o| o.and_then(|id| Uuid::parse_str(&id).ok()))
        .map_err(|e| db_error(&self.path, e))
    }

    /// Records a successful install: the update, its manifest, what it passed on to other
    /// updates, its history entry and, when it needs one, its pending reboot — in one
    /// transaction.
    pub(crate) fn commit_install(
        &self,
        definition: &UpdateDefinition,
        files: &[ManifestEntry],
        handovers: &[Handover],
        history: &UpdateHistoryEntry,
        reboot: Option<bool>,
        txid: Uuid,
    ) -> Result<()> {
        let id = definition.identity.update_id.to_string();
        let json = serde_json::to_string(definition).expect("serialisable");
        self.write(|tx| {
            // A forced reinstall keeps its place in the install order: it keeps the backups of
            // its first install, and uninstall relies on the order to know whose backup holds
            // which earlier content of a path several updates installed.
            let seq: i64 = tx.query_row(
                "SELECT COALESCE(
                    (SELECT install_seq FROM installed_updates WHERE update_id = ?1),
                    (SELECT COALESCE(MAX(install_seq), 0) + 1 FROM installed_updates))",
                [&id],
                |r| r.get(0),
            )?;
            tx.execute(
                "INSERT OR REPLACE INTO installed_updates
                 (update_id, revision_number, title, install_seq, installed_at, definition)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    id,
                    definition.identity.revision_number,
                    definition.title,
                    seq,
                    history.date.to_string(),
                    json
                ],
            )?;
            tx.execute("DELETE FROM installed_files WHERE update_id = ?1", [&id])?;
            let mut stmt = tx.prepare(
                "INSERT INTO installed_files (update_id, path, kind, sha256, mode, link_target, backup)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for f in files {
                stmt.execute(params![
                    id,
                    f.path,
                    f.kind.as_str(),
                    f.sha256,
                    f.mode,
                    f.link_target,
                    f.backup
                ])?;
            }
            record_transaction(tx, txid)?;
            apply_handovers(tx, handovers)?;
            insert_history(tx, history)?;
            if let Some(mandatory) = reboot {
                self.insert_reboot(tx, &id, mandatory)?;
            }
            Ok(())
        })
    }

    /// Records a successful uninstall: removes the update and its manifest, moves backups that
    /// now belong to later owners, writes history and the pending reboot — in one transaction.
    pub(crate) fn commit_uninstall(
        &self,
        update_id: Uuid,
        handovers: &[Handover],
        history: &UpdateHistoryEntry,
        reboot: Option<bool>,
        txid: Uuid,
    ) -> Result<()> {
        let id = update_id.to_string();
        self.write(|tx| {
            record_transaction(tx, txid)?;
            apply_handovers(tx, handovers)?;
            tx.execute("DELETE FROM installed_files WHERE update_id = ?1", [&id])?;
            tx.execute("DELETE FROM installed_updates WHERE update_id = ?1", [&id])?;
            insert_history(tx, history)?;
            match reboot {
                Some(mandatory) => self.insert_reboot(tx, &id, mandatory)?,
                None => {
                    tx.execute("DELETE FROM pending_reboots WHERE update_id = ?1", [&id])?;
                }
            }
            Ok(())
        })
    }

    fn insert_reboot(
        &self,
        tx: &Transaction<'_>,
        id: &str,
        mandatory: bool,
    ) -> rusqlite::Result<()> {
        tx.execute(
            "INSERT OR REPLACE INTO pending_reboots (update_id, boot_id, mandatory, created_at)
             VALUES (?1, ?2, ?3, ?4)",
            params![id, self.boot_id, mandatory, Timestamp::now().to_string()],
        )?;
        Ok(())
    }

    /// Whether the file-system transaction `txid` was committed.
    pub(crate) fn transaction_committed(&self, txid: Uuid) -> Result<bool> {
        self.exists(
            "SELECT 1 FROM transactions WHERE txid = ?1",
            [txid.to_string()],
        )
    }

    /// Forgets a finished transaction.
    pub(crate) fn forget_transaction(&self, txid: Uuid) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM transactions WHERE txid = ?1",
                [txid.to_string()],
            )?;
            Ok(())
        })
    }

    /// Appends a history entry on its own (for failed or aborted operations).
    pub(crate) fn add_history(&self, entry: &UpdateHistoryEntry) -> Result<()> {
        self.write(|tx| insert_history(tx, entry))
    }

    /// `GetTotalHistoryCount()`.
    pub fn total_history_count(&self) -> Result<i64> {
        self.conn()
            .query_row("SELECT COUNT(*) FROM history", [], |r| r.get(0))
            .map_err(|e| db_error(&self.path, e))
    }

    /// `QueryHistory(startIndex, count)`: entries newest first. A negative `start` or a `count`
    /// below 1 is `WU_E_INVALIDINDEX` (`iupdatesearcher-queryhistory`); a range past the end
    /// gives what is there, possibly nothing (DIGEST §10.20).
    pub fn query_history(&self, start: i64, count: i64) -> Result<Vec<UpdateHistoryEntry>> {
        if start < 0 || count <= 0 {
            return Err(Error::code(
                WU_E_INVALIDINDEX,
                format!(
                    "history range start {start}, count {count} is invalid: start must be 0 or more and count 1 or more"
                ),
            ));
        }
        let conn = self.conn();
        (|| {
            let mut stmt = conn.prepare(
                "SELECT operation, result_code, hresult, unmapped_result_code, date, update_id,
                        revision_number, title, description, client_application_id, server_selection,
                        service_id, support_url, uninstallation_notes, uninstallation_steps, categories
                 FROM history ORDER BY id DESC LIMIT ?1 OFFSET ?2",
            )?;
            stmt.query_map(params![count, start], |r| {
                let operation: i32 = r.get(0)?;
                let result_code: i32 = r.get(1)?;
                let date: String = r.get(4)?;
                let update_id: String = r.get(5)?;
                let steps: String = r.get(14)?;
                let categories: String = r.get(15)?;
                Ok(UpdateHistoryEntry {
                    operation: UpdateOperation::from_value(operation)
                        .unwrap_or(UpdateOperation::Installation),
                    result_code: OperationResultCode::from_value(result_code)
                        .unwrap_or(OperationResultCode::Failed),
                    hresult: HResult(r.get(2)?),
                    unmapped_result_code: r.get(3)?,
                    date: date.parse().unwrap_or(Timestamp::UNIX_EPOCH),
                    update_identity: UpdateIdentity {
                        update_id: Uuid::parse_str(&update_id).unwrap_or_default(),
                        revision_number: r.get(6)?,
                    },
                    title: r.get(7)?,
                    description: r.get(8)?,
                    client_application_id: r.get(9)?,
                    server_selection: r.get(10)?,
                    service_id: r.get(11)?,
                    support_url: r.get(12)?,
                    uninstallation_notes: r.get(13)?,
                    uninstallation_steps: serde_json::from_str(&steps).unwrap_or_default(),
                    categories: serde_json::from_str(&categories).unwrap_or_default(),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })()
        .map_err(|e| db_error(&self.path, e))
    }

    /// `ISystemInformation.RebootRequired`: some update asked for a restart during this boot.
    pub fn reboot_required(&self) -> Result<bool> {
        self.count_reboots("SELECT COUNT(*) FROM pending_reboots WHERE boot_id = ?1")
            .map(|n| n > 0)
    }

    /// A reboot that must happen before the next install is pending: an update whose reboot
    /// behaviour is `AlwaysRequiresReboot` was installed or removed during this boot
    /// (DIGEST §10.8).
    pub fn mandatory_reboot_pending(&self) -> Result<bool> {
        self.count_reboots(
            "SELECT COUNT(*) FROM pending_reboots WHERE boot_id = ?1 AND mandatory != 0",
        )
        .map(|n| n > 0)
    }

    /// This update asked for a restart during this boot.
    pub fn reboot_pending_for(&self, update_id: Uuid) -> Result<bool> {
        self.conn()
            .query_row(
                "SELECT COUNT(*) FROM pending_reboots WHERE boot_id = ?1 AND update_id = ?2",
                params![self.boot_id, update_id.to_string()],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(|e| db_error(&self.path, e))
    }

    fn count_reboots(&self, sql: &str) -> Result<i64> {
        self.conn()
            .query_row(sql, [&self.boot_id], |r| r.get(0))
            .map_err(|e| db_error(&self.path, e))
    }

    /// Records that the EULA of this update revision was accepted, by whom and when.
    pub fn accept_eula(&self, identity: UpdateIdentity, accepted_by: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT OR IGNORE INTO eula_acceptances (update_id, revision_number, accepted_by, accepted_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    identity.update_id.to_string(),
                    identity.revision_number,
                    accepted_by,
                    Timestamp::now().to_string()
                ],
            )?;
            Ok(())
        })
    }

    /// Whether the EULA of this update revision was accepted on this machine.
    pub fn eula_accepted(&self, identity: UpdateIdentity) -> Result<bool> {
        self.exists(
            "SELECT 1 FROM eula_acceptances WHERE update_id = ?1 AND revision_number = ?2",
            params![identity.update_id.to_string(), identity.revision_number],
        )
    }

    /// Who accepted the EULA of this update revision and when, if it was accepted.
    pub fn eula_acceptance(&self, identity: UpdateIdentity) -> Result<Option<EulaAcceptance>> {
        self.conn()
            .query_row(
                "SELECT accepted_by, accepted_at FROM eula_acceptances
                 WHERE update_id = ?1 AND revision_number = ?2",
                params![identity.update_id.to_string(), identity.revision_number],
                |r| Ok(eula_acceptance(r.get(0)?, r.get::<_, String>(1)?)),
            )
            .optional()
            .map_err(|e| db_error(&self.path, e))
    }

    /// Hides (`hidden_by` is recorded) or unhides an update, for all its revisions
    /// (`iupdate-put_ishidden`). Hiding twice keeps the first record.
    pub fn set_hidden(&self, update_id: Uuid, hidden: bool, hidden_by: &str) -> Result<()> {
        self.write(|tx| {
            if hidden {
                tx.execute(
                    "INSERT OR IGNORE INTO hidden_updates (update_id, hidden_by, hidden_at)
                     VALUES (?1, ?2, ?3)",
                    params![
                        update_id.to_string(),
                        hidden_by,
                        Timestamp::now().to_string()
                    ],
                )?;
            } else {
                tx.execute(
                    "DELETE FROM hidden_updates WHERE update_id = ?1",
                    [update_id.to_string()],
                )?;
            }
            Ok(())
        })
    }

    /// Whether the update is hidden.
    pub fn is_hidden(&self, update_id: Uuid) -> Result<bool> {
        self.exists(
            "SELECT 1 FROM hidden_updates WHERE update_id = ?1",
            [update_id.to_string()],
        )
    }

    /// The name and location of every service registered in the database at `db`, read
    /// without creating or changing anything (the CLI decides on its demo with it). Empty when
    /// the database or its services table does not exist.
    pub fn peek_services(db: &Path) -> Result<Vec<(String, String)>> {
        if !db.exists() {
            return Ok(Vec::new());
        }
        let conn = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| db_error(db, e))?;
        let table: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'services')",
                [],
                |r| r.get(0),
            )
            .map_err(|e| db_error(db, e))?;
        if !table {
            return Ok(Vec::new());
        }
        let mut stmt = conn
            .prepare("SELECT name, location FROM services ORDER BY seq")
            .map_err(|e| db_error(db, e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| db_error(db, e))?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(|e| db_error(db, e))
    }

    /// Registers a service. The first one registered becomes the default. A name already in
    /// use is `WU_E_DUPLICATE_ITEM`.
    pub fn add_service(&self, service: &UpdateService) -> Result<UpdateService> {
        let mut service = service.clone();
        if self.find_service(&service.name)?.is_some() {
            return Err(Error::code(
                WU_E_DUPLICATE_ITEM,
                format!(
                    "a service named \"{}\" is already registered; choose another name or remove it first (`wua service remove {}`)",
                    service.name, service.name
                ),
            ));
        }
        let (kind, location) = source_columns(&service.source);
        self.write(|tx| {
            let count: i64 = tx.query_row("SELECT COUNT(*) FROM services", [], |r| r.get(0))?;
            service.is_default_au_service = count == 0;
            tx.execute(
                "INSERT INTO services (service_id, name, source_kind, location, is_default, is_scan_package,
                     issue_date, content_validation_cert, seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8,
                         (SELECT COALESCE(MAX(seq), 0) + 1 FROM services))",
                params![
                    service.service_id.to_string(),
                    service.name,
                    kind,
                    location,
                    service.is_default_au_service,
                    service.is_scan_package_service,
                    service.issue_date.to_string(),
                    service.content_validation_cert,
                ],
            )?;
            Ok(())
        })?;
        Ok(service)
    }

    /// Removes a service registration; if it was the default, the oldest remaining service
    /// becomes the default (so that a default search keeps working). False if none matched.
    pub fn remove_service(&self, service_id: Uuid) -> Result<bool> {
        self.write(|tx| {
            let removed = tx.execute(
                "DELETE FROM services WHERE service_id = ?1",
                [service_id.to_string()],
            )?;
            tx.execute(
                "UPDATE services SET is_default = 1 WHERE seq = (SELECT MIN(seq) FROM services)
                   AND NOT EXISTS (SELECT 1 FROM services WHERE is_default = 1)",
                [],
            )?;
            Ok(removed > 0)
        })
    }

    /// Makes this service the default (`RegisterServiceWithAU`), or no service the default
    /// when `None`.
    pub fn set_default_service(&self, service_id: Option<Uuid>) -> Result<()> {
        self.write(|tx| {
            tx.execute("UPDATE services SET is_default = 0", [])?;
            if let Some(id) = service_id {
                tx.execute(
                    "UPDATE services SET is_default = 1 WHERE service_id = ?1",
                    [id.to_string()],
                )?;
            }
            Ok(())
        })
    }

    /// Every registered service, oldest first.
    pub fn services(&self) -> Result<Vec<UpdateService>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT service_id, name, source_kind, location, is_default, is_scan_package,
                        issue_date, content_validation_cert FROM services ORDER BY seq",
            )
            .map_err(|e| db_error(&self.path, e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, bool>(4)?,
                    r.get::<_, bool>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, String>(7)?,
                ))
            })
            .map_err(|e| db_error(&self.path, e))?;
        let mut services = Vec::new();
        for row in rows {
            let (id, name, kind, location, is_default, is_scan, issued, cert) =
                row.map_err(|e| db_error(&self.path, e))?;
            let damaged = |what: &str| {
                Error::code(
                    WU_E_INVALID_FILE,
                    format!(
                        "the agent database {} has a damaged service record ({what}); remove the service and add it again",
                        self.path.display()
                    ),
                )
            };
            let source = match kind.as_str() {
                "directory" => ServiceSource::Directory(PathBuf::from(location)),
                "url" => {
                    ServiceSource::Url(url::Url::parse(&location).map_err(|_| damaged("its URL"))?)
                }
                _ => return Err(damaged("its source kind")),
            };
            services.push(UpdateService {
                service_id: Uuid::parse_str(&id).map_err(|_| damaged("its id"))?,
                name,
                source,
                is_default_au_service: is_default,
                is_scan_package_service: is_scan,
                issue_date: issued.parse().map_err(|_| damaged("its issue date"))?,
                content_validation_cert: cert,
            });
        }
        Ok(services)
    }

    /// The service with this id or name.
    pub fn find_service(&self, id_or_name: &str) -> Result<Option<UpdateService>> {
        let id = Uuid::parse_str(id_or_name.trim()).ok();
        Ok(self
            .services()?
            .into_iter()
            .find(|s| Some(s.service_id) == id || s.name == id_or_name))
    }

    /// The default service, if any.
    pub fn default_service(&self) -> Result<Option<UpdateService>> {
        Ok(self
            .services()?
            .into_iter()
            .find(|s| s.is_default_au_service))
    }

    /// Reads what a search needs in one read transaction, so a search sees one consistent state
    /// and costs four queries however large the catalog is.
    pub fn snapshot(&self) -> Result<StoreSnapshot> {
        let mut conn = self.conn();
        (|| {
            let tx = conn.transaction()?;
            let mut snap = StoreSnapshot::default();
            {
                let mut stmt =
                    tx.prepare("SELECT update_id, revision_number FROM installed_updates")?;
                let rows = stmt.query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i32>(1)?))
                })?;
                for row in rows {
                    let (id, rev) = row?;
                    if let Ok(id) = Uuid::parse_str(&id) {
                        snap.installed.insert(id, rev);
                    }
                }
                let mut stmt = tx.prepare("SELECT update_id FROM hidden_updates")?;
                for id in stmt.query_map([], |r| r.get::<_, String>(0))? {
                    if let Ok(id) = Uuid::parse_str(&id?) {
                        snap.hidden.insert(id);
                    }
                }
                let mut stmt = tx.prepare(
                    "SELECT update_id, revision_number, accepted_by, accepted_at FROM eula_acceptances",
                )?;
                let rows = stmt.query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i32>(1)?,
                        eula_acceptance(r.get(2)?, r.get::<_, String>(3)?),
                    ))
                })?;
                for row in rows {
                    let (id, revision_number, acceptance) = row?;
                    if let Ok(update_id) = Uuid::parse_str(&id) {
                        snap.eulas.insert(
                            UpdateIdentity {
                                update_id,
                                revision_number,
                            },
                            acceptance,
                        );
                    }
                }
                let mut stmt =
                    tx.prepare("SELECT update_id FROM pending_reboots WHERE boot_id = ?1")?;
                for id in stmt.query_map([&self.boot_id], |r| r.get::<_, String>(0))? {
                    if let Ok(id) = Uuid::parse_str(&id?) {
                        snap.reboot_pending.insert(id);
                    }
                }
            }
            tx.finish()?;
            Ok(snap)
        })()
        .map_err(|e| db_error(&self.path, e))
    }
}

fn eula_acceptance(accepted_by: String, accepted_at: String) -> EulaAcceptance {
    EulaAcceptance {
        accepted_by,
        accepted_at: accepted_at.parse().unwrap_or(Timestamp::UNIX_EPOCH),
    }
}

/// Who accepted an update's licence terms on this machine, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EulaAcceptance {
    /// The user name (or `uid N`) recorded at acceptance.
    pub accepted_by: String,
    /// When.
    pub accepted_at: Timestamp,
}

/// Everything a search needs from the store, read in one transaction: what is installed, hidden,
/// accepted and waiting for a restart.
#[derive(Clone, Debug, Default)]
pub struct StoreSnapshot {
    /// Installed updates: id → installed revision.
    pub installed: HashMap<Uuid, i32>,
    /// Hidden update ids (hiding is per update, for every revision).
    pub hidden: HashSet<Uuid>,
    /// Accepted EULAs by update revision.
    pub eulas: HashMap<UpdateIdentity, EulaAcceptance>,
    /// Updates whose restart is still pending in this boot.
    pub reboot_pending: HashSet<Uuid>,
}

fn source_columns(source: &ServiceSource) -> (&'static str, String) {
    match source {
        ServiceSource::Directory(dir) => ("directory", dir.to_string_lossy().into_owned()),
        ServiceSource::Url(url) => ("url", url.to_string()),
    }
}

/// Marks a file-system transaction committed, in the same SQLite transaction as its outcome:
/// recovery finishes a transaction whose id is here and rolls back one whose id is not.
fn record_transaction(tx: &Transaction<'_>, txid: Uuid) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO transactions (txid, committed_at) VALUES (?1, ?2)",
        params![txid.to_string(), Timestamp::now().to_string()],
    )?;
    Ok(())
}

fn apply_handovers(tx: &Transaction<'_>, handovers: &[Handover]) -> rusqlite::Result<()> {
    for h in handovers {
        match h {
            Handover::Backup {
                to_update,
                path,
                backup,
            } => tx.execute(
                "UPDATE installed_files SET backup = ?1 WHERE update_id = ?2 AND path = ?3",
                params![backup, to_update.to_string(), path],
            )?,
            Handover::Dir { to_update, entry } => tx.execute(
                "INSERT OR IGNORE INTO installed_files (update_id, path, kind, sha256, mode, link_target, backup)
                 VALUES (?1, ?2, ?3, NULL, ?4, NULL, NULL)",
                params![to_update.to_string(), entry.path, entry.kind.as_str(), entry.mode],
            )?,
        };
    }
    Ok(())
}

fn insert_history(tx: &Transaction<'_>, e: &UpdateHistoryEntry) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO history (operation, result_code, hresult, unmapped_result_code, date, update_id,
            revision_number, title, description, client_application_id, server_selection, service_id,
            support_url, uninstallation_notes, uninstallation_steps, categories)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        params![
            e.operation.value(),
            e.result_code.value(),
            e.hresult.0,
            e.unmapped_result_code,
            e.date.to_string(),
            e.update_identity.update_id.to_string(),
            e.update_identity.revision_number,
            e.title,
            e.description,
            e.client_application_id,
            e.server_selection,
            e.service_id,
            e.support_url,
            e.uninstallation_notes,
            serde_json::to_string(&e.uninstallation_steps).expect("serialisable"),
            serde_json::to_string(&e.categories).expect("serialisable"),
        ],
    )?;
    Ok(())
}

fn db_error(path: &Path, cause: rusqlite::Error) -> Error {
    Error::Store {
        path: path.to_path_buf(),
        cause,
        hresult: WU_E_UNEXPECTED,
    }
}

/// A history entry for update `n`, for unit tests.
#[cfg(test)]
pub(crate) fn test_history_entry(
    n: u128,
    op: UpdateOperation,
    code: OperationResultCode,
) -> UpdateHistoryEntry {
    UpdateHistoryEntry {
        operation: op,
        result_code: code,
        hresult: crate::hresult::S_OK,
        unmapped_result_code: 0,
        date: Timestamp::now(),
        update_identity: UpdateIdentity {
            update_id: Uuid::from_u128(n),
            revision_number: 1,
        },
        title: format!("u{n}"),
        description: String::new(),
        client_application_id: "test".into(),
        server_selection: 0,
        service_id: String::new(),
        support_url: String::new(),
        uninstallation_notes: String::new(),
        uninstallation_steps: vec!["step".into()],
        categories: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::test_definition;
    use crate::hresult::WU_E_UH_INSTALLERFAILURE;

    fn entry(n: u128, op: UpdateOperation, code: OperationResultCode) -> UpdateHistoryEntry {
        test_history_entry(n, op, code)
    }

    #[test]
    fn history_is_newest_first_with_paging_rules() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "boot-a").unwrap();
        for n in 1..=5 {
            store
                .add_history(&entry(
                    n,
                    UpdateOperation::Installation,
                    OperationResultCode::Succeeded,
                ))
                .unwrap();
        }
        let mut failed = entry(
            6,
            UpdateOperation::Uninstallation,
            OperationResultCode::Failed,
        );
        failed.hresult = WU_E_UH_INSTALLERFAILURE;
        failed.unmapped_result_code = 3;
        store.add_history(&failed).unwrap();
        assert_eq!(store.total_history_count().unwrap(), 6);
        let page = store.query_history(0, 2).unwrap();
        assert_eq!(page[0], failed);
        assert_eq!(page[1].title, "u5");
        assert_eq!(store.query_history(5, 10).unwrap()[0].title, "u1");
        assert!(store.query_history(6, 1).unwrap().is_empty());
        assert_eq!(
            store.query_history(-1, 1).unwrap_err().hresult(),
            WU_E_INVALIDINDEX
        );
        assert_eq!(
            store.query_history(0, 0).unwrap_err().hresult(),
            WU_E_INVALIDINDEX
        );
    }

    #[test]
    fn install_and_uninstall_are_recorded_with_their_reboot() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "boot-a").unwrap();
        let def = test_definition(Uuid::from_u128(7));
        let files = vec![ManifestEntry {
            path: "etc/x".into(),
            kind: EntryKind::File,
            sha256: Some("ab".into()),
            mode: 0o644,
            link_target: None,
            backup: None,
        }];
        let h = entry(
            7,
            UpdateOperation::Installation,
            OperationResultCode::Succeeded,
        );
        store
            .commit_install(&def, &files, &[], &h, Some(true), Uuid::nil())
            .unwrap();
        let got = store
            .installed_update(def.identity.update_id)
            .unwrap()
            .unwrap();
        assert_eq!(got.files, files);
        assert_eq!(got.definition, def);
        assert!(store.reboot_required().unwrap());
        assert!(store.mandatory_reboot_pending().unwrap());
        drop(store);
        // Another boot: the pending reboot is over.
        let store = Store::open(dir.path(), "boot-b").unwrap();
        assert!(!store.reboot_required().unwrap());
        assert!(store.is_installed(def.identity.update_id).unwrap());
        let h = entry(
            7,
            UpdateOperation::Uninstallation,
            OperationResultCode::Succeeded,
        );
        store
            .commit_uninstall(def.identity.update_id, &[], &h, None, Uuid::from_u128(1))
            .unwrap();
        assert!(!store.is_installed(def.identity.update_id).unwrap());
        assert_eq!(store.total_history_count().unwrap(), 2);
    }

    #[test]
    fn eula_acceptance_persists_per_revision() {
        let dir = tempfile::tempdir().unwrap();
        let id = UpdateIdentity {
            update_id: Uuid::from_u128(1),
            revision_number: 2,
        };
        Store::open(dir.path(), "b")
            .unwrap()
            .accept_eula(id, "alice")
            .unwrap();
        let store = Store::open(dir.path(), "b").unwrap();
        assert!(store.eula_accepted(id).unwrap());
        let other = UpdateIdentity {
            revision_number: 3,
            ..id
        };
        assert!(!store.eula_accepted(other).unwrap());
    }
}

//! `wua list`, `wua history`, `wua status`, and the JSON conventions every command shares
//! (documented in docs/cli.md).

use anyhow::Result;
use serde::Serialize;
use wua::hresult::HResult;
use wua::{OperationResultCode, UpdateOperation};

use crate::Exit;
use crate::cli::{GlobalArgs, HistoryArgs, ListArgs};

/// The version of every JSON document wua prints. Bumped on incompatible changes only; fields
/// may be added within a version.
pub const SCHEMA_VERSION: u32 = 1;

/// Where a catalog is read from, for reports: a catalog directory's path, or the service's
/// name and location.
pub fn location(catalog: &wua::Catalog) -> String {
    match catalog.origin() {
        Some(origin) => format!("service {}: {}", origin.service.name, origin.service.source),
        None => catalog.dir().display().to_string(),
    }
}

/// An HRESULT in JSON: its hexadecimal value, name and meaning.
#[derive(Serialize)]
pub struct HResultJson {
    value: String,
    name: Option<&'static str>,
    message: Option<&'static str>,
}

impl HResultJson {
    /// Whether this is `h`.
    pub fn is(&self, h: HResult) -> bool {
        self.value == format!("0x{:08X}", h.as_u32())
    }
}

impl From<HResult> for HResultJson {
    fn from(h: HResult) -> Self {
        HResultJson {
            value: format!("0x{:08X}", h.as_u32()),
            name: h.name(),
            message: h.message(),
        }
    }
}

#[derive(Serialize)]
struct CatalogReport {
    schema_version: u32,
    catalog: String,
    name: String,
    updates: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    payloads_written: Option<usize>,
}

/// Reports a built or verified catalog: `text` on stdout, or JSON.
pub fn catalog(
    global: &GlobalArgs,
    catalog: &wua::Catalog,
    payloads_written: Option<usize>,
    text: String,
) {
    if global.json {
        print_json(&CatalogReport {
            schema_version: SCHEMA_VERSION,
            catalog: catalog.dir().display().to_string(),
            name: catalog.name().to_string(),
            updates: catalog.updates().len(),
            payloads_written,
        });
    } else if !global.quiet {
        println!("{text}");
    }
}

/// The document printed on stdout with `--json` when a command fails.
#[derive(Serialize)]
pub struct ErrorReport {
    pub schema_version: u32,
    pub error: ErrorDetail,
}

/// An error in JSON: its message and, for the library's errors, its HRESULT.
#[derive(Serialize)]
pub struct ErrorDetail {
    pub message: String,
    pub hresult: Option<HResultJson>,
}

impl ErrorDetail {
    pub fn from_wua(e: &wua::Error) -> ErrorDetail {
        ErrorDetail {
            message: e.to_string(),
            hresult: Some(e.hresult().into()),
        }
    }
}

/// Prints a JSON document on stdout. Write errors are ignored: a reader that went away must
/// not turn a finished install into a failure.
pub fn print_json<T: Serialize>(value: &T) {
    use std::io::Write as _;
    let text = serde_json::to_string_pretty(value).expect("reports are serialisable");
    let _ = writeln!(std::io::stdout(), "{text}");
}

#[derive(Serialize)]
struct ListedUpdate {
    update_id: String,
    revision_number: i32,
    title: String,
    kb_article_ids: Vec<String>,
    categories: Vec<String>,
    msrc_severity: Option<String>,
    #[serde(rename = "type")]
    update_type: wua::UpdateType,
    handler: &'static str,
    is_installed: bool,
    is_downloaded: bool,
    is_mandatory: bool,
    is_uninstallable: bool,
    has_eula: bool,
    eula_accepted: bool,
    impact: wua::InstallationImpact,
    reboot_behavior: wua::InstallationRebootBehavior,
    reboot_required: bool,
    in_catalog: bool,
    /// The update applies to this machine (its `is_installable` rule holds, or it has none).
    is_installable: bool,
    is_hidden: bool,
    browse_only: bool,
    max_download_size: u64,
    /// The updates this one bundles, in install order.
    bundled_update_ids: Vec<String>,
    /// The catalog bundle this update is a part of, if any.
    bundled_in: Option<String>,
    /// Catalog updates that supersede this one.
    superseded_by: Vec<String>,
}

#[derive(Serialize)]
struct ListReport {
    schema_version: u32,
    catalog: String,
    root: String,
    updates: Vec<ListedUpdate>,
}

pub fn list(global: &GlobalArgs, args: &ListArgs) -> Result<Exit> {
    let session = crate::open_session_online(global, crate::paths::Access::Read)?;
    let catalog = session.catalog()?;
    let relations = crate::search::Relations::of(&catalog);
    let mut updates: Vec<_> = session.catalog_updates()?.iter().cloned().collect();
    // Installed updates the catalog no longer has, or has in another revision, are listed too.
    for installed in session.installed_updates()?.iter() {
        let in_catalog = catalog
            .find(installed.identity().update_id)
            .map(|d| d.identity);
        if in_catalog != Some(installed.identity()) {
            updates.push(installed.clone());
        }
    }
    let listed: Vec<ListedUpdate> = updates
        .iter()
        .filter(|u| match (args.installed, args.available) {
            (true, _) => u.is_installed(),
            (_, true) => !u.is_installed(),
            _ => true,
        })
        .map(|u| ListedUpdate {
            update_id: u.identity().update_id.to_string(),
            revision_number: u.identity().revision_number,
            title: u.title().to_string(),
            kb_article_ids: u.kb_article_ids().to_vec(),
            categories: u.categories().iter().map(|c| c.name.clone()).collect(),
            msrc_severity: u.msrc_severity().map(str::to_string),
            update_type: u.update_type(),
            handler: u.handler_id(),
            is_installed: u.is_installed(),
            is_downloaded: u.is_downloaded(),
            is_mandatory: u.is_mandatory(),
            is_uninstallable: u.is_uninstallable(),
            has_eula: u.eula_text().is_some(),
            eula_accepted: u.eula_accepted(),
            impact: u.installation_behavior().impact,
            reboot_behavior: u.installation_behavior().reboot_behavior,
            reboot_required: u.reboot_required(),
            in_catalog: catalog
                .find(u.identity().update_id)
                .is_some_and(|d| d.identity == u.identity()),
            is_installable: u.is_installable(),
            is_hidden: u.is_hidden(),
            browse_only: u.browse_only(),
            max_download_size: u.max_download_size(),
            bundled_update_ids: u
                .bundled_updates()
                .iter()
                .map(|b| b.identity().update_id.to_string())
                .collect(),
            bundled_in: relations
                .bundled_in(u.identity().update_id)
                .map(|(id, _)| id.to_string()),
            superseded_by: relations
                .superseded_by(u.identity().update_id)
                .iter()
                .map(|(id, _)| id.to_string())
                .collect(),
        })
        .collect();
    if global.json {
        print_json(&ListReport {
            schema_version: SCHEMA_VERSION,
            catalog: location(&catalog),
            root: session.config().root.display().to_string(),
            updates: listed,
        });
        return Ok(Exit::Success);
    }
    if global.quiet {
        return Ok(Exit::Success);
    }
    println!(
        "Catalog: {} ({})\nRoot:    {}",
        catalog.name(),
        location(&catalog),
        session.config().root.display()
    );
    if listed.is_empty() {
        println!("No updates.");
        return Ok(Exit::Success);
    }
    let rows: Vec<[String; 5]> = listed
        .iter()
        .map(|u| {
            let mut notes = Vec::new();
            let title_of = |id: &str| {
                uuid::Uuid::parse_str(id)
                    .ok()
                    .and_then(|id| catalog.find(id))
                    .map_or_else(|| id.to_string(), |d| format!("\"{}\"", d.title))
            };
            if !u.is_installed && !u.is_installable {
                notes.push("does not apply".to_string());
            }
            if let Some(bundle) = &u.bundled_in {
                notes.push(format!("part of {}", title_of(bundle)));
            }
            if !u.bundled_update_ids.is_empty() {
                notes.push(format!("bundle of {}", u.bundled_update_ids.len()));
            }
            if !u.superseded_by.is_empty() {
                let by: Vec<String> = u.superseded_by.iter().map(|id| title_of(id)).collect();
                notes.push(format!("superseded by {}", by.join(", ")));
            }
            if u.is_hidden {
                notes.push("hidden".to_string());
            }
            if u.browse_only {
                notes.push("optional".to_string());
            }
            if u.reboot_required {
                notes.push("restart pending".to_string());
            } else if u.reboot_behavior == wua::InstallationRebootBehavior::AlwaysRequiresReboot {
                notes.push("needs restart".to_string());
            }
            if u.has_eula && !u.eula_accepted {
                notes.push("licence to accept".to_string());
            }
            if u.impact == wua::InstallationImpact::RequiresExclusiveHandling {
                notes.push("exclusive".to_string());
            }
            if !u.is_uninstallable {
                notes.push("permanent".to_string());
            }
            if !u.is_downloaded && u.in_catalog {
                notes.push("not downloaded".to_string());
            }
            if !u.in_catalog {
                notes.push("this revision not in catalog".to_string());
            }
            [
                if u.is_installed {
                    "installed"
                } else {
                    "available"
                }
                .to_string(),
                u.update_id[..8].to_string(),
                u.kb_article_ids
                    .first()
                    .map(|k| format!("KB{k}"))
                    .unwrap_or_default(),
                u.title.clone(),
                notes.join(", "),
            ]
        })
        .collect();
    print_table(&["STATUS", "ID", "KB", "TITLE", "NOTES"], &rows);
    Ok(Exit::Success)
}

#[derive(Serialize)]
struct HistoryRow {
    date: String,
    operation: UpdateOperation,
    result_code: OperationResultCode,
    hresult: HResultJson,
    unmapped_result_code: i32,
    update_id: String,
    revision_number: i32,
    title: String,
    description: String,
    client_application_id: String,
    server_selection: i32,
    service_id: String,
    support_url: String,
    uninstallation_notes: String,
    uninstallation_steps: Vec<String>,
    categories: Vec<String>,
}

#[derive(Serialize)]
struct HistoryReport {
    schema_version: u32,
    total: i64,
    start: i64,
    entries: Vec<HistoryRow>,
}

pub fn history(global: &GlobalArgs, args: &HistoryArgs) -> Result<Exit> {
    let session = crate::open_session(global, crate::paths::Access::Read)?;
    let total = session.get_total_history_count()?;
    let entries = session.query_history(args.start, args.count)?;
    let rows: Vec<HistoryRow> = entries
        .into_iter()
        .map(|e| HistoryRow {
            date: e.date.to_string(),
            operation: e.operation,
            result_code: e.result_code,
            hresult: e.hresult.into(),
            unmapped_result_code: e.unmapped_result_code,
            update_id: e.update_identity.update_id.to_string(),
            revision_number: e.update_identity.revision_number,
            title: e.title,
            description: e.description,
            client_application_id: e.client_application_id,
            server_selection: e.server_selection,
            service_id: e.service_id,
            support_url: e.support_url,
            uninstallation_notes: e.uninstallation_notes,
            uninstallation_steps: e.uninstallation_steps,
            categories: e.categories.into_iter().map(|c| c.name).collect(),
        })
        .collect();
    if global.json {
        print_json(&HistoryReport {
            schema_version: SCHEMA_VERSION,
            total,
            start: args.start,
            entries: rows,
        });
        return Ok(Exit::Success);
    }
    if global.quiet {
        return Ok(Exit::Success);
    }
    if rows.is_empty() {
        println!("No history ({total} entries in all).");
        return Ok(Exit::Success);
    }
    let table: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.date.split('.').next().unwrap_or(&r.date).to_string(),
                format!("{:?}", r.operation),
                format!("{:?}", r.result_code),
                r.hresult.name.unwrap_or("").to_string()
                    + if r.hresult.name.is_none() {
                        &r.hresult.value
                    } else {
                        ""
                    },
                r.title.clone(),
            ]
        })
        .collect();
    print_table(&["DATE", "OPERATION", "RESULT", "HRESULT", "TITLE"], &table);
    if args.start + (rows.len() as i64) < total {
        println!(
            "({} of {total} entries; see more with --start {} --count N)",
            rows.len(),
            args.start + rows.len() as i64
        );
    }
    Ok(Exit::Success)
}

#[derive(Serialize)]
struct StatusReport {
    schema_version: u32,
    reboot_required: bool,
    reboot_required_before_installation: bool,
    is_busy: bool,
    installed_updates: usize,
    history_entries: i64,
    root: String,
    state_dir: String,
    catalog: String,
    boot_id: String,
}

pub fn status(global: &GlobalArgs) -> Result<Exit> {
    let session = crate::open_session(global, crate::paths::Access::Read)?;
    // Status works without a readable catalog (expired metadata): it says so instead.
    let catalog = match session.catalog() {
        Ok(catalog) => catalog,
        Err(e) => std::sync::Arc::new(wua::Catalog::empty(
            format!("unavailable: {e}"),
            std::path::PathBuf::new(),
            None,
        )),
    };
    let installer = session.create_update_installer();
    let report = StatusReport {
        schema_version: SCHEMA_VERSION,
        reboot_required: session.system_information().reboot_required()?,
        reboot_required_before_installation: installer.reboot_required_before_installation()?,
        is_busy: installer.is_busy(),
        installed_updates: session.installed_updates()?.len(),
        history_entries: session.get_total_history_count()?,
        root: session.config().root.display().to_string(),
        state_dir: session.config().state_dir.display().to_string(),
        catalog: location(&catalog),
        boot_id: session.store().boot_id().to_string(),
    };
    if global.json {
        print_json(&report);
    } else if !global.quiet {
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        println!(
            "Restart required:          {}",
            yes_no(report.reboot_required)
        );
        println!(
            "Restart before installing: {}",
            yes_no(report.reboot_required_before_installation)
        );
        println!("Install running:           {}", yes_no(report.is_busy));
        println!("Installed updates:         {}", report.installed_updates);
        println!("History entries:           {}", report.history_entries);
        println!("Root:                      {}", report.root);
        println!("State:                     {}", report.state_dir);
        println!("Catalog:                   {}", report.catalog);
    }
    Ok(Exit::Success)
}

/// Prints rows under headers, columns padded to their widest cell; the last column is not
/// padded.
pub fn print_table<const N: usize>(headers: &[&str; N], rows: &[[String; N]]) {
    let mut widths = headers.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == N {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

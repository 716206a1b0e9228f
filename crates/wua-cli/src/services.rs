//! `wua service …`: register, remove, list and refresh update services (WUA's
//! `IUpdateServiceManager`).

use anyhow::Result;
use serde::Serialize;
use wua::service::{ServiceSource, UpdateService};

use crate::cli::{GlobalArgs, ServiceCommand};
use crate::paths::Access;
use crate::{Exit, report};

#[derive(Serialize)]
struct ServicesReport<'a> {
    schema_version: u32,
    services: &'a [UpdateService],
}

#[derive(Serialize)]
struct ServiceReport<'a> {
    schema_version: u32,
    action: &'a str,
    service: &'a UpdateService,
    #[serde(skip_serializing_if = "Option::is_none")]
    updates: Option<usize>,
}

pub fn service(global: &GlobalArgs, command: &ServiceCommand) -> Result<Exit> {
    match command {
        ServiceCommand::Add {
            name,
            location,
            trusted_root,
            bundle,
            default,
        } => {
            let session = crate::open_session(global, Access::Configure)?;
            let manager = session.create_update_service_manager();
            let mut added = if *bundle {
                manager.add_scan_package_service(
                    name,
                    std::path::Path::new(location),
                    trusted_root,
                )?
            } else {
                manager.add_service(name, ServiceSource::parse(location)?, trusted_root)?
            };
            if *default {
                added = manager.register_service_with_au(&added.name)?;
            }
            done(
                global,
                "added",
                &added,
                None,
                format!(
                    "Added service \"{}\" ({}){}; its metadata is checked against the trusted root with SHA-256 {}",
                    added.name,
                    added.source,
                    if added.is_default_au_service {
                        ", the default"
                    } else {
                        ""
                    },
                    added.content_validation_cert
                ),
            );
            Ok(Exit::Success)
        }
        ServiceCommand::Remove { service } => {
            let session = crate::open_session(global, Access::Read)?;
            let removed = session
                .create_update_service_manager()
                .remove_service(service)?;
            done(
                global,
                "removed",
                &removed,
                None,
                format!("Removed service \"{}\"", removed.name),
            );
            Ok(Exit::Success)
        }
        ServiceCommand::Default { service } => {
            let session = crate::open_session(global, Access::Read)?;
            let chosen = session
                .create_update_service_manager()
                .register_service_with_au(service)?;
            done(
                global,
                "default",
                &chosen,
                None,
                format!("\"{}\" is now the default service", chosen.name),
            );
            Ok(Exit::Success)
        }
        ServiceCommand::Refresh { service } => {
            if global.offline {
                return Err(crate::BadInput(
                    "--offline and `service refresh` contradict each other: refreshing contacts the service".to_string(),
                )
                .into());
            }
            let session = crate::open_session(global, Access::Read)?;
            let manager = session.create_update_service_manager();
            let chosen = match service {
                Some(s) => manager.find(s)?,
                None => match manager.services()?.into_iter().find(|s| {
                    global
                        .service
                        .as_deref()
                        .map_or(s.is_default_au_service, |g| {
                            s.name == g || s.service_id.to_string() == g
                        })
                }) {
                    Some(s) => s,
                    None => {
                        return Err(crate::BadInput(
                            "no default service: name one (`wua service refresh NAME`) or add one (`wua service add`)"
                                .to_string(),
                        )
                        .into());
                    }
                },
            };
            let catalog = session.refresh(Some(&chosen))?;
            let expires = catalog
                .origin()
                .map(|o| o.targets.expires().to_string())
                .unwrap_or_default();
            done(
                global,
                "refreshed",
                &chosen,
                Some(catalog.updates().len()),
                format!(
                    "Service \"{}\": signed metadata verified; catalog \"{}\" with {} updates; valid until {expires}",
                    chosen.name,
                    catalog.name(),
                    catalog.updates().len()
                ),
            );
            Ok(Exit::Success)
        }
        ServiceCommand::List => {
            let session = crate::open_session(global, Access::Read)?;
            let services = session.create_update_service_manager().services()?;
            if global.json {
                report::print_json(&ServicesReport {
                    schema_version: report::SCHEMA_VERSION,
                    services: &services,
                });
                return Ok(Exit::Success);
            }
            if global.quiet {
                return Ok(Exit::Success);
            }
            if services.is_empty() {
                say!(
                    "No services. Add one with `wua service add NAME URL --trusted-root ROOT.json`."
                );
                return Ok(Exit::Success);
            }
            let rows: Vec<[String; 4]> = services
                .iter()
                .map(|s| {
                    [
                        format!(
                            "{}{}",
                            s.name,
                            if s.is_default_au_service { " *" } else { "" }
                        ),
                        s.service_id.to_string(),
                        s.source.to_string(),
                        if s.is_scan_package_service {
                            "bundle".to_string()
                        } else if s.source.is_network() {
                            "network".to_string()
                        } else {
                            "directory".to_string()
                        },
                    ]
                })
                .collect();
            report::print_table(&["NAME", "ID", "LOCATION", "KIND"], &rows);
            say!("* the default service");
            Ok(Exit::Success)
        }
    }
}

fn done(
    global: &GlobalArgs,
    action: &str,
    service: &UpdateService,
    updates: Option<usize>,
    text: String,
) {
    if global.json {
        report::print_json(&ServiceReport {
            schema_version: report::SCHEMA_VERSION,
            action,
            service,
            updates,
        });
    } else if !global.quiet {
        say!("{text}");
    }
}

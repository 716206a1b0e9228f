//! The `command` handler: runs a program from the payload, with a time-out, killed on abort,
//! and maps its exit code as the update's metadata says.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Context, Failure, Outcome};
use crate::catalog::{CommandSpec, ExitAction, UpdateDefinition, relative_inside};
use crate::error::{Error, IoContext};
use crate::hresult::{WU_E_UH_INSTALLERFAILURE, WU_E_UH_INSTALLERHUNG, WU_E_UH_INVALIDMETADATA};

/// How often a running command is checked for exit, time-out and abort.
const POLL: Duration = Duration::from_millis(10);
/// How much of the command's output a failure message quotes.
const OUTPUT_TAIL: u64 = 2048;

/// Runs `spec` in `work` (the extracted payload). `destdir` is where an install writes what it
/// installs (`$DESTDIR`); an uninstall command gets none. The environment is cleared but for
/// `PATH`, plus `WUA_ROOT` (the target root, to read), `WUA_UPDATE_ID`, `WUA_REVISION` and
/// `WUA_OPERATION` (`install` or `uninstall`).
pub(crate) fn run(
    ctx: &mut Context<'_>,
    def: &UpdateDefinition,
    spec: &CommandSpec,
    work: &Path,
    destdir: Option<&Path>,
) -> Result<Outcome, Failure> {
    let program_rel = relative_inside(&spec.program).ok_or_else(|| {
        Error::code(
            WU_E_UH_INVALIDMETADATA,
            format!("command program {:?} leaves the payload", spec.program),
        )
    })?;
    let program = work.join(program_rel);
    // An anonymous file: the output is only quoted in a failure message, never left behind.
    let log_path = std::env::temp_dir();
    let log = tempfile::tempfile().at("cannot create a command log in", &log_path)?;
    let mut command = Command::new(&program);
    command
        .args(&spec.args)
        .current_dir(work)
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        )
        .env("WUA_ROOT", ctx.root)
        .env("WUA_UPDATE_ID", def.identity.update_id.to_string())
        .env("WUA_REVISION", def.identity.revision_number.to_string())
        .env(
            "WUA_OPERATION",
            if destdir.is_some() {
                "install"
            } else {
                "uninstall"
            },
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().at("cannot use command log", &log_path)?)
        .stderr(log.try_clone().at("cannot use command log", &log_path)?)
        // Its own process group, so that a time-out or abort kills everything it started.
        .process_group(0);
    if let Some(dest) = destdir {
        command.env("DESTDIR", dest);
    }
    let child = command.spawn().map_err(|e| {
        Error::io("cannot start update command", &program, e).with_hresult(WU_E_UH_INSTALLERFAILURE)
    })?;
    let status = wait(
        ctx,
        child,
        Duration::from_secs(spec.timeout_secs),
        &spec.program,
    )?;
    let code = match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => {
            return Err(Failure::Failed {
                error: Error::code(
                    WU_E_UH_INSTALLERFAILURE,
                    format!(
                        "the update's program {} was killed by signal {signal}{}",
                        spec.program,
                        output_tail(log)
                    ),
                ),
                unmapped: 128 + signal,
            });
        }
        (None, None) => -1,
    };
    match spec.exit_codes.get(&code) {
        Some(ExitAction::Succeeded) => Ok(Outcome {
            reboot_requested: false,
            unmapped: code,
        }),
        Some(ExitAction::SucceededRebootRequired) => Ok(Outcome {
            reboot_requested: true,
            unmapped: code,
        }),
        Some(ExitAction::Failed) | None => Err(Failure::Failed {
            error: Error::code(
                WU_E_UH_INSTALLERFAILURE,
                format!(
                    "the update's {} program {} exited with status {code}, which its metadata does not list as success{}",
                    if destdir.is_some() {
                        "install"
                    } else {
                        "uninstall"
                    },
                    spec.program,
                    output_tail(log)
                ),
            ),
            unmapped: code,
        }),
    }
}

fn wait(
    ctx: &Context<'_>,
    mut child: Child,
    timeout: Duration,
    name: &str,
) -> Result<std::process::ExitStatus, Failure> {
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) => {}
            Err(e) => {
                kill_group(&mut child);
                return Err(Error::io("cannot wait for", name, e)
                    .with_hresult(WU_E_UH_INSTALLERFAILURE)
                    .into());
            }
        }
        if ctx.aborted() {
            kill_group(&mut child);
            return Err(Failure::Aborted);
        }
        if started.elapsed() >= timeout {
            kill_group(&mut child);
            return Err(Failure::Failed {
                error: Error::code(
                    WU_E_UH_INSTALLERHUNG,
                    format!(
                        "the update's program {} did not finish within its time-out of {} s and was killed",
                        name,
                        timeout.as_secs()
                    ),
                ),
                unmapped: -1,
            });
        }
        std::thread::sleep(POLL);
    }
}

/// Kills the child's whole process group and reaps the child.
fn kill_group(child: &mut Child) {
    let pgid = child.id() as libc::pid_t;
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn output_tail(mut log: File) -> String {
    let len = log.seek(SeekFrom::End(0)).unwrap_or(0);
    let start = len.saturating_sub(OUTPUT_TAIL);
    let mut text = String::new();
    if log.seek(SeekFrom::Start(start)).is_ok() {
        let _ = log.take(OUTPUT_TAIL).read_to_string(&mut text);
    }
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!("; its output ends with:\n{text}")
    }
}

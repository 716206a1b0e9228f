//! Named checkpoints in the install and uninstall paths, for crash and fault-injection tests.
//!
//! With `WUA_TEST_KILL_AT=<name>` in the environment, the process kills itself with SIGKILL when
//! it reaches the checkpoint `<name>` (as rustup's tests do), so a test can check what a crash
//! at exactly that point leaves behind. With `WUA_TEST_FAIL_AT=<name>`, the checkpoint returns
//! an "out of space" IO error instead, as a full disk would at that point. Neither variable is
//! read for anything else; without them a checkpoint does nothing.
//!
//! The checkpoints, in order, for `<op>` = `install` or `uninstall`:
//!
//! | name | reached |
//! |---|---|
//! | `<op>:begun` | the journal header is durable; nothing staged yet |
//! | `<op>:staged` | the new content (or the uninstall command's work) is done and durable |
//! | `<op>:journaled` | the plan of every file-system step is durable; nothing changed yet |
//! | `<op>:applying` | half of the planned steps are done |
//! | `<op>:applied` | every step is done and durable; the database does not know yet |
//! | `<op>:committed` | the database has recorded the outcome; clean-up not done |

use std::io;
use std::sync::OnceLock;

/// The environment variable naming the checkpoint at which to SIGKILL this process.
pub const KILL_AT: &str = "WUA_TEST_KILL_AT";
/// The environment variable naming the checkpoint at which to fail with ENOSPC.
pub const FAIL_AT: &str = "WUA_TEST_FAIL_AT";

/// Every checkpoint name, for test harnesses.
pub const ALL: &[&str] = &[
    "install:begun",
    "install:staged",
    "install:journaled",
    "install:applying",
    "install:applied",
    "install:committed",
    "uninstall:begun",
    "uninstall:staged",
    "uninstall:journaled",
    "uninstall:applying",
    "uninstall:applied",
    "uninstall:committed",
];

fn setting(var: &'static str, cell: &'static OnceLock<Option<String>>) -> Option<&'static str> {
    cell.get_or_init(|| std::env::var(var).ok().filter(|v| !v.is_empty()))
        .as_deref()
}

/// Marks that `name` was reached: kills the process or fails if a test asked for it.
pub(crate) fn reached(name: &str) -> io::Result<()> {
    static KILL: OnceLock<Option<String>> = OnceLock::new();
    static FAIL: OnceLock<Option<String>> = OnceLock::new();
    if setting(KILL_AT, &KILL) == Some(name) {
        tracing::debug!("checkpoint {name}: killing this process as {KILL_AT} asks");
        // SAFETY: kill(2) on our own pid; nothing after it runs.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
    if setting(FAIL_AT, &FAIL) == Some(name) {
        return Err(io::Error::from_raw_os_error(libc::ENOSPC));
    }
    Ok(())
}

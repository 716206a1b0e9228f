//! Log lines go to stderr; while progress bars are drawn they go above the bars, so neither
//! garbles the other.

use std::io::{self, Write};
use std::sync::OnceLock;

use indicatif::MultiProgress;

static BARS: OnceLock<MultiProgress> = OnceLock::new();

/// Sends log lines through `multi` from now on.
pub fn route_through(multi: &MultiProgress) {
    let _ = BARS.set(multi.clone());
}

/// A log line being written; emitted whole when dropped.
#[derive(Default)]
pub struct Writer {
    line: Vec<u8>,
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let line = std::mem::take(&mut self.line);
        let write = || {
            let _ = io::stderr().lock().write_all(&line);
        };
        match BARS.get() {
            Some(bars) => bars.suspend(write),
            None => write(),
        }
    }
}

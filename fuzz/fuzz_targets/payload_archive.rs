//! Fuzzes the payload archive checks: any bytes (as a .tar.zst) are walked or refused, never a
//! panic, and no entry that passes has a path leaving the root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Component;

fuzz_target!(|data: &[u8]| {
    let payload = wua::catalog::PayloadRef {
        sha256: "0".repeat(64),
        size: data.len() as u64,
        installed_size: 1 << 20,
    };
    let _ = wua::catalog::walk_payload(data, &payload, |entry, _| {
        assert!(
            entry.path.components().all(|c| matches!(c, Component::Normal(_))),
            "{:?} leaves the root",
            entry.path
        );
        Ok(())
    });
});

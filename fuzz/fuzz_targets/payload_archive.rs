//! Fuzzes the payload archive checks: any bytes (as a .tar.zst) are walked or refused, never a
//! panic; no entry that passes has a path leaving the root, an absolute symlink target, or
//! setuid/setgid bits when they are not allowed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Component;

fuzz_target!(|data: &[u8]| {
    let payload = wua::catalog::PayloadRef {
        sha256: "0".repeat(64),
        size: data.len() as u64,
        installed_size: 1 << 20,
    };
    // Both policies, chosen by the input, so the fuzzer explores each.
    let allow_setid = data.len() % 2 == 0;
    let _ = wua::catalog::walk_payload(data, &payload, allow_setid, |entry, _| {
        assert!(
            entry
                .path
                .components()
                .all(|c| matches!(c, Component::Normal(_))),
            "{:?} leaves the root",
            entry.path
        );
        if let wua::catalog::PayloadEntryKind::Symlink(target) = &entry.kind {
            assert!(target.is_relative(), "{:?} -> {target:?}", entry.path);
        }
        assert!(
            allow_setid || entry.mode & 0o6000 == 0,
            "{:?} has mode {:o}",
            entry.path,
            entry.mode
        );
        Ok(())
    });
});

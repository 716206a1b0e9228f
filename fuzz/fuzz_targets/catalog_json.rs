//! Fuzzes the catalog reader: any bytes give a catalog or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = wua::catalog::parse_catalog(std::path::Path::new("fuzz/catalog.json"), data);
});

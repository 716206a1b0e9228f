//! Builds a catalog from a source tree: `cargo run -p wua --example build-catalog -- SRC OUT`.
//!
//! The repository's example catalog is regenerated with
//! `cargo run -p wua --example build-catalog -- examples/catalog-src examples/catalog`
//! (`wua catalog build` does the same once the CLI is built; this one has no dependency on the
//! catalog the CLI embeds).

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [source, out] = args.as_slice() else {
        eprintln!("usage: build-catalog SOURCE_DIR OUT_DIR");
        return std::process::ExitCode::from(64);
    };
    match wua::catalog::build(source.as_ref(), out.as_ref()) {
        Ok(report) => {
            println!(
                "Built catalog \"{}\" in {out}: {} updates, {} new payloads",
                report.catalog.name(),
                report.catalog.updates().len(),
                report.payloads_written
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("build-catalog: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

//! Generates the payload tree of the install benchmark (issue 3, item 6; `bench/install-bench.sh`,
//! `docs/BENCHMARKS.md`):
//!
//! ```text
//! cargo run --release -p wua --example make-bench-tree -- OUT_DIR [--seed N] [--scale F]
//! ```
//!
//! The tree is a function of the seed and the scale alone: the same paths, modes, symlink
//! targets and bytes on every machine (modification times are whatever the clock says). At
//! scale 1 it holds about 5,600 regular files and 170 MB, shaped like an application install:
//!
//! * ~5,400 small files (1–64 KiB, log-uniform) in leaf directories four levels below three
//!   prefixes (`usr/lib/benchapp`, `usr/share/benchapp`, `opt/benchapp`), plus small
//!   executables in `usr/bin` (mode 0755);
//! * ~70 medium files (128 KiB–2 MiB) and 6 large ones (3–12 MiB);
//! * ~160 relative symlinks to files elsewhere in the tree (all inside it).
//!
//! Content is pseudo-random (xorshift64*) but partly compressible: each file is a sequence of
//! chunks that are either random bytes or text lines drawn from a small vocabulary, so zstd does
//! real work (the whole tree compresses to roughly half its size). `OUT_DIR` must not exist or
//! be empty.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

/// xorshift64* (Vigna): small, fast and good enough for benchmark payloads.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, so nearby seeds give unrelated streams and 0 is fine.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// Log-uniform in `lo..=hi`: as many files of 1–2 KiB as of 32–64 KiB.
    fn log_range(&mut self, lo: u64, hi: u64) -> u64 {
        let (a, b) = ((lo as f64).ln(), (hi as f64).ln());
        let x = a + (b - a) * (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        (x.exp() as u64).clamp(lo, hi)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

const WORDS: &[&str] = &[
    "update",
    "install",
    "catalog",
    "payload",
    "session",
    "result",
    "error",
    "warning",
    "config",
    "value",
    "enabled",
    "disabled",
    "timeout",
    "retry",
    "journal",
    "commit",
    "rollback",
    "file",
    "directory",
    "symlink",
    "mode",
    "owner",
    "checksum",
    "sha256",
    "version",
    "revision",
    "service",
    "agent",
    "kernel",
    "driver",
    "firmware",
    "module",
    "library",
    "binary",
    "script",
    "restart",
    "pending",
    "success",
    "failure",
    "abort",
    "progress",
    "percent",
    "complete",
    "the",
    "a",
    "of",
    "to",
    "and",
    "in",
    "is",
    "for",
    "with",
    "on",
    "at",
    "by",
    "from",
    "=",
    "{",
    "}",
    "(",
    ")",
    ";",
    "//",
    "#",
];

/// Appends `size` bytes of content: chunks of random bytes (`random_percent` of them) and of
/// text lines.
fn fill(rng: &mut Rng, out: &mut Vec<u8>, size: usize, random_percent: u64) {
    let end = out.len() + size;
    while out.len() < end {
        let chunk = (rng.range(512, 8192) as usize).min(end - out.len());
        let stop = out.len() + chunk;
        if rng.chance(random_percent) {
            while out.len() < stop {
                let bytes = rng.next().to_le_bytes();
                let n = bytes.len().min(stop - out.len());
                out.extend_from_slice(&bytes[..n]);
            }
        } else {
            while out.len() < stop {
                let line_words = rng.range(3, 12);
                let mut line = String::new();
                for _ in 0..line_words {
                    let word = *rng.pick(WORDS);
                    line.push_str(word);
                    line.push(' ');
                }
                if rng.chance(30) {
                    line.push_str(&format!("{}", rng.range(0, 99_999)));
                }
                line.push('\n');
                let n = line.len().min(stop - out.len());
                out.extend_from_slice(&line.as_bytes()[..n]);
            }
        }
    }
}

struct Tree {
    out: PathBuf,
    files: Vec<PathBuf>,
    symlinks: usize,
    dirs: usize,
    bytes: u64,
}

impl Tree {
    fn dir(&mut self, rel: &Path) -> io::Result<()> {
        let mut path = self.out.clone();
        for part in rel.components() {
            path.push(part);
            if !path.is_dir() {
                fs::create_dir(&path)?;
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
                self.dirs += 1;
            }
        }
        Ok(())
    }

    fn file(&mut self, rel: PathBuf, content: &[u8], mode: u32) -> io::Result<()> {
        if let Some(parent) = rel.parent() {
            self.dir(parent)?;
        }
        let path = self.out.join(&rel);
        let mut f = File::create_new(&path)?;
        f.write_all(content)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        self.bytes += content.len() as u64;
        self.files.push(rel);
        Ok(())
    }

    /// A relative symlink at `rel` to the tree's file `target`.
    fn link(&mut self, rel: PathBuf, target: &Path) -> io::Result<()> {
        let from: Vec<_> = rel.parent().unwrap_or(Path::new("")).components().collect();
        let to: Vec<_> = target.components().collect();
        let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
        let mut link = PathBuf::new();
        for _ in common..from.len() {
            link.push("..");
        }
        for part in &to[common..] {
            link.push(part);
        }
        if let Some(parent) = rel.parent() {
            self.dir(parent)?;
        }
        symlink(link, self.out.join(rel))?;
        self.symlinks += 1;
        Ok(())
    }
}

const PREFIXES: &[&str] = &["usr/lib/benchapp", "usr/share/benchapp", "opt/benchapp"];
const SMALL_EXT: &[&str] = &[
    "txt", "json", "conf", "py", "h", "so", "mo", "dat", "xml", "css",
];

fn generate(out: &Path, seed: u64, scale: f64) -> io::Result<Tree> {
    let mut tree = Tree {
        out: out.to_path_buf(),
        files: Vec::new(),
        symlinks: 0,
        dirs: 0,
        bytes: 0,
    };
    let count = |n: f64| ((n * scale).round() as usize).max(1);
    let mut rng = Rng::new(seed);
    // Leaf directories: PREFIX/mNN/sNN/kNN, 3 × 6 × 5 × 4 = 360 of them.
    let mut leaves = Vec::new();
    for prefix in PREFIXES {
        for m in 0..6 {
            for s in 0..5 {
                for k in 0..4 {
                    leaves.push(PathBuf::from(format!("{prefix}/m{m:02}/s{s:02}/k{k:02}")));
                }
            }
        }
    }
    let mut content = Vec::new();
    // Small files: mostly text-like (25% random chunks), a few in the middle levels too.
    for i in 0..count(5_400.0) {
        let dir = if rng.chance(8) {
            rng.pick(&leaves)
                .parent()
                .expect("leaves are nested")
                .to_path_buf()
        } else {
            rng.pick(&leaves).clone()
        };
        let ext = *rng.pick(SMALL_EXT);
        let size = rng.log_range(KIB, 64 * KIB) as usize;
        content.clear();
        fill(&mut rng, &mut content, size, 25);
        tree.file(dir.join(format!("f{i:05}.{ext}")), &content, 0o644)?;
    }
    // Small executables.
    for i in 0..count(40.0) {
        let size = rng.log_range(KIB, 16 * KIB) as usize;
        content.clear();
        content.extend_from_slice(b"#!/bin/sh\n");
        fill(&mut rng, &mut content, size, 10);
        tree.file(
            PathBuf::from(format!("usr/bin/benchapp-tool{i:02}")),
            &content,
            0o755,
        )?;
    }
    // Medium files: half random (like compressed assets).
    for i in 0..count(70.0) {
        let dir = rng.pick(&leaves).clone();
        let size = rng.log_range(128 * KIB, 2 * MIB) as usize;
        content.clear();
        fill(&mut rng, &mut content, size, 50);
        tree.file(dir.join(format!("asset{i:03}.pak")), &content, 0o644)?;
    }
    // Large files: mostly random (databases, archives, media).
    for i in 0..count(6.0) {
        let size = rng.range(3 * MIB, 12 * MIB) as usize;
        content.clear();
        fill(&mut rng, &mut content, size, 70);
        tree.file(
            PathBuf::from(format!("opt/benchapp/data/blob{i}.bin")),
            &content,
            0o644,
        )?;
    }
    // Symlinks to existing files, from elsewhere in the tree.
    for i in 0..count(160.0) {
        let target = rng.pick(&tree.files).clone();
        let at = if rng.chance(25) {
            PathBuf::from(format!("usr/bin/benchapp-link{i:03}"))
        } else {
            rng.pick(&leaves).join(format!("link{i:03}"))
        };
        tree.link(at, &target)?;
    }
    Ok(tree)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut out = None;
    let mut seed = 3u64;
    let mut scale = 1.0f64;
    while let Some(arg) = args.next() {
        let value = |args: &mut dyn Iterator<Item = String>| args.next().unwrap_or_default();
        match arg.as_str() {
            "--seed" => match value(&mut args).parse() {
                Ok(v) => seed = v,
                Err(_) => return usage("--seed takes an unsigned integer"),
            },
            "--scale" => match value(&mut args).parse() {
                Ok(v) if v > 0.0 => scale = v,
                _ => return usage("--scale takes a positive number"),
            },
            _ if out.is_none() && !arg.starts_with('-') => out = Some(PathBuf::from(arg)),
            _ => return usage(&format!("unexpected argument {arg}")),
        }
    }
    let Some(out) = out else {
        return usage("OUT_DIR is missing");
    };
    if fs::read_dir(&out).is_ok_and(|mut d| d.next().is_some()) {
        eprintln!("make-bench-tree: {} is not empty", out.display());
        return ExitCode::from(64);
    }
    if let Err(e) = fs::create_dir_all(&out) {
        eprintln!("make-bench-tree: cannot create {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    match generate(&out, seed, scale) {
        Ok(tree) => {
            println!(
                "{}: {} files, {} symlinks, {} directories, {} bytes ({:.1} MiB), seed {seed}, scale {scale}",
                out.display(),
                tree.files.len(),
                tree.symlinks,
                tree.dirs,
                tree.bytes,
                tree.bytes as f64 / MIB as f64
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("make-bench-tree: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("make-bench-tree: {problem}");
    eprintln!("usage: make-bench-tree OUT_DIR [--seed N] [--scale F]");
    ExitCode::from(64)
}

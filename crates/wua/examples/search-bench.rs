//! The search benchmark of issue 4 (item 7; `bench/search-bench.sh`, `docs/BENCHMARKS.md`):
//! generates a realistic catalog of 100,000 updates, a Debian-like target root and a state
//! directory, then times catalog loading and searches.
//!
//! ```text
//! cargo run --release -p wua --example search-bench -- [--updates N] [--seed N] [--dir DIR]
//!     [--keep] [--reuse] [--generate-only] [--only load|search|search:K|breakdown]
//!     [--load-runs N] [--runs N] [--compact]
//! ```
//!
//! * `--updates N` (default 100000): catalog size. `--seed N` (default 7): everything generated
//!   is a function of the seed, the size and the CPU architecture (the "native" architecture of
//!   the rules is this machine's, so the same updates apply on any machine).
//! * `--dir DIR`: generate into `DIR/{catalog,root,state}` (DIR must not exist or be empty) and
//!   keep it. Without it, a temporary directory is used and deleted at the end, unless `--keep`.
//! * `--reuse`: measure an existing `--dir` generated earlier, without generating.
//!   `--generate-only`: stop after generating.
//! * `--only`: one phase, for profiling: `load`, `search` (all searches), `search:K` (the K-th
//!   search row alone, 1-based; 1 also times the first search of new sessions; the last is
//!   `explain`) or `breakdown` (the steps of loading and searching, one at a time). Every
//!   search phase first runs one default search, to pick the `UpdateID` searched for.
//! * `--load-runs N` (default 7): timed runs of `Catalog::open` and of `UpdateSession::open`,
//!   after one untimed run, and of the first search of a new session. `--runs N` (default 25):
//!   timed runs of each search in one session, after 3 untimed.
//! * `--compact`: write `catalog.json` without indentation (`wua catalog build` pretty-prints).
//!
//! The catalog (`catalog.json`, format version 2) models a distribution's update stream:
//!
//! * updates belong to families, one per Debian package (about 2,700, a skewed choice so some
//!   packages get many updates, as the kernel and browsers do); the n-th update of a family
//!   fixes version `<base>+deb12u<n>`. About 30% supersede the family's previous update.
//! * 20 categories (10 classifications, 10 products), two or three per update; MSRC severities
//!   on security updates; ~5% driver updates (firmware); 10% browse-only; ~1% with a EULA, ~2.5%
//!   mandatory, ~5% `command` handlers; 300 bundles of 2–4 updates each.
//! * detection rules: `is_installed` is mostly `package P >= V` (or, for drivers, a
//!   `file_version` of a firmware file); `is_installable` combines `arch`, `os_release
//!   VERSION_ID` (= 12, = 11 for the older release's updates, or >= 11), `package P` installed,
//!   and for some updates `any(file_exists …)`, `not(package …)` and an `update_installed`
//!   prerequisite (a servicing-stack update).
//! * payloads: eight real small archives (built with `wua::catalog::build`) shared by 90% of
//!   the updates; the other 10% name payloads that are absent (not downloaded).
//!
//! The target root has `etc/os-release` (Debian 12), `var/lib/dpkg/status` with 3,000 packages
//! in the real file's shape (about 2.2 MB), configuration and firmware files some rules look
//! for. The state directory holds eight updates installed by wua (through `UpdateInstaller`)
//! and 200 hidden ones (`Update::set_hidden`).
//!
//! Output: a Markdown report on stdout (the tables `bench/search-bench.sh` records); progress
//! on stderr.

use std::collections::HashSet;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;
use wua::catalog::{
    Applicability, CatalogFile, CommandSpec, ExitAction, FORMAT_MARKER, FORMAT_VERSION,
    HandlerSpec, PayloadRef, UpdateDefinition,
};
use wua::rules::{Pattern, Rule, VersionOp};
use wua::{
    AgentConfig, Catalog, Category, DeploymentAction, InstallationBehavior,
    InstallationRebootBehavior, UpdateCollection, UpdateIdentity, UpdateSession, UpdateType,
};

/// xorshift64* (Vigna), seeded through splitmix64: the same stream on every machine.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
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

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 1000 < percent * 10
    }

    /// True with probability `permille`/1000.
    fn permille(&mut self, permille: u64) -> bool {
        self.next() % 1000 < permille
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }

    fn uuid(&mut self) -> Uuid {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.next().to_le_bytes());
        bytes[8..].copy_from_slice(&self.next().to_le_bytes());
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

// --- Vocabulary --------------------------------------------------------------------------------

const CLASSIFICATIONS: &[&str] = &[
    "Security Updates",
    "Critical Updates",
    "Updates",
    "Feature Packs",
    "Update Rollups",
    "Service Packs",
    "Drivers",
    "Definition Updates",
    "Tools",
    "Upgrades",
];
/// Weights of the classifications for ordinary (non-driver, non-bundle) updates, per mille.
const CLASSIFICATION_WEIGHTS: &[u64] = &[420, 140, 260, 30, 0, 20, 0, 80, 40, 10];
const SECURITY: usize = 0;
const ROLLUPS: usize = 4;
const DRIVERS: usize = 6;
const PRODUCTS: &[&str] = &[
    "Debian 12 Base System",
    "Debian 12 Libraries",
    "Debian 12 Desktop",
    "Debian 12 Server",
    "Python Runtime",
    "Linux Kernel",
    "Firmware",
    "Developer Tools",
    "Database Servers",
    "Web Servers",
];
const FIRMWARE: usize = 6;
const SEVERITIES: &[(&str, u64)] = &[
    ("Critical", 150),
    ("Important", 450),
    ("Moderate", 300),
    ("Low", 100),
];
const STEMS: &[&str] = &[
    "acl",
    "apr",
    "argon",
    "aspell",
    "attr",
    "audit",
    "avahi",
    "bind",
    "blkid",
    "boost",
    "brotli",
    "bzip",
    "cairo",
    "cap",
    "cgroup",
    "clang",
    "colord",
    "cups",
    "curl",
    "db5",
    "dbus",
    "dconf",
    "debconf",
    "drm",
    "dw",
    "edit",
    "elf",
    "enchant",
    "event",
    "expat",
    "exif",
    "fdisk",
    "ffi",
    "flac",
    "fontconfig",
    "freetype",
    "fribidi",
    "fuse",
    "gcc",
    "gcrypt",
    "gdbm",
    "gdk",
    "gettext",
    "ghostscript",
    "git",
    "glib",
    "gmp",
    "gnutls",
    "gpg",
    "graphite",
    "grub",
    "gssapi",
    "gstreamer",
    "gtk",
    "harfbuzz",
    "hogweed",
    "hunspell",
    "icu",
    "idn",
    "imagemagick",
    "iproute",
    "jack",
    "jansson",
    "jbig",
    "jpeg",
    "json",
    "kmod",
    "krb5",
    "lcms",
    "ldap",
    "llvm",
    "lz4",
    "lzma",
    "lzo",
    "magic",
    "mariadb",
    "mount",
    "mpfr",
    "mysql",
    "ncurses",
    "netpbm",
    "nettle",
    "nghttp",
    "nginx",
    "nspr",
    "nss",
    "ogg",
    "openjp",
    "openssh",
    "openssl",
    "opus",
    "p11",
    "pam",
    "pango",
    "pcre",
    "perl",
    "php",
    "pixman",
    "png",
    "polkit",
    "poppler",
    "postgresql",
    "procps",
    "pulse",
    "python",
    "qt",
    "readline",
    "rsvg",
    "rsync",
    "ruby",
    "samba",
    "sasl",
    "seccomp",
    "selinux",
    "sensors",
    "smartmontools",
    "snappy",
    "sndfile",
    "soup",
    "speex",
    "sqlite",
    "ssh",
    "sudo",
    "systemd",
    "tasn",
    "tdb",
    "tiff",
    "tinfo",
    "tk",
    "udev",
    "unistring",
    "usb",
    "uuid",
    "vorbis",
    "vpx",
    "wayland",
    "webp",
    "wget",
    "x11",
    "xcb",
    "xkb",
    "xml",
    "xslt",
    "xz",
    "yaml",
    "zlib",
    "zstd",
    "apache",
    "bash",
    "coreutils",
    "dpkg",
    "firefox",
    "chromium",
    "thunderbird",
    "vim",
    "emacs",
    "tar",
    "gzip",
    "less",
    "nano",
    "rust",
    "golang",
    "nodejs",
    "redis",
    "haproxy",
    "squid",
    "exim",
    "postfix",
    "dovecot",
    "bluez",
    "network",
    "wpa",
    "modem",
    "ppp",
    "nfs",
];
const PREFIXES: &[&str] = &[
    "", "", "", "lib", "lib", "lib", "python3-", "golang-", "node-", "fonts-", "gir1.2-", "x11-",
];
const SUFFIXES: &[&str] = &[
    "", "", "", "-bin", "-common", "-data", "-dev", "-doc", "-utils", "-tools", "1", "2", "3", "6",
    "-0", "-1", "-plugins", "-client", "-server",
];
const SECTIONS: &[&str] = &[
    "libs",
    "utils",
    "admin",
    "net",
    "devel",
    "doc",
    "python",
    "web",
    "x11",
    "fonts",
    "misc",
    "database",
    "sound",
    "graphics",
    "kernel",
    "interpreters",
];
const ISSUES: &[&str] = &[
    "a buffer overflow in the parser of",
    "a use-after-free in the handling of",
    "a denial of service through crafted",
    "an information disclosure in",
    "incorrect validation of",
    "a race condition when processing",
    "a memory leak in the cache of",
    "a crash with malformed",
    "excessive CPU use on large",
    "an integer overflow in the decoder for",
];
const OBJECTS: &[&str] = &[
    "HTTP headers",
    "certificates",
    "archive entries",
    "configuration files",
    "network packets",
    "image metadata",
    "font tables",
    "XML documents",
    "locale data",
    "user names",
    "D-Bus messages",
    "compressed streams",
];
const VENDORS: &[&str] = &["intel", "amdgpu", "rtl_nic", "brcm", "nvidia", "mediatek"];
const VERSION_PATTERNS: &[&str] = &[
    r"^version=(\S+)$",
    r"^VERSION\s*=\s*(\S+)",
    r"(?m)^fw_version:\s*([0-9.]+)",
    r"^release (\S+)",
    r"^FIRMWARE_VERSION=(\S+)",
    r"^ver (\d+\.\d+)",
];

/// Debian's name of the architecture this program runs on, and one that it is not.
fn debian_arches() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", "arm64"),
        "aarch64" => ("arm64", "amd64"),
        "x86" => ("i386", "amd64"),
        "arm" => ("armhf", "arm64"),
        "riscv64" => ("riscv64", "amd64"),
        "powerpc64" => ("ppc64el", "amd64"),
        "s390x" => ("s390x", "amd64"),
        _ => ("amd64", "arm64"),
    }
}

// --- The machine -------------------------------------------------------------------------------

struct Package {
    name: String,
    base: String,
    /// `Status` line of the stanza; `None` when the package is not in the status file.
    status: Option<&'static str>,
    multi_arch: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum Release {
    Bookworm,
    Bullseye,
    Any,
}

#[derive(Clone, Copy, PartialEq)]
enum ArchKind {
    Native,
    Foreign,
    All,
}

struct Family {
    package: usize,
    release: Release,
    arch: ArchKind,
    product: usize,
    /// Updates planned for the family (first pass) and the last index handed out.
    planned: u32,
    next: u32,
    /// The installed version is `<base>+deb12u<installed>` (or `<base>` at 0).
    installed: u32,
    /// Previous updates of the family, newest last.
    history: Vec<Uuid>,
    /// Has `etc/<pkg>/<pkg>.conf` in the root.
    has_config: bool,
}

struct Device {
    vendor: usize,
    name: String,
    present: bool,
    planned: u32,
    next: u32,
    installed: u32,
    history: Vec<Uuid>,
    pattern: usize,
}

fn version_base(rng: &mut Rng) -> String {
    let epoch = if rng.chance(5) { "1:" } else { "" };
    let dfsg = if rng.chance(10) { "+dfsg" } else { "" };
    format!(
        "{epoch}{}.{}.{}{dfsg}-{}",
        rng.range(0, 9),
        rng.range(0, 30),
        rng.range(0, 20),
        rng.range(1, 12)
    )
}

fn packages(rng: &mut Rng, count: usize) -> Vec<Package> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let name = format!(
            "{}{}{}",
            rng.pick(PREFIXES),
            rng.pick(STEMS),
            rng.pick(SUFFIXES)
        );
        if !seen.insert(name.clone()) {
            continue;
        }
        let status = if rng.chance(3) {
            Some("deinstall ok config-files")
        } else if rng.chance(1) {
            Some("hold ok installed")
        } else {
            Some("install ok installed")
        };
        out.push(Package {
            multi_arch: name.starts_with("lib"),
            name,
            base: version_base(rng),
            status,
        });
    }
    out
}

fn installed_version(p: &Package, u: u32) -> String {
    if u == 0 {
        p.base.clone()
    } else {
        format!("{}+deb12u{u}", p.base)
    }
}

fn dpkg_status(rng: &mut Rng, packages: &[Package], versions: &[String], native: &str) -> String {
    let mut out = String::with_capacity(packages.len() * 900);
    for (p, version) in packages.iter().zip(versions) {
        let Some(status) = p.status else { continue };
        let section = rng.pick(SECTIONS);
        let arch = if p.name.ends_with("-doc") || p.name.ends_with("-data") {
            "all"
        } else {
            native
        };
        out.push_str(&format!(
            "Package: {}\nStatus: {status}\nPriority: optional\nSection: {section}\n\
             Installed-Size: {}\nMaintainer: Debian {} Maintainers <pkg-{}@lists.example.invalid>\n\
             Architecture: {arch}\n",
            p.name,
            rng.range(8, 90_000),
            rng.pick(STEMS),
            rng.pick(STEMS),
        ));
        if p.multi_arch {
            out.push_str("Multi-Arch: same\n");
        }
        out.push_str(&format!(
            "Source: {}\nVersion: {version}\n",
            rng.pick(STEMS)
        ));
        let deps = rng.range(0, 6);
        if deps > 0 {
            let list: Vec<String> = (0..deps)
                .map(|_| {
                    let d = &packages[rng.range(0, packages.len() as u64 - 1) as usize];
                    if rng.chance(50) {
                        format!("{} (>= {})", d.name, d.base)
                    } else {
                        d.name.clone()
                    }
                })
                .collect();
            out.push_str(&format!("Depends: {}\n", list.join(", ")));
        }
        if status.ends_with("config-files") {
            out.push_str(&format!(
                "Conffiles:\n /etc/{0}/{0}.conf 0123456789abcdef0123456789abcdef obsolete\n",
                p.name
            ));
        }
        out.push_str(&format!(
            "Description: {} {} for {}\n",
            rng.pick(STEMS),
            rng.pick(&[
                "library",
                "utilities",
                "runtime",
                "daemon",
                "plugins",
                "data files"
            ]),
            rng.pick(OBJECTS)
        ));
        for _ in 0..rng.range(2, 7) {
            let mut line = String::from(" ");
            for _ in 0..rng.range(6, 12) {
                line.push_str(rng.pick::<&str>(STEMS));
                line.push(' ');
            }
            line.push_str(rng.pick::<&str>(OBJECTS));
            line.push('.');
            out.push_str(&line);
            out.push('\n');
        }
        out.push_str(&format!(
            "Homepage: https://{}.example.invalid/\n\n",
            rng.pick(STEMS)
        ));
    }
    out
}

const OS_RELEASE: &str = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n\
VERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\n\
HOME_URL=\"https://www.debian.org/\"\nSUPPORT_URL=\"https://www.debian.org/support\"\n\
BUG_REPORT_URL=\"https://bugs.debian.org/\"\n";

fn write_file(path: &Path, text: impl AsRef<[u8]>) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(path, text)
}

// --- The catalog -------------------------------------------------------------------------------

struct Summary {
    updates: usize,
    families: usize,
    devices: usize,
    bundles: usize,
    bundled: usize,
    superseding: usize,
    browse_only: usize,
    drivers: usize,
    with_prerequisite: usize,
    file_version_rules: usize,
    downloaded: usize,
    packages: usize,
    dpkg_bytes: u64,
    root_files: usize,
}

struct Generator {
    rng: Rng,
    native: &'static str,
    foreign: &'static str,
    categories: Vec<Category>,
    payloads: Vec<PayloadRef>,
    patterns: Vec<Pattern>,
    updates: Vec<Arc<UpdateDefinition>>,
    servicing: Vec<Uuid>,
    summary: Summary,
}

fn weighted(rng: &mut Rng, weights: &[u64]) -> usize {
    let total: u64 = weights.iter().sum();
    let mut x = rng.next() % total;
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

impl Generator {
    fn base(&mut self, title: String, classification: usize, product: usize) -> UpdateDefinition {
        let rng = &mut self.rng;
        let kb = 5_000_000 + self.updates.len() as u64;
        let mut kb_article_ids = vec![kb.to_string()];
        if rng.chance(2) {
            kb_article_ids.push((kb + 700_000).to_string());
        }
        let mut categories = vec![
            self.categories[classification].clone(),
            self.categories[CLASSIFICATIONS.len() + product].clone(),
        ];
        if rng.chance(10) {
            let other = CLASSIFICATIONS.len() + rng.range(0, PRODUCTS.len() as u64 - 1) as usize;
            if other != CLASSIFICATIONS.len() + product {
                categories.push(self.categories[other].clone());
            }
        }
        let description = format!(
            "This update for {} fixes {} {}. {} It also improves the reliability of {} and {}. \
             After you install it, restart the affected services.",
            PRODUCTS[product],
            rng.pick(ISSUES),
            rng.pick(OBJECTS),
            if rng.chance(50) {
                "We recommend that you install it as soon as possible."
            } else {
                "Install it on every affected system."
            },
            rng.pick(OBJECTS),
            rng.pick(OBJECTS)
        );
        let msrc_severity = (classification == SECURITY).then(|| {
            let weights: Vec<u64> = SEVERITIES.iter().map(|s| s.1).collect();
            SEVERITIES[weighted(rng, &weights)].0.to_string()
        });
        let browse_only = rng.chance(10);
        let is_mandatory = classification == SECURITY && rng.chance(6);
        let eula_text = rng.permille(10).then(|| {
            "By installing this update you accept the licence terms of its publisher.".to_string()
        });
        let deadline = (is_mandatory && rng.chance(30)).then(|| {
            jiff::Timestamp::from_second(1_790_000_000 + rng.range(0, 30_000_000) as i64)
                .expect("in range")
        });
        let payload = if rng.chance(90) {
            self.summary.downloaded += 1;
            rng.pick(&self.payloads).clone()
        } else {
            let mut sha = String::with_capacity(64);
            for _ in 0..4 {
                sha.push_str(&format!("{:016x}", rng.next()));
            }
            PayloadRef {
                sha256: sha,
                size: rng.range(10_000, 50_000_000),
                installed_size: rng.range(20_000, 200_000_000),
            }
        };
        let handler = if rng.chance(5) {
            HandlerSpec::Command {
                install: CommandSpec {
                    program: "setup.sh".into(),
                    args: vec!["--quiet".into()],
                    timeout_secs: 600,
                    exit_codes: [(0, ExitAction::Succeeded)].into(),
                },
                uninstall: None,
            }
        } else {
            HandlerSpec::Files {}
        };
        let mut installation_behavior = InstallationBehavior::default();
        if product == 5 {
            installation_behavior.reboot_behavior =
                InstallationRebootBehavior::AlwaysRequiresReboot;
        }
        if browse_only {
            self.summary.browse_only += 1;
        }
        UpdateDefinition {
            identity: UpdateIdentity {
                update_id: rng.uuid(),
                revision_number: rng.range(1, 300) as i32,
            },
            title,
            description,
            kb_article_ids,
            categories,
            msrc_severity,
            update_type: UpdateType::Software,
            deployment_action: DeploymentAction::Installation,
            is_mandatory,
            is_uninstallable: !rng.chance(3),
            eula_text,
            installation_behavior,
            uninstallation_behavior: installation_behavior,
            superseded_update_ids: Vec::new(),
            support_url: format!("https://support.example.invalid/kb/{kb}"),
            uninstallation_notes: String::new(),
            uninstallation_steps: Vec::new(),
            deadline,
            browse_only,
            is_assigned: None,
            auto_select_on_web_sites: None,
            applicability: Applicability::default(),
            bundled_updates: Vec::new(),
            allow_setid: false,
            payload,
            handler,
        }
    }

    fn arch_rule(&self, arch: ArchKind) -> Option<Rule> {
        match arch {
            ArchKind::Native => Some(Rule::Arch(vec![self.native.into()])),
            ArchKind::Foreign => Some(Rule::Arch(vec![self.foreign.into()])),
            ArchKind::All => None,
        }
    }

    fn os_rule(release: Release) -> Rule {
        let (op, value) = match release {
            Release::Bookworm => (VersionOp::Eq, "12"),
            Release::Bullseye => (VersionOp::Eq, "11"),
            Release::Any => (VersionOp::Ge, "11"),
        };
        Rule::OsRelease {
            field: "VERSION_ID".into(),
            op,
            value: value.into(),
        }
    }

    fn software(&mut self, family: &mut Family, packages: &[Package]) -> UpdateDefinition {
        let pkg = &packages[family.package];
        family.next += 1;
        let n = family.next;
        let suffix = match family.release {
            Release::Bullseye => "deb11u",
            _ => "deb12u",
        };
        let fixed = format!("{}+{suffix}{n}", pkg.base);
        let classification = weighted(&mut self.rng, CLASSIFICATION_WEIGHTS);
        let release_name = match family.release {
            Release::Bookworm => "Debian 12",
            Release::Bullseye => "Debian 11",
            Release::Any => "Debian 11 and later",
        };
        let arch_name = match family.arch {
            ArchKind::Native => self.native,
            ArchKind::Foreign => self.foreign,
            ArchKind::All => "all architectures",
        };
        let kb = 5_000_000 + self.updates.len();
        let what = match classification {
            SECURITY => "Security update",
            1 => "Critical update",
            7 => "Definition update",
            3 => "Feature pack",
            _ => "Update",
        };
        let title = format!(
            "{what} for {} {fixed} on {release_name} ({arch_name}) (KB{kb})",
            pkg.name
        );
        let mut def = self.base(title, classification, family.product);
        let rng = &mut self.rng;
        let qualified = if pkg.multi_arch && rng.chance(15) {
            format!("{}:{}", pkg.name, self.native)
        } else {
            pkg.name.clone()
        };
        def.applicability.is_installed = if rng.chance(95) {
            Some(Rule::Package {
                name: qualified.clone(),
                op: Some(VersionOp::Ge),
                version: Some(fixed),
            })
        } else {
            None
        };
        let mut all = Vec::new();
        all.extend(self.arch_rule(family.arch));
        all.push(Generator::os_rule(family.release));
        all.push(Rule::Package {
            name: qualified,
            op: None,
            version: None,
        });
        let rng = &mut self.rng;
        if rng.chance(10) {
            all.push(Rule::Any(vec![
                Rule::FileExists(format!("etc/{0}/{0}.conf", pkg.name)),
                Rule::FileExists(format!("/usr/lib/{}/enabled", pkg.name)),
            ]));
        }
        if rng.chance(5) {
            all.push(Rule::Not(Box::new(Rule::Package {
                name: format!("{}-legacy", pkg.name),
                op: None,
                version: None,
            })));
        }
        if rng.chance(5) && !self.servicing.is_empty() {
            let prerequisite = *rng.pick(&self.servicing);
            all.push(Rule::UpdateInstalled(prerequisite));
            self.summary.with_prerequisite += 1;
        }
        def.applicability.is_installable = Some(Rule::All(all));
        // About 30% of all updates supersede their family's previous one.
        if let Some(&previous) = family.history.last()
            && rng.chance(31)
        {
            def.superseded_update_ids.push(previous);
            if family.history.len() >= 2 && rng.chance(10) {
                def.superseded_update_ids
                    .push(family.history[family.history.len() - 2]);
            }
            self.summary.superseding += 1;
        }
        family.history.push(def.identity.update_id);
        def
    }

    fn driver(&mut self, device: &mut Device) -> UpdateDefinition {
        device.next += 1;
        let n = device.next;
        let vendor = VENDORS[device.vendor];
        let kb = 5_000_000 + self.updates.len();
        let title = format!(
            "{vendor} {} firmware 1.{n} for {} (KB{kb})",
            device.name, self.native
        );
        let mut def = self.base(title, DRIVERS, FIRMWARE);
        def.update_type = UpdateType::Driver;
        def.applicability.is_installable = Some(Rule::All(vec![
            Rule::Arch(vec![self.native.into(), std::env::consts::ARCH.into()]),
            Rule::FileExists(format!("lib/firmware/{vendor}/{}.bin", device.name)),
        ]));
        def.applicability.is_installed = Some(Rule::FileVersion {
            path: format!("lib/firmware/{vendor}/{}.version", device.name),
            pattern: self.patterns[device.pattern].clone(),
            op: Some(VersionOp::Ge),
            version: Some(format!("1.{n}")),
        });
        self.summary.file_version_rules += 1;
        self.summary.drivers += 1;
        if let Some(&previous) = device.history.last()
            && self.rng.chance(60)
        {
            def.superseded_update_ids.push(previous);
            self.summary.superseding += 1;
        }
        device.history.push(def.identity.update_id);
        def
    }

    fn bundle(&mut self, children: Vec<Uuid>, product: usize) -> UpdateDefinition {
        let kb = 5_000_000 + self.updates.len();
        let title = format!(
            "{} cumulative rollup {} for Debian 12 ({}) (KB{kb})",
            PRODUCTS[product],
            self.summary.bundles + 1,
            self.native
        );
        let mut def = self.base(title, ROLLUPS, product);
        def.browse_only = false;
        def.applicability.is_installed = Some(Rule::All(
            children.iter().map(|c| Rule::UpdateInstalled(*c)).collect(),
        ));
        def.applicability.is_installable = Some(Rule::All(vec![
            Rule::Arch(vec![self.native.into()]),
            Generator::os_rule(Release::Bookworm),
        ]));
        self.summary.bundled += children.len();
        def.bundled_updates = children;
        self.summary.bundles += 1;
        def
    }

    fn push(&mut self, def: UpdateDefinition) -> Uuid {
        let id = def.identity.update_id;
        self.updates.push(Arc::new(def));
        id
    }
}

struct Layout {
    catalog: PathBuf,
    root: PathBuf,
    state: PathBuf,
    boot_id: PathBuf,
}

impl Layout {
    fn new(dir: &Path) -> Layout {
        Layout {
            catalog: dir.join("catalog"),
            root: dir.join("root"),
            state: dir.join("state"),
            boot_id: dir.join("boot-id"),
        }
    }

    fn config(&self) -> AgentConfig {
        let mut config = AgentConfig::new(&self.root, &self.state, &self.catalog);
        config.boot_id_file = Some(self.boot_id.clone());
        config
    }
}

/// Eight real payloads, built by the catalog builder from tiny trees.
fn real_payloads(dir: &Path, out: &Path) -> wua::Result<Vec<PayloadRef>> {
    let src = dir.join("payload-src");
    for i in 0..8 {
        let folder = src.join(format!("{i:02}"));
        let meta = serde_json::json!({
            "identity": {"update_id": Uuid::from_u128(0x005e_a7c4_0000 + i as u128), "revision_number": 1},
            "title": format!("payload {i}"),
            "handler": {"kind": "files"},
        });
        write_file(&folder.join("update.json"), meta.to_string()).expect("write source");
        write_file(
            &folder.join(format!("payload/usr/share/wua-search-bench/part-{i}.txt")),
            format!("search benchmark payload {i}\n").repeat(20),
        )
        .expect("write source");
    }
    let report = wua::catalog::build(&src, out)?;
    fs::remove_dir_all(&src).ok();
    Ok(report
        .catalog
        .updates()
        .iter()
        .map(|u| u.payload.clone())
        .collect())
}

fn generate(dir: &Path, n: usize, seed: u64, compact: bool) -> wua::Result<Summary> {
    let layout = Layout::new(dir);
    let (native, foreign) = debian_arches();
    let mut rng = Rng::new(seed);

    // The machine's packages: 3,000 in the status file, 300 more that updates name but that
    // are not installed.
    let mut all_packages = packages(&mut rng, 3_300);
    for p in &mut all_packages[3_000..] {
        p.status = None;
    }
    let categories: Vec<Category> = CLASSIFICATIONS
        .iter()
        .chain(PRODUCTS)
        .map(|name| Category {
            id: rng.uuid(),
            name: (*name).to_string(),
        })
        .collect();
    let patterns = VERSION_PATTERNS
        .iter()
        .map(|p| Pattern::new(p).expect("valid pattern"))
        .collect();

    // Families: 2,400 installed packages and the 300 missing ones.
    let mut family_packages: Vec<usize> = (0..3_000).collect();
    for i in (1..family_packages.len()).rev() {
        family_packages.swap(i, rng.range(0, i as u64) as usize);
    }
    family_packages.truncate(2_400);
    family_packages.extend(3_000..3_300);
    for i in (1..family_packages.len()).rev() {
        family_packages.swap(i, rng.range(0, i as u64) as usize);
    }
    let mut families: Vec<Family> = family_packages
        .iter()
        .map(|&package| {
            let release = match rng.range(0, 99) {
                0..=84 => Release::Bookworm,
                85..=94 => Release::Bullseye,
                _ => Release::Any,
            };
            let arch = match rng.range(0, 99) {
                0..=69 => ArchKind::Native,
                70..=84 => ArchKind::Foreign,
                _ => ArchKind::All,
            };
            Family {
                package,
                release,
                arch,
                product: *rng.pick(&[0, 1, 1, 1, 2, 2, 3, 4, 5, 7, 8, 9]),
                planned: 0,
                next: 0,
                installed: 0,
                history: Vec::new(),
                has_config: rng.chance(30),
            }
        })
        .collect();
    let mut devices: Vec<Device> = (0..60)
        .map(|i| {
            let vendor = rng.range(0, VENDORS.len() as u64 - 1) as usize;
            Device {
                vendor,
                name: format!("{}-{i:02}", rng.pick(&["gpu", "nic", "wifi", "bt", "dsp"])),
                present: rng.chance(50),
                planned: 0,
                next: 0,
                installed: 0,
                history: Vec::new(),
                pattern: vendor,
            }
        })
        .collect();

    // First pass: what each update will be, so each family knows how many it gets and the
    // machine can be somewhere in the middle of each family's history.
    enum Slot {
        Software(usize),
        Driver(usize),
        Bundle(usize),
    }
    let bundles = (n / 333).max(1);
    let bundle_every = n / bundles;
    let mut plan = Vec::with_capacity(n);
    while plan.len() < n {
        if plan.len() % bundle_every == bundle_every - 1 && n - plan.len() > 5 {
            let k = rng.range(2, 4) as usize;
            for _ in 0..k {
                let u = rng.unit();
                let f = (families.len() as f64 * u * u) as usize;
                families[f].planned += 1;
                plan.push(Slot::Software(f));
            }
            plan.push(Slot::Bundle(k));
        } else if rng.chance(5) {
            let d = rng.range(0, devices.len() as u64 - 1) as usize;
            devices[d].planned += 1;
            plan.push(Slot::Driver(d));
        } else {
            // A skewed choice: low-numbered families get many more updates.
            let u = rng.unit();
            let f = (families.len() as f64 * u * u) as usize;
            families[f].planned += 1;
            plan.push(Slot::Software(f));
        }
    }
    plan.truncate(n);
    for f in &mut families {
        f.installed = rng.range(0, (f.planned as u64 * 6).div_ceil(5)) as u32;
    }
    for d in &mut devices {
        d.installed = rng.range(0, d.planned as u64 + 1) as u32;
    }

    // The target root.
    let mut versions: Vec<String> = all_packages
        .iter()
        .map(|p| installed_version(p, 0))
        .collect();
    for f in &families {
        if f.release != Release::Bullseye {
            versions[f.package] = installed_version(&all_packages[f.package], f.installed);
        }
    }
    let status = dpkg_status(&mut rng, &all_packages, &versions, native);
    write_file(&layout.root.join("var/lib/dpkg/status"), &status).expect("write status");
    write_file(&layout.root.join("etc/os-release"), OS_RELEASE).expect("write os-release");
    let mut root_files = 2;
    for f in &families {
        if f.has_config {
            let name = &all_packages[f.package].name;
            write_file(
                &layout.root.join(format!("etc/{name}/{name}.conf")),
                "# configuration\nenabled=yes\n",
            )
            .expect("write config");
            root_files += 1;
        }
    }
    for d in &devices {
        if d.present {
            let vendor = VENDORS[d.vendor];
            let base = layout
                .root
                .join(format!("lib/firmware/{vendor}/{}", d.name));
            write_file(&base.with_extension("bin"), [0u8; 512]).expect("write firmware");
            let version = format!("1.{}", d.installed);
            let text = match d.pattern {
                0 => format!("version={version}\n"),
                1 => format!("NAME={}\nVERSION = {version}\n", d.name),
                2 => format!("# firmware\nfw_version: {version}\n"),
                3 => format!("release {version}\nbuilt by vendor\n"),
                4 => format!("FIRMWARE_VERSION={version}\n"),
                _ => format!("ver {version}\n"),
            };
            write_file(&base.with_extension("version"), text).expect("write firmware");
            root_files += 2;
        }
    }
    write_file(&layout.boot_id, "search-bench-boot\n").expect("write boot id");

    let payloads = real_payloads(dir, &layout.catalog)?;
    let mut generator = Generator {
        rng,
        native,
        foreign,
        categories,
        payloads,
        patterns,
        updates: Vec::with_capacity(n),
        servicing: Vec::new(),
        summary: Summary {
            updates: n,
            families: families.len(),
            devices: devices.len(),
            bundles: 0,
            bundled: 0,
            superseding: 0,
            browse_only: 0,
            drivers: 0,
            with_prerequisite: 0,
            file_version_rules: 0,
            downloaded: 0,
            packages: 3_000,
            dpkg_bytes: status.len() as u64,
            root_files,
        },
    };
    let mut pending_children = Vec::new();
    for slot in plan {
        match slot {
            Slot::Software(f) => {
                let def = generator.software(&mut families[f], &all_packages);
                let id = generator.push(def);
                // Family 0 (the most updated) plays the servicing stack others require.
                if f == 0 {
                    generator.servicing.push(id);
                }
                pending_children.push(id);
            }
            Slot::Driver(d) => {
                let def = generator.driver(&mut devices[d]);
                generator.push(def);
                pending_children.clear();
            }
            Slot::Bundle(k) => {
                let children = pending_children.split_off(pending_children.len() - k);
                let product = generator.rng.range(0, 3) as usize;
                let def = generator.bundle(children, product);
                generator.push(def);
                pending_children.clear();
            }
        }
    }

    let file = CatalogFile {
        format: FORMAT_MARKER.into(),
        format_version: FORMAT_VERSION,
        name: format!("search benchmark ({n} updates, seed {seed})"),
        updates: generator.updates,
    };
    let path = layout.catalog.join(wua::catalog::CATALOG_FILE);
    let mut out = BufWriter::new(fs::File::create(&path).expect("create catalog.json"));
    if compact {
        serde_json::to_writer(&mut out, &file).expect("serialise");
    } else {
        serde_json::to_writer_pretty(&mut out, &file).expect("serialise");
    }
    out.write_all(b"\n").expect("write catalog.json");
    out.flush().expect("write catalog.json");
    Ok(generator.summary)
}

/// Installs eight updates through the installer and hides 200, so searches meet a store with
/// state.
fn prepare_state(layout: &Layout, seed: u64) -> wua::Result<(usize, usize)> {
    let mut config = layout.config();
    config.unsafe_io = true;
    let session = UpdateSession::open(config)?;
    let searcher = session.create_update_searcher();
    let found = searcher.search("IsInstalled = 0 and Type = 'Software' and BrowseOnly = 0")?;
    let mut chosen = UpdateCollection::new();
    let mut digests = HashSet::new();
    for update in found.updates.iter() {
        let def = update.definition();
        if update.is_downloaded()
            && def.eula_text.is_none()
            && def.bundled_updates.is_empty()
            && matches!(def.handler, HandlerSpec::Files {})
            && digests.insert(def.payload.sha256.clone())
        {
            chosen.add(update.clone())?;
        }
        if chosen.len() == 8 {
            break;
        }
    }
    let mut installer = session.create_update_installer();
    installer.set_updates(&chosen);
    let result = installer.install()?;
    if !result.result_code.is_success() {
        return Err(wua::Error::code(
            wua::hresult::WU_E_UNEXPECTED,
            format!("setting up the state: install failed: {result:?}"),
        ));
    }
    let all = session.catalog_updates()?;
    let mut rng = Rng::new(seed ^ 0x4849_4445);
    let mut hidden = 0;
    while hidden < 200 {
        let update = all.get(rng.range(0, all.len() as u64 - 1) as usize)?;
        if update.is_mandatory() || update.deadline().is_some() || update.is_hidden() {
            continue;
        }
        update.set_hidden(true)?;
        hidden += 1;
    }
    Ok((chosen.len(), hidden))
}

// --- Measuring ---------------------------------------------------------------------------------

struct Stats {
    runs: usize,
    /// Every sample, in the order taken.
    samples: Vec<Duration>,
    median: Duration,
    min: Duration,
    max: Duration,
}

fn stats(taken: Vec<Duration>) -> Stats {
    let mut samples = taken.clone();
    samples.sort();
    let n = samples.len();
    let median = if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2
    };
    Stats {
        runs: n,
        samples: taken,
        median,
        min: samples[0],
        max: samples[n - 1],
    }
}

fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1000.0;
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Times `warmup` untimed and `runs` timed calls of `f`. What `f` returns is dropped outside
/// the timed region.
fn measure<T>(warmup: usize, runs: usize, mut f: impl FnMut() -> T) -> (Stats, T) {
    let mut last = None;
    for _ in 0..warmup {
        last = Some(f());
        drop(last.take());
    }
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        drop(last.take());
        let start = Instant::now();
        let value = f();
        samples.push(start.elapsed());
        last = Some(value);
    }
    (stats(samples), last.expect("at least one run"))
}

fn rss_mib() -> String {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| -> Option<f64> {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
    };
    match (kib("VmRSS:"), kib("VmHWM:")) {
        (Some(rss), Some(hwm)) => format!("{:.0} MiB (peak {:.0} MiB)", rss / 1024.0, hwm / 1024.0),
        _ => "unknown".into(),
    }
}

fn dir_bytes(dir: &Path) -> (u64, usize) {
    let mut total = 0;
    let mut count = 0;
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if let Ok(m) = e.metadata() {
                total += m.len();
                count += 1;
            }
        }
    }
    (total, count)
}

struct Args {
    updates: usize,
    seed: u64,
    dir: Option<PathBuf>,
    keep: bool,
    reuse: bool,
    generate_only: bool,
    only: Option<String>,
    load_runs: usize,
    runs: usize,
    compact: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        updates: 100_000,
        seed: 7,
        dir: None,
        keep: false,
        reuse: false,
        generate_only: false,
        only: None,
        load_runs: 7,
        runs: 25,
        compact: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        let number = |v: String, name: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{name}: {v:?} is not a number"))
        };
        match a.as_str() {
            "--updates" => args.updates = number(value("--updates")?, "--updates")? as usize,
            "--seed" => args.seed = number(value("--seed")?, "--seed")?,
            "--dir" => args.dir = Some(PathBuf::from(value("--dir")?)),
            "--keep" => args.keep = true,
            "--reuse" => args.reuse = true,
            "--generate-only" => args.generate_only = true,
            "--only" => args.only = Some(value("--only")?),
            "--load-runs" => {
                args.load_runs = number(value("--load-runs")?, "--load-runs")? as usize
            }
            "--runs" => args.runs = number(value("--runs")?, "--runs")? as usize,
            "--compact" => args.compact = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.updates < 100 {
        return Err("--updates must be at least 100".into());
    }
    if args.reuse && args.dir.is_none() {
        return Err("--reuse needs --dir".into());
    }
    if args.load_runs == 0 || args.runs == 0 {
        return Err("--load-runs and --runs must be at least 1".into());
    }
    if !args.only.as_deref().is_none_or(|o| {
        matches!(o, "load" | "search" | "breakdown")
            || o.strip_prefix("search:")
                .is_some_and(|k| k.parse::<usize>().is_ok())
    }) {
        return Err("--only is load, search, search:K or breakdown".into());
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("search-bench: {e}");
            eprintln!(
                "usage: search-bench [--updates N] [--seed N] [--dir DIR] [--keep] [--reuse] \
                 [--generate-only] [--only load|search] [--load-runs N] [--runs N] [--compact]"
            );
            return ExitCode::from(64);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("search-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> wua::Result<()> {
    let temp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::Builder::new()
                .prefix("wua-search-bench-")
                .tempdir()
                .map_err(|e| wua::Error::io("cannot create a temporary directory", "/tmp", e))?;
            temp.path().to_path_buf()
        }
    };
    let layout = Layout::new(&dir);
    let mut setup = Vec::new();
    if !args.reuse {
        if fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()) {
            return Err(wua::Error::code(
                wua::hresult::E_INVALIDARG,
                format!(
                    "{} is not empty; pass an empty or new --dir, or --reuse",
                    dir.display()
                ),
            ));
        }
        eprintln!(
            "search-bench: generating {} updates in {}",
            args.updates,
            dir.display()
        );
        let started = Instant::now();
        let s = generate(&dir, args.updates, args.seed, args.compact)?;
        let generated = started.elapsed();
        let started = Instant::now();
        let (installed, hidden) = prepare_state(&layout, args.seed)?;
        let state_time = started.elapsed();
        setup.push(format!(
            "- generated in {:.1} s, state prepared in {:.1} s (seed {}, `--updates {}`{})",
            generated.as_secs_f64(),
            state_time.as_secs_f64(),
            args.seed,
            args.updates,
            if args.compact { ", `--compact`" } else { "" }
        ));
        setup.push(format!(
            "- updates: {} in {} package families and {} firmware devices; {} superseding an \
             earlier one ({:.0}%); {} browse-only; {} drivers; {} bundles of {} updates; {} with an \
             `update_installed` prerequisite; {} `file_version` rules; {} with a payload present",
            s.updates,
            s.families,
            s.devices,
            s.superseding,
            100.0 * s.superseding as f64 / s.updates as f64,
            s.browse_only,
            s.drivers,
            s.bundles,
            s.bundled,
            s.with_prerequisite,
            s.file_version_rules,
            s.downloaded
        ));
        setup.push(format!(
            "- target root: `etc/os-release` (Debian 12), `var/lib/dpkg/status` with {} packages \
             ({:.1} MB), {} files in all; state: {installed} updates installed by wua, {hidden} \
             hidden",
            s.packages,
            s.dpkg_bytes as f64 / 1e6,
            s.root_files
        ));
    }
    let catalog_json = layout.catalog.join(wua::catalog::CATALOG_FILE);
    let json_bytes = fs::metadata(&catalog_json)
        .map_err(|e| wua::Error::io("cannot read", &catalog_json, e))?
        .len();
    let (payload_bytes, payload_files) = dir_bytes(&layout.catalog.join(wua::catalog::PAYLOAD_DIR));
    setup.push(format!(
        "- catalog on disk: `catalog.json` {json_bytes} bytes ({:.1} MiB), {payload_files} \
         payload files of {payload_bytes} bytes",
        json_bytes as f64 / 1_048_576.0
    ));
    if args.generate_only {
        println!("{}", setup.join("\n"));
        if args.dir.is_none() {
            eprintln!("search-bench: --generate-only without --dir: nothing kept");
        }
        return Ok(());
    }

    let mut rows = Vec::new();
    let mut verdicts = Vec::new();
    let mut sample_lines = Vec::new();
    let mut row = |name: &str, s: &Stats, returned: String| {
        let all: Vec<String> = s.samples.iter().map(|d| ms(*d)).collect();
        sample_lines.push(format!("- {name}: {}", all.join(" ")));
        format!(
            "| {name} | {} | {} | {} | {} | {returned} |",
            s.runs,
            ms(s.median),
            ms(s.min),
            ms(s.max)
        )
    };
    let only = args.only.as_deref();
    if only.is_none() || only == Some("load") {
        eprintln!("search-bench: timing Catalog::open");
        let (s, catalog) = measure(1, args.load_runs, || Catalog::open(&layout.catalog));
        let count = catalog?.updates().len();
        rows.push(row("`Catalog::open`", &s, format!("{count} updates")));
        eprintln!("search-bench: timing UpdateSession::open");
        let (s, session) = measure(1, args.load_runs, || UpdateSession::open(layout.config()));
        session?;
        rows.push(row(
            "`UpdateSession::open` (catalog + store)",
            &s,
            String::new(),
        ));
        let met = s.median <= Duration::from_secs(1);
        verdicts.push(format!(
            "- load (`UpdateSession::open`, median {} ms; target ≤ 1000 ms): {}",
            ms(s.median),
            if met { "**met**" } else { "**NOT met**" }
        ));
    }
    if only.is_none() || only.is_some_and(|o| o.starts_with("search")) {
        // `--only search:K` runs the K-th search alone (1-based; the last is explain), for
        // profiling one criteria string.
        let pick: Option<usize> = only
            .and_then(|o| o.strip_prefix("search:"))
            .and_then(|k| k.parse().ok());
        let mut first_search = Duration::ZERO;
        // The first search of a session: nothing a session might cache is warm yet. Each run
        // opens a new session (not timed) and times its first default search.
        if pick.is_none_or(|p| p == 1) {
            eprintln!("search-bench: timing the first search of new sessions");
            let mut samples = Vec::new();
            let mut returned = 0;
            for _ in 0..args.load_runs {
                let session = UpdateSession::open(layout.config())?;
                let searcher = session.create_update_searcher();
                let start = Instant::now();
                let result = searcher.search("")?;
                samples.push(start.elapsed());
                returned = result.updates.len();
                drop(result);
            }
            let s = stats(samples);
            first_search = s.median;
            rows.push(row(
                "search `\"\"` (default), the first of a new session",
                &s,
                returned.to_string(),
            ));
        }
        let session = UpdateSession::open(layout.config())?;
        setup.push(format!(
            "- resident memory with one session open: {}",
            rss_mib()
        ));
        let searcher = session.create_update_searcher();
        let catalog = session.catalog()?;
        // The id searched for is one the default search returns (the middle one), so the
        // search finds it rather than nothing.
        let default_result = searcher.search("")?;
        let one = match default_result.updates.len() {
            0 => catalog.updates()[0].identity.update_id,
            n => default_result.updates.get(n / 2)?.identity().update_id,
        };
        drop(default_result);
        let category = catalog.updates()[0].categories[1].clone();
        let criteria = [
            (
                "`\"\"` (default: `IsInstalled = 0 and IsHidden = 0`)".to_string(),
                String::new(),
            ),
            (
                "`IsInstalled = 1`".to_string(),
                "IsInstalled = 1".to_string(),
            ),
            (
                "`UpdateID = '<one id>'`".to_string(),
                format!("UpdateID = '{one}'"),
            ),
            (
                format!("`CategoryIDs contains '<{}>'`", category.name),
                format!("CategoryIDs contains '{}'", category.id),
            ),
            (
                "`Type = 'Driver' or BrowseOnly = 1`".to_string(),
                "Type = 'Driver' or BrowseOnly = 1".to_string(),
            ),
            (
                "`IsInstalled = 0 and IsHidden = 0 and Type = 'Software'`".to_string(),
                "IsInstalled = 0 and IsHidden = 0 and Type = 'Software'".to_string(),
            ),
        ];
        let mut worst = first_search;
        for (k, (label, c)) in criteria.iter().enumerate() {
            if pick.is_some_and(|p| p != k + 1) {
                continue;
            }
            eprintln!("search-bench: timing search {c:?}");
            let (s, result) = measure(3, args.runs, || searcher.search(c));
            let result = result?;
            worst = worst.max(s.median);
            let warnings = if result.warnings.is_empty() {
                String::new()
            } else {
                format!(", {} warnings", result.warnings.len())
            };
            rows.push(row(
                &format!("search {label}"),
                &s,
                format!("{}{warnings}", result.updates.len()),
            ));
        }
        if worst > Duration::ZERO {
            verdicts.push(format!(
                "- search (slowest median of the searches, the first of a session included: {} ms; target ≤ 50 ms): {}",
                ms(worst),
                if worst <= Duration::from_millis(50) {
                    "**met**"
                } else {
                    "**NOT met**"
                }
            ));
        }
        if pick.is_none_or(|p| p == criteria.len() + 1) {
            eprintln!("search-bench: timing explain");
            let (s, explained) = measure(3, args.runs, || searcher.explain(""));
            let (result, explanations) = explained?;
            rows.push(row(
                "explain `\"\"` (default)",
                &s,
                format!(
                    "{} ({} explanations)",
                    result.updates.len(),
                    explanations.len()
                ),
            ));
            verdicts.push(format!(
                "- explain (median {} ms) is reported, not targeted",
                ms(s.median)
            ));
        }
    }
    let mut breakdown = Vec::new();
    if only.is_none() || only == Some("breakdown") {
        breakdown = phases(&layout, args.load_runs.min(5))?;
    }

    println!("| measurement | runs | median (ms) | min (ms) | max (ms) | updates returned |");
    println!("|---|---:|---:|---:|---:|---|");
    for r in &rows {
        println!("{r}");
    }
    println!();
    println!("{}", verdicts.join("\n"));
    println!();
    if !breakdown.is_empty() {
        println!(
            "Where the time goes: the same work done piece by piece through the public API \
             (median of {} runs each; not a profile, see docs/BENCHMARKS.md for that):",
            args.load_runs.min(5)
        );
        println!();
        println!("| step | median (ms) | what it does |");
        println!("|---|---:|---|");
        for (step, d, what) in &breakdown {
            println!("| {step} | {} | {what} |", ms(*d));
        }
        println!();
    }
    println!("{}", setup.join("\n"));
    println!();
    println!("Every sample, in the order taken (ms):");
    println!();
    println!("{}", sample_lines.join("\n"));
    if args.dir.is_none() && args.keep {
        let kept = temp_keep(&dir);
        eprintln!("search-bench: kept {}", kept.display());
    }
    Ok(())
}

/// Every `file_version` pattern in a rule.
fn patterns_in(rule: &Rule, out: &mut Vec<String>) {
    match rule {
        Rule::All(rules) | Rule::Any(rules) => rules.iter().for_each(|r| patterns_in(r, out)),
        Rule::Not(inner) => patterns_in(inner, out),
        Rule::FileVersion { pattern, .. } => out.push(pattern.as_str().to_string()),
        _ => {}
    }
}

/// The steps of loading and searching, done one at a time through the public API, so the
/// report says where the time goes without a profiler. Each is the median of `runs`; what a
/// step returns is dropped outside the timing, except in the drop step.
fn phases(layout: &Layout, runs: usize) -> wua::Result<Vec<(String, Duration, String)>> {
    eprintln!("search-bench: timing the steps of loading and searching");
    let path = layout.catalog.join(wua::catalog::CATALOG_FILE);
    let mut out: Vec<(String, Duration, String)> = Vec::new();
    let mut step = |name: &str, d: Duration, what: &str| {
        out.push((name.to_string(), d, what.to_string()));
    };

    let (s, bytes) = measure(0, runs, || fs::read(&path));
    let bytes = bytes.map_err(|e| wua::Error::io("cannot read", &path, e))?;
    step(
        "load: read `catalog.json`",
        s.median,
        "`std::fs::read` (from the page cache)",
    );
    let (s, _) = measure(0, runs, || {
        serde_json::from_slice::<serde::de::IgnoredAny>(&bytes)
    });
    step(
        "load: one JSON pass that builds nothing",
        s.median,
        "`serde_json::from_slice::<IgnoredAny>`: the floor of any serde_json pass over the file (at 1f0f049 `parse_catalog` made such a pass for `format` and `format_version` before the real one)",
    );
    let (s, file) = measure(0, runs, || serde_json::from_slice::<CatalogFile>(&bytes));
    let file = file.map_err(|e| wua::Error::invalid_file(&path, e))?;
    step(
        "load: deserialise `CatalogFile`",
        s.median,
        "serde_json into the definitions, compiling every `file_version` regex",
    );
    let mut patterns = Vec::new();
    let mut rules = Vec::new();
    for u in &file.updates {
        for rule in [
            &u.applicability.is_installed,
            &u.applicability.is_installable,
        ]
        .into_iter()
        .flatten()
        {
            patterns_in(rule, &mut patterns);
            rules.push(rule);
        }
    }
    let (s, _) = measure(0, runs, || {
        patterns
            .iter()
            .map(|p| Pattern::new(p).expect("valid"))
            .collect::<Vec<_>>()
    });
    step(
        "load: … of which compiling the regexes",
        s.median,
        &format!(
            "`Pattern::new` for the {} `file_version` patterns ({} distinct)",
            patterns.len(),
            patterns.iter().collect::<HashSet<_>>().len()
        ),
    );
    let (s, _) = measure(0, runs, || {
        rules
            .iter()
            .filter(|r| wua::rules::validate(r).is_ok())
            .count()
    });
    step(
        "load: validate every rule",
        s.median,
        &format!("`rules::validate` on the {} rules", rules.len()),
    );
    let (s, parsed) = measure(0, runs, || wua::catalog::parse_catalog(&path, &bytes));
    parsed?;
    step(
        "load: `parse_catalog` in all",
        s.median,
        "pre-pass + deserialise + validation of definitions and relationships",
    );
    let mut drops = Vec::new();
    for _ in 0..runs {
        let copy = serde_json::from_slice::<CatalogFile>(&bytes).expect("parsed above");
        let start = Instant::now();
        drop(copy);
        drops.push(start.elapsed());
    }
    step(
        "drop a loaded catalog",
        stats(drops).median,
        "freeing the definitions (not part of loading; paid when a session is dropped)",
    );
    drop(bytes);

    // Search building blocks.
    let session = UpdateSession::open(layout.config())?;
    let (s, snap) = measure(1, runs, || session.store().snapshot());
    snap?;
    step(
        "search: store snapshot",
        s.median,
        "`Store::snapshot` (installed, hidden, EULAs, pending reboots)",
    );
    let first_package = rules.iter().find_map(|r| match r {
        Rule::Package { .. } => Some((*r).clone()),
        _ => None,
    });
    if let Some(rule) = first_package {
        let (s, _) = measure(1, runs, || {
            rule.evaluate(&wua::rules::Machine::new(&layout.root), &mut |_| false)
        });
        step(
            "search: read the dpkg status file",
            s.median,
            "a new `Machine` and one `package` rule: parses `var/lib/dpkg/status` once",
        );
    }
    let catalog = session.catalog()?;
    let definitions = catalog.updates();
    for (name, pick) in [("is_installed", 0usize), ("is_installable", 1usize)] {
        let count = definitions
            .iter()
            .filter(|u| {
                [
                    &u.applicability.is_installed,
                    &u.applicability.is_installable,
                ][pick]
                    .is_some()
            })
            .count();
        let (s, _) = measure(1, runs, || {
            let machine = wua::rules::Machine::new(&layout.root);
            let mut holds = 0;
            for u in definitions {
                let rule = [
                    &u.applicability.is_installed,
                    &u.applicability.is_installable,
                ][pick];
                if let Some(rule) = rule
                    && rule
                        .evaluate(&machine, &mut |_| false)
                        .is_ok_and(|v| v.holds)
                {
                    holds += 1;
                }
            }
            holds
        });
        step(
            &format!("search: evaluate every `{name}` rule once"),
            s.median,
            &format!(
                "`Rule::evaluate` on {count} rules with a new `Machine` (`update_installed` answered false), reasons included"
            ),
        );
    }
    let versions: Vec<&str> = rules
        .iter()
        .filter_map(|r| match r {
            Rule::Package {
                version: Some(v), ..
            } => Some(v.as_str()),
            _ => None,
        })
        .collect();
    let (s, _) = measure(1, runs, || {
        versions
            .windows(2)
            .filter(|w| wua::rules::compare_versions(w[0], w[1]).is_ok())
            .count()
    });
    step(
        "search: compare Debian versions",
        s.median,
        &format!(
            "`rules::compare_versions` {} times (each parses both strings)",
            versions.len().saturating_sub(1)
        ),
    );
    let (s, _) = measure(1, runs, || {
        rules.iter().map(|r| r.to_string().len()).sum::<usize>()
    });
    step(
        "search: print every rule",
        s.median,
        &format!(
            "`Rule::to_string` on the {} rules (reasons print the rule they explain)",
            rules.len()
        ),
    );
    let (s, all) = measure(1, runs, || session.catalog_updates());
    step(
        "search: `catalog_updates()`",
        s.median,
        &format!(
            "every update of the catalog with its state ({} `Update` objects)",
            all?.len()
        ),
    );
    Ok(out)
}

/// Keeps a temporary directory by moving it beside itself under a name `TempDir` does not own.
fn temp_keep(dir: &Path) -> PathBuf {
    let kept = dir.with_extension("kept");
    if fs::rename(dir, &kept).is_ok() {
        kept
    } else {
        dir.to_path_buf()
    }
}

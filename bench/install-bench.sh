#!/usr/bin/env bash
# The install benchmark of issue 3 (item 6): wua versus `tar --zstd -x` + sync versus `dpkg -i`,
# installing and uninstalling the same generated tree. See docs/BENCHMARKS.md.
#
#   bash bench/install-bench.sh
#
# Steps: install missing Debian tools (apt-get; needs root), build wua and the tree generator
# (release), generate the payload tree (crates/wua/examples/make-bench-tree.rs), build from it
# a wua catalog, a .tar.zst and a .deb, then run ROUNDS rounds (after WARMUP untimed ones). A
# round installs with each tool into a fresh empty root, then uninstalls with each tool, the
# tools in a rotated order each round. Every timed step starts after a `sync`; it reports
# time-to-return (the command) and time-to-durable (the command plus a `sync`). Every install is
# checked against the source tree (the list of paths, types, modes, sizes, link targets, and a
# digest of all file contents) and every uninstall for an empty root, so a broken run stops
# the benchmark instead of being reported as fast. The medians go to stdout and to
# bench/results/install-<date>.md.
#
# Environment:
#   BENCH_DIR   work directory (default /tmp/wua-bench); must be on the file system to measure
#   ROUNDS      timed rounds (default 9, a multiple of 3 so each tool goes first as often;
#               the issue asks for at least 5)
#   WARMUP      untimed rounds first (default 1)
#   SEED, SCALE passed to make-bench-tree (default 3 and 1: ~5,500 files, ~172 MiB)
#   BENCH_REV   build wua from this commit (a `git archive` snapshot in $BENCH_DIR/src, built in
#               $BENCH_DIR/target) instead of the working tree, e.g. BENCH_REV=HEAD while the
#               working tree does not build
#   RESULTS     the results file (default bench/results/install-<UTC date and time>.md)
#   BENCH_FS    empty (default): the roots go in $BENCH_DIR/run, on $BENCH_DIR's file system.
#               "loop": on a fresh journalled ext4 image loop-mounted at $BENCH_DIR/mnt (root
#               only), for a file system nobody else writes to (docs/BENCHMARKS.md says why)
#
# Not part of `cargo test` or .ci/run: it takes minutes, installs packages and measures the
# machine it runs on.
set -euo pipefail
export LC_ALL=C

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/wua-bench}
ROUNDS=${ROUNDS:-9}
WARMUP=${WARMUP:-1}
SEED=${SEED:-3}
SCALE=${SCALE:-1}
BENCH_REV=${BENCH_REV:-}
BENCH_FS=${BENCH_FS:-}
PKG=wua-bench-payload
UPDATE_ID=b3e1c0de-0003-4006-8000-000000000006
TOOLS=(wua tar dpkg)

say() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'install-bench: %s\n' "$*" >&2
    exit 1
}

# --- 1. Tools ---------------------------------------------------------------------------------
need=()
for cmd in tar zstd dpkg dpkg-deb find md5sum awk sort sync git cargo; do
    command -v "$cmd" >/dev/null || case $cmd in
        zstd) need+=(zstd) ;;
        dpkg | dpkg-deb) need+=(dpkg) ;;
        tar) need+=(tar) ;;
        find) need+=(findutils) ;;
        md5sum | sort | sync) need+=(coreutils) ;;
        awk) need+=(mawk) ;;
        git) need+=(git) ;;
        cargo) die "cargo is missing: install Rust (rustup) first" ;;
    esac
done
if ((${#need[@]})); then
    [[ $(id -u) == 0 ]] || die "missing ${need[*]}: run as root, or install them: apt-get install ${need[*]}"
    say "installing ${need[*]} (apt-get)"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi
tar --help | grep -q -- --zstd || die "this tar has no --zstd (GNU tar 1.31 or later needed)"

# --- 2. Build ---------------------------------------------------------------------------------
mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
commit=$(git -C "$REPO" rev-parse --short HEAD)
dirty=$(git -C "$REPO" status --porcelain --untracked-files=no -- crates | wc -l)
if [[ -n $BENCH_REV ]]; then
    commit=$(git -C "$REPO" rev-parse --short "$BENCH_REV^{commit}")
    src=$BENCH_DIR/src
    say "building wua $commit from a snapshot in $src"
    rm -rf "$src"
    mkdir -p "$src"
    git -C "$REPO" archive "$commit" | tar -x -C "$src"
    gen_src=crates/wua/examples/make-bench-tree.rs
    [[ -e $src/$gen_src ]] || cp "$REPO/$gen_src" "$src/$gen_src"
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$BENCH_DIR/target}
    built_from="a clean snapshot of commit $commit (BENCH_REV=$BENCH_REV)"
else
    src=$REPO
    built_from="the working tree at $commit"
    ((dirty == 0)) || built_from+=" with uncommitted changes to $dirty tracked files under crates/"
fi
target=${CARGO_TARGET_DIR:-$src/target}
(cd "$src" && cargo build --release -q -p wua-cli -p wua --bins --examples) ||
    die "the build failed; BENCH_REV=HEAD builds the last commit instead of the working tree"
WUA=$target/release/wua
GEN=$target/release/examples/make-bench-tree

# --- 3. Payload -------------------------------------------------------------------------------
say "generating the payload tree (seed $SEED, scale $SCALE)"
rm -rf "$BENCH_DIR/tree" "$BENCH_DIR/catalog-src" "$BENCH_DIR/catalog" "$BENCH_DIR/deb-root" \
    "$BENCH_DIR/run" "$BENCH_DIR/pkg.tar.zst" "$BENCH_DIR/$PKG.deb"
tree_summary=$("$GEN" "$BENCH_DIR/tree" --seed "$SEED" --scale "$SCALE")
say "$tree_summary"
tree=$BENCH_DIR/tree
mapfile -t top < <(cd "$tree" && ls -A)

# The shape of a tree below DIR (the payload's top-level entries only): types, modes, sizes of
# files, link targets; then a digest of every file's bytes in path order.
shape() {
    (cd "$1" && {
        find "${top[@]}" -type d -printf 'd %m %p\n'
        find "${top[@]}" -type f -printf 'f %m %s %p\n'
        find "${top[@]}" -type l -printf 'l %p -> %l\n'
    } | sort | md5sum | cut -d' ' -f1)
}
content() {
    (cd "$1" && find "${top[@]}" -type f -print0 | sort -z | xargs -0 cat | md5sum | cut -d' ' -f1)
}
ref_shape=$(shape "$tree")
ref_content=$(content "$tree")
n_files=$(find "$tree" -type f | wc -l)
n_links=$(find "$tree" -type l | wc -l)
n_dirs=$(find "$tree" -mindepth 1 -type d | wc -l)
tree_bytes=$(find "$tree" -type f -printf '%s\n' | awk '{s += $1} END {print s}')

say "building the wua catalog"
mkdir -p "$BENCH_DIR/catalog-src/01-bench"
cp -al "$tree" "$BENCH_DIR/catalog-src/01-bench/payload"
echo "install benchmark" >"$BENCH_DIR/catalog-src/catalog-name"
cat >"$BENCH_DIR/catalog-src/01-bench/update.json" <<EOF
{
  "identity": { "update_id": "$UPDATE_ID", "revision_number": 1 },
  "title": "Install benchmark payload",
  "description": "The tree generated by make-bench-tree (seed $SEED, scale $SCALE).",
  "handler": { "kind": "files" }
}
EOF
"$WUA" -q catalog build "$BENCH_DIR/catalog-src" "$BENCH_DIR/catalog"
wua_payload=$(ls "$BENCH_DIR"/catalog/payloads/*.tar.zst)

say "building the .tar.zst (zstd -10, as wua's payloads)"
# ZSTD_CLEVEL: the level wua's catalog builder uses, so both archives decompress the same work.
ZSTD_CLEVEL=10 ZSTD_NBTHREADS=$(nproc) tar --zstd --sort=name --owner=0 --group=0 \
    --numeric-owner -C "$tree" -cf "$BENCH_DIR/pkg.tar.zst" "${top[@]}"

say "building the .deb"
cp -al "$tree" "$BENCH_DIR/deb-root"
mkdir -p "$BENCH_DIR/deb-root/DEBIAN"
cat >"$BENCH_DIR/deb-root/DEBIAN/control" <<EOF
Package: $PKG
Version: 1.0
Architecture: all
Maintainer: wua benchmark <bench@example.invalid>
Description: wua install benchmark payload
 The tree generated by make-bench-tree (seed $SEED, scale $SCALE).
EOF
deb_compression="zstd -10"
if ! dpkg-deb --root-owner-group -Zzstd -z10 --build "$BENCH_DIR/deb-root" "$BENCH_DIR/$PKG.deb" >/dev/null 2>&1; then
    say "this dpkg-deb cannot write zstd; using xz"
    deb_compression="xz -6 (this dpkg-deb has no zstd)"
    dpkg-deb --root-owner-group -Zxz -z6 --build "$BENCH_DIR/deb-root" "$BENCH_DIR/$PKG.deb" >/dev/null
fi
rm -rf "$BENCH_DIR/deb-root" "$BENCH_DIR/catalog-src"

# --- 4. Rounds --------------------------------------------------------------------------------
run=$BENCH_DIR/run
mnt=$BENCH_DIR/mnt
unmount() { if mountpoint -q "$mnt"; then umount "$mnt"; fi; }
case $BENCH_FS in
    "") ;;
    loop)
        say "making a fresh ext4 file system on a loop device at $mnt"
        unmount
        rm -f "$BENCH_DIR/fs.img"
        truncate -s 2G "$BENCH_DIR/fs.img"
        mkfs.ext4 -q -F "$BENCH_DIR/fs.img"
        mkdir -p "$mnt"
        mount -o loop "$BENCH_DIR/fs.img" "$mnt"
        trap 'unmount; rm -f "$BENCH_DIR/fs.img"' EXIT
        run=$mnt/run
        ;;
    *) die "BENCH_FS must be empty or loop, not $BENCH_FS" ;;
esac
log=$BENCH_DIR/bench.log
samples=$BENCH_DIR/samples.tsv
: >"$log"
printf 'round\ttool\top\treturn\tdurable\n' >"$samples"
echo bench-boot >"$BENCH_DIR/boot-id"

root_of() { echo "$run/$1/root"; }
DPKG=(dpkg --force-not-root --force-script-chrootless --log=/dev/null)

# Fresh empty root (and state) for TOOL, untimed.
prepare() {
    local tool=$1 root
    root=$(root_of "$tool")
    rm -rf "${run:?}/$tool"
    mkdir -p "$root"
    case $tool in
        wua) mkdir -p "$run/wua/state" ;;
        dpkg)
            mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/var/lib/dpkg/triggers"
            touch "$root/var/lib/dpkg/status" "$root/var/lib/dpkg/available"
            ;;
    esac
}

install_cmd() {
    local root
    root=$(root_of "$1")
    case $1 in
        wua) "$WUA" --catalog "$BENCH_DIR/catalog" --root "$root" --state-dir "$run/wua/state" \
            --boot-id-file "$BENCH_DIR/boot-id" install --all -q ;;
        tar) tar --zstd -xf "$BENCH_DIR/pkg.tar.zst" -C "$root" ;;
        dpkg) "${DPKG[@]}" --root="$root" --admindir="$root/var/lib/dpkg" -i "$BENCH_DIR/$PKG.deb" ;;
    esac
}

uninstall_cmd() {
    local root
    root=$(root_of "$1")
    case $1 in
        wua) "$WUA" --catalog "$BENCH_DIR/catalog" --root "$root" --state-dir "$run/wua/state" \
            --boot-id-file "$BENCH_DIR/boot-id" uninstall --all -q ;;
        tar) (cd "$root" && rm -rf "${top[@]}") ;;
        dpkg) "${DPKG[@]}" --root="$root" --admindir="$root/var/lib/dpkg" -r "$PKG" ;;
    esac
}

# The root's top-level entries, as one line.
entries() { (cd "$1" && ls -A | tr '\n' ' '); }

check_installed() {
    local tool=$1 root want got
    root=$(root_of "$tool")
    want="${top[*]} "
    [[ $tool == dpkg ]] && want=$(printf '%s\n' "${top[@]}" var | sort | tr '\n' ' ')
    got=$(entries "$root")
    [[ $got == "$want" ]] || die "$tool install: the root holds [$got], expected [$want]"
    [[ $(shape "$root") == "$ref_shape" ]] ||
        die "$tool install: the tree differs from the source (paths, modes, sizes or links)"
    [[ $(content "$root") == "$ref_content" ]] || die "$tool install: file contents differ from the source"
}

check_uninstalled() {
    local tool=$1 root want="" got
    root=$(root_of "$tool")
    [[ $tool == dpkg ]] && want="var "
    got=$(entries "$root")
    [[ $got == "$want" ]] || die "$tool uninstall: the root still holds [$got]"
    if [[ $tool == dpkg ]]; then
        ! grep -q "^Package: $PKG\$" "$root/var/lib/dpkg/status" || die "dpkg uninstall: $PKG still in status"
    fi
}

# Times one step: sync first, then the command (time-to-return), then sync (time-to-durable).
# Appends a sample unless it is a warm-up round.
timed() {
    local round=$1 tool=$2 op=$3 t0 t1 t2
    sync
    t0=$EPOCHREALTIME
    if ! "${op}_cmd" "$tool" >>"$log" 2>&1; then
        tail -n 20 "$log" >&2
        die "$tool $op failed in round $round (log: $log)"
    fi
    t1=$EPOCHREALTIME
    sync
    t2=$EPOCHREALTIME
    local ret dur
    ret=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')
    dur=$(awk -v a="$t0" -v b="$t2" 'BEGIN {printf "%.3f", b - a}')
    if ((round > 0)); then
        printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$tool" "$op" "$ret" "$dur" >>"$samples"
    fi
    printf '    %-5s %-9s return %7.3f s  durable %7.3f s\n' "$tool" "$op" "$ret" "$dur" >&2
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
started=$EPOCHREALTIME
for ((i = 1 - WARMUP; i <= ROUNDS; i++)); do
    # Rotate the order each round so no tool always runs first (or right after another).
    k=$(((i + WARMUP) % 3))
    order=("${TOOLS[@]:k}" "${TOOLS[@]:0:k}")
    if ((i > 0)); then say "round $i/$ROUNDS: ${order[*]}"; else say "warm-up round: ${order[*]}"; fi
    for tool in "${order[@]}"; do
        prepare "$tool"
        timed "$i" "$tool" install
        check_installed "$tool"
    done
    for tool in "${order[@]}"; do
        timed "$i" "$tool" uninstall
        check_uninstalled "$tool"
    done
done
elapsed=$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.0f", b - a}')
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
rm -rf "$run"

# --- 5. Report --------------------------------------------------------------------------------
median() { # TOOL OP COLUMN(4 return, 5 durable)
    awk -F'\t' -v t="$1" -v o="$2" -v c="$3" '$2 == t && $3 == o {print $c}' "$samples" | sort -g |
        awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }

declare -A med
for op in install uninstall; do
    for tool in "${TOOLS[@]}"; do
        med[$tool.$op.return]=$(median "$tool" "$op" 4)
        med[$tool.$op.durable]=$(median "$tool" "$op" 5)
    done
done
table="| operation | time | wua (s) | tar (s) | dpkg (s) | wua/tar | wua/dpkg |
|---|---|---:|---:|---:|---:|---:|"
for op in install uninstall; do
    for m in return durable; do
        w=${med[wua.$op.$m]} t=${med[tar.$op.$m]} d=${med[dpkg.$op.$m]}
        table+="
| $op | to-$m | $w | $t | $d | $(ratio "$w" "$t") | $(ratio "$w" "$d") |"
    done
done
r_tar=$(ratio "${med[wua.install.durable]}" "${med[tar.install.durable]}")
r_dpkg=$(ratio "${med[wua.install.durable]}" "${med[dpkg.install.durable]}")
verdict() { awk -v r="$1" -v l="$2" 'BEGIN {print (r <= l) ? "met" : "NOT met"}'; }
targets="- wua durable install / tar+sync = $r_tar (target ≤ 1.2): $(verdict "$r_tar" 1.2)
- wua durable install / dpkg -i + sync = $r_dpkg (target ≤ 0.7): $(verdict "$r_dpkg" 0.7)"

mkdir -p "$REPO/bench/results"
stamp=$(date -u +%Y-%m-%d-%H%M)
RESULTS=${RESULTS:-$REPO/bench/results/install-$stamp.md}
mem=$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
fs_dir=$BENCH_DIR
[[ $BENCH_FS == loop ]] && fs_dir=$mnt
fs=$(df -T "$fs_dir" | awk 'NR == 2 {print $2 " on " $1}')
fs_dev=$(basename "$(df "$fs_dir" | awk 'NR == 2 {print $1}')")
if [[ -r /sys/fs/ext4/$fs_dev/journal_task ]]; then
    [[ $(cat "/sys/fs/ext4/$fs_dev/journal_task") == "<none>" ]] && fs+=" (no journal)" || fs+=" (journalled)"
fi
fs+=", mounted $(awk -v d="$(df "$fs_dir" | awk 'NR == 2 {print $6}')" '$2 == d {print $4}' /proc/mounts | tail -n1)"
{
    echo "# Install benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "wua commit $commit, built from $built_from. Command:" \
        "\`${BENCH_FS:+BENCH_FS=$BENCH_FS }${BENCH_REV:+BENCH_REV=$BENCH_REV }ROUNDS=$ROUNDS WARMUP=$WARMUP SEED=$SEED SCALE=$SCALE bash bench/install-bench.sh\`."
    echo
    echo "Medians of $ROUNDS rounds (after $WARMUP warm-up), tools alternating; each step starts" \
        "after \`sync\`; durable = return + \`sync\`."
    echo
    echo "$table"
    echo
    echo "$targets"
    echo
    echo "## Setup"
    echo
    echo "- machine: $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $mem," \
        "kernel $(uname -r); target roots on $fs"
    echo "- load average before / after: $load_before / $load_after; benchmark rounds took ${elapsed} s"
    echo "- payload: $n_files files, $n_links symlinks, $n_dirs directories, $(mib "$tree_bytes")" \
        "($tree_bytes bytes); tree shape $ref_shape, contents $ref_content (md5)"
    echo "- generator: \`$tree_summary\`"
    echo "- archives: wua payload $(mib "$(stat -c %s "$wua_payload")") (zstd -10)," \
        "pkg.tar.zst $(mib "$(stat -c %s "$BENCH_DIR/pkg.tar.zst")") (zstd -10)," \
        "$PKG.deb $(mib "$(stat -c %s "$BENCH_DIR/$PKG.deb")") ($deb_compression)"
    echo "- $(tar --version | head -n1); dpkg $(dpkg-query -W -f='${Version}' dpkg 2>/dev/null || dpkg --version | head -n1);" \
        "$(zstd --version | sed 's/^\*\*\* //; s/ \*\*\*$//')"
    echo "- wua: \`wua --catalog C --root R --state-dir S --boot-id-file F install --all -q\`," \
        "\`… uninstall --all -q\`"
    echo "- tar: \`tar --zstd -xf pkg.tar.zst -C R\`, uninstall \`rm -rf\` of the tree's top-level entries"
    echo "- dpkg: \`${DPKG[*]} --root=R --admindir=R/var/lib/dpkg -i $PKG.deb\`, uninstall \`… -r $PKG\`"
    echo
    echo "## Samples (seconds)"
    echo
    echo "| round | tool | operation | to-return | to-durable |"
    echo "|---:|---|---|---:|---:|"
    tail -n +2 "$samples" | awk -F'\t' '{printf "| %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5}'
} >"$RESULTS"

echo
echo "$table"
echo
echo "$targets"
echo
echo "Results: $RESULTS"

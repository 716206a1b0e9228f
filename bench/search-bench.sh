#!/usr/bin/env bash
# The search benchmark of issue 4 (item 7): catalog load time and per-search time over a
# generated catalog of 100,000 updates. See docs/BENCHMARKS.md.
#
#   bash bench/search-bench.sh
#
# Steps: build the example crates/wua/examples/search-bench.rs (release), run it once: it
# generates the catalog, a Debian-like target root and a state directory (8 updates installed,
# 200 hidden) under $BENCH_DIR/data, then times `Catalog::open` and `UpdateSession::open`
# (LOAD_RUNS runs after 1 untimed), six typical searches and `explain` (RUNS runs each after 3
# untimed), and the load and search steps one at a time. The Markdown tables go to stdout and,
# with the machine's description, to bench/results/search-<date>.md.
#
# Environment:
#   BENCH_DIR   work directory (default /tmp/wua-search-bench); the generated data goes in
#               $BENCH_DIR/data, replaced on every run, deleted at the end unless KEEP=1. Runs
#               sharing a BENCH_DIR wait for each other (flock on $BENCH_DIR/lock)
#   UPDATES     catalog size (default 100000)
#   SEED        generator seed (default 7)
#   RUNS        timed runs of each search (default 25; the issue asks for at least 20)
#   LOAD_RUNS   timed runs of each load (default 7)
#   KEEP        1: keep $BENCH_DIR/data, e.g. to profile one phase again with
#               `search-bench --reuse --dir $BENCH_DIR/data --only load|search:K`
#   BENCH_REV   build from this commit (a `git archive` snapshot in $BENCH_DIR/src, built in
#               $BENCH_DIR/target) instead of the working tree
#   RESULTS     the results file (default bench/results/search-<UTC date and time>.md)
#
# Not part of `cargo test` or .ci/run: it takes a few minutes and measures the machine it runs
# on.
set -euo pipefail
export LC_ALL=C

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/wua-search-bench}
UPDATES=${UPDATES:-100000}
SEED=${SEED:-7}
RUNS=${RUNS:-25}
LOAD_RUNS=${LOAD_RUNS:-7}
KEEP=${KEEP:-}
BENCH_REV=${BENCH_REV:-}

say() { echo "search-bench: $*" >&2; }
die() {
    say "error: $*"
    exit 1
}

mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
# One run at a time per BENCH_DIR: two runs would delete each other's data, and each would
# measure the other's load.
exec 9>"$BENCH_DIR/lock"
if ! flock -n 9; then
    say "another search benchmark is using $BENCH_DIR; waiting for it to finish"
    flock 9
fi

# --- Build ------------------------------------------------------------------------------------
commit=$(git -C "$REPO" rev-parse --short HEAD)
dirty=$(git -C "$REPO" status --porcelain --untracked-files=no -- crates | wc -l)
if [[ -n $BENCH_REV ]]; then
    commit=$(git -C "$REPO" rev-parse --short "$BENCH_REV^{commit}")
    src=$BENCH_DIR/src
    say "building wua $commit from a snapshot in $src"
    rm -rf "$src"
    mkdir -p "$src"
    git -C "$REPO" archive "$commit" | tar -x -C "$src"
    example=crates/wua/examples/search-bench.rs
    [[ -e $src/$example ]] || cp "$REPO/$example" "$src/$example"
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$BENCH_DIR/target}
    built_from="a clean snapshot of commit $commit (BENCH_REV=$BENCH_REV)"
else
    src=$REPO
    built_from="the working tree at $commit"
    ((dirty == 0)) || built_from+=" with uncommitted changes to $dirty tracked files under crates/"
fi
target=${CARGO_TARGET_DIR:-$src/target}
say "building the example (release)"
(cd "$src" && cargo build --release -q -p wua --example search-bench) ||
    die "the build failed; BENCH_REV=HEAD builds the last commit instead of the working tree"
BENCH=$target/release/examples/search-bench

# --- Run --------------------------------------------------------------------------------------
data=$BENCH_DIR/data
rm -rf "$data"
[[ -n $KEEP ]] || trap 'rm -rf "$data"' EXIT
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
started=$EPOCHREALTIME
report=$("$BENCH" --dir "$data" --updates "$UPDATES" --seed "$SEED" --runs "$RUNS" \
    --load-runs "$LOAD_RUNS") || die "the benchmark failed"
elapsed=$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.0f", b - a}')
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

human() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
catalog_bytes=$(du -sb "$data/catalog" | cut -f1)
catalog_json=$(stat -c %s "$data/catalog/catalog.json")
zstd_note=""
if command -v zstd >/dev/null; then
    zstd_note="; $(human "$(zstd -q -3 -c "$data/catalog/catalog.json" | wc -c)") with \`zstd -3\`"
fi
root_bytes=$(du -sb "$data/root" | cut -f1)
state_bytes=$(du -sb "$data/state" | cut -f1)

# --- Report -----------------------------------------------------------------------------------
mkdir -p "$REPO/bench/results"
stamp=$(date -u +%Y-%m-%d-%H%M)
RESULTS=${RESULTS:-$REPO/bench/results/search-$stamp.md}
mem=$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
{
    echo "# Search benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "wua commit $commit, built from $built_from. Command:" \
        "\`${BENCH_REV:+BENCH_REV=$BENCH_REV }UPDATES=$UPDATES SEED=$SEED RUNS=$RUNS LOAD_RUNS=$LOAD_RUNS bash bench/search-bench.sh\`."
    echo
    echo "Load rows: $LOAD_RUNS runs after 1 untimed; search rows: $RUNS runs after 3 untimed," \
        "in one session; what each call returns is dropped outside the timing. Milliseconds."
    echo
    echo "$report"
    echo
    echo "## Setup"
    echo
    echo "- machine: $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $mem," \
        "kernel $(uname -r); $(rustc -V)"
    echo "- load average before / after: $load_before / $load_after; the run took ${elapsed} s in all"
    echo "- on disk: catalog directory $(human "$catalog_bytes") (\`catalog.json\` $catalog_json bytes$zstd_note)," \
        "target root $(human "$root_bytes")," \
        "state directory $(human "$state_bytes")"
} >"$RESULTS"

echo "$report"
echo
echo "Results: $RESULTS"

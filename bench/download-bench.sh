#!/usr/bin/env bash
# The download benchmark of issue 5 (item 7): `wua download` of a 1 GiB payload from a signed
# repository served by nginx on loopback, against `curl -o` of the same file, in the same run;
# then a download resumed after a cut at 50 %. See docs/BENCHMARKS.md.
#
#   bash bench/download-bench.sh
#
# Steps: install nginx and curl if missing (apt-get; needs root), build wua (release), write a
# catalog source with one update whose payload is one file of SIZE_MIB MiB of random bytes
# (incompressible: the .tar.zst is the same size), build it (`wua catalog build`), publish it
# as a signed TUF repository (`wua catalog keygen`, `init`, `publish`) in $BENCH_DIR/repo,
# serve that directory with nginx on 127.0.0.1:PORT (its own configuration, logs and temp
# directories under $BENCH_DIR/nginx; stopped at exit), and register it with a fresh state
# directory (`wua service add bench http://127.0.0.1:PORT/ --trusted-root …/1.root.json`).
#
# Then ROUNDS rounds after WARMUP untimed ones; each times every tool, in an order rotated
# from round to round:
#   curl        `curl -sS --fail -o FILE URL` of the payload target
#               (`targets/<sha>.<sha>.tar.zst`); to-return is curl alone, to-durable adds
#               `sync FILE` (an fsync of that file);
#   wua         `wua --state-dir S --root R -q download --all` after deleting S/cache/
#               (metadata refresh, search, download, SHA-256 and length check, fsync, rename
#               into the cache); to-durable adds `sync FILE` of the cached payload (wua has
#               synced it already, so this is near zero);
#   wua_unsafe  the same with `--unsafe-io` (UNSAFE=1): no early write-back, no fsync.
# Every timed step starts after a global `sync`, so none inherits another's dirty pages. After
# each step the file is checked (length and SHA-256 equal to the target's name), so a broken
# run stops the benchmark instead of looking fast. Each round also times, untimed for the
# comparison, `wua service refresh bench` and `wua download --all` with the payload cached
# (the fixed cost of a run: start-up, metadata refresh, search).
#
# Resume: RESUMES times, start `wua download --all` with an empty cache, SIGKILL it once its
# partial file (S/cache/partial/<sha>.tar.zst.part) holds CUT % of the payload, then time a
# second `wua download --all`, which re-hashes the partial file and asks for the rest with a
# Range request. nginx's access log must show one `206` for the target, for `bytes=<cut>-`,
# sending exactly the rest. The same cut is then given to `curl -C -` (the file truncated to
# the same length) as a reference. Medians go to stdout and to bench/results/download-<date>.md.
#
# Environment:
#   BENCH_DIR   work directory (default /tmp/wua-download-bench): repository, state, downloads;
#               on the file system to measure. Runs sharing a BENCH_DIR wait for each other
#   SIZE_MIB    payload file size in MiB (default 1024)
#   ROUNDS      timed rounds (default 5; the issue asks for the median of 5)
#   WARMUP      untimed rounds first (default 1)
#   RESUMES     timed resumes (default 5; 0 skips them)
#   CUT         where the first download of a resume is killed, in % of the payload (default 50)
#   PORT        nginx's port on 127.0.0.1 (default: the first free one from 18431)
#   REUSE       1: keep the repository of an earlier run with the same SIZE_MIB (saves
#               building and publishing 1 GiB, about a minute)
#   UNSAFE      1 (default): also time `wua --unsafe-io download --all` (the cache's fsync and
#               early write-back off), to show what durability costs; 0: curl and wua only
#   WUA_BIN     use this wua binary instead of building the working tree (e.g. while the
#               working tree does not build); the results file says so
#   RESULTS     the results file (default bench/results/download-<UTC date and time>.md)
#
# Not part of `cargo test` or .ci/run: it takes minutes, installs packages and measures the
# machine it runs on.
set -euo pipefail
export LC_ALL=C

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-/tmp/wua-download-bench}
SIZE_MIB=${SIZE_MIB:-1024}
ROUNDS=${ROUNDS:-5}
WARMUP=${WARMUP:-1}
RESUMES=${RESUMES:-5}
CUT=${CUT:-50}
PORT=${PORT:-}
REUSE=${REUSE:-}
WUA_BIN=${WUA_BIN:-}
UNSAFE=${UNSAFE:-1}
TOOLS=(curl wua)
[[ $UNSAFE != 1 ]] || TOOLS+=(wua_unsafe)
UPDATE_ID=b3e1c0de-0005-4007-8000-000000000007

say() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'download-bench: %s\n' "$*" >&2
    exit 1
}

# --- 1. Tools ---------------------------------------------------------------------------------
export PATH=$PATH:/usr/sbin:/sbin
need=()
for cmd in nginx curl sha256sum stat flock awk sync git cargo; do
    command -v "$cmd" >/dev/null || case $cmd in
        nginx) need+=(nginx) ;;
        curl) need+=(curl) ;;
        sha256sum | stat | sync) need+=(coreutils) ;;
        flock) need+=(util-linux) ;;
        awk) need+=(mawk) ;;
        git) need+=(git) ;;
        cargo) die "cargo is missing: install Rust (rustup) first" ;;
    esac
done
if ((${#need[@]})); then
    [[ $(id -u) == 0 ]] || die "missing ${need[*]}: run as root, or install them: apt-get install ${need[*]}"
    say "installing ${need[*]} (apt-get)"
    apt-get update -q
    # The nginx package starts its own service on port 80 when installed. A policy-rc.d that
    # refuses service starts keeps it stopped; it is removed again (only if this script made it).
    policy=/usr/sbin/policy-rc.d
    made_policy=
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        made_policy=1
    fi
    status=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" || status=$?
    [[ -z $made_policy ]] || rm -f "$policy"
    ((status == 0)) || die "apt-get install ${need[*]} failed"
fi

mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
# One run at a time per BENCH_DIR: two runs would delete each other's files, and each would
# measure the other's load.
exec 9>"$BENCH_DIR/lock"
if ! flock -n 9; then
    say "another download benchmark is using $BENCH_DIR; waiting for it to finish"
    flock 9
fi

# --- 2. Build ---------------------------------------------------------------------------------
commit=$(git -C "$REPO" rev-parse --short HEAD)
dirty=$(git -C "$REPO" status --porcelain -- crates | wc -l)
tree_at=$commit
((dirty == 0)) || tree_at+=" with $dirty changed or new files under crates/ (dirty)"
built_from="the working tree at $tree_at"
if [[ -n $WUA_BIN ]]; then
    [[ -x $WUA_BIN ]] || die "WUA_BIN=$WUA_BIN is not an executable"
    built_from="a prebuilt binary (WUA_BIN=$WUA_BIN, $(date -u -r "$WUA_BIN" '+%Y-%m-%d %H:%M UTC')); the working tree is at $tree_at"
    src_bin=$WUA_BIN
else
    say "building wua (release)"
    (cd "$REPO" && cargo build --release -q -p wua-cli) ||
        die "the build failed; WUA_BIN=path/to/wua uses a binary built earlier"
    src_bin=${CARGO_TARGET_DIR:-$REPO/target}/release/wua
fi
# A copy: other builds in the same target directory must not replace it during the run.
WUA=$BENCH_DIR/wua
cp "$src_bin" "$WUA"

# --- 3. Payload and signed repository ---------------------------------------------------------
repo=$BENCH_DIR/repo
marker=$BENCH_DIR/repo.size-mib
if [[ -n $REUSE && -f $marker && $(cat "$marker") == "$SIZE_MIB" ]] && compgen -G "$repo/targets/*.tar.zst" >/dev/null; then
    say "reusing the repository in $repo (REUSE=1)"
    publish_note="reused from an earlier run (REUSE=1)"
else
    rm -rf "$repo" "$marker" "$BENCH_DIR/keys" "$BENCH_DIR/catalog-src" "$BENCH_DIR/catalog"
    src=$BENCH_DIR/catalog-src
    mkdir -p "$src/01-payload/payload/opt/wua-bench"
    say "writing $SIZE_MIB MiB of random bytes"
    head -c "${SIZE_MIB}M" /dev/urandom >"$src/01-payload/payload/opt/wua-bench/random.bin"
    echo "download benchmark" >"$src/catalog-name"
    cat >"$src/01-payload/update.json" <<EOF
{
  "identity": { "update_id": "$UPDATE_ID", "revision_number": 1 },
  "title": "Download benchmark payload",
  "description": "One file of $SIZE_MIB MiB of random bytes.",
  "handler": { "kind": "files" }
}
EOF
    say "building the catalog (zstd -10 of $SIZE_MIB MiB)"
    t0=$EPOCHREALTIME
    "$WUA" -q catalog build "$src" "$BENCH_DIR/catalog"
    t1=$EPOCHREALTIME
    say "publishing it as a signed repository"
    "$WUA" -q catalog keygen "$BENCH_DIR/keys"
    "$WUA" -q catalog init --keys "$BENCH_DIR/keys" "$repo"
    "$WUA" -q catalog publish --repo "$repo" --keys "$BENCH_DIR/keys" "$BENCH_DIR/catalog"
    t2=$EPOCHREALTIME
    publish_note=$(awk -v a="$t0" -v b="$t1" -v c="$t2" \
        'BEGIN {printf "`wua catalog build` took %.1f s, keygen + init + publish %.1f s", b - a, c - b}')
    rm -rf "$src" "$BENCH_DIR/catalog"
    echo "$SIZE_MIB" >"$marker"
fi
# SHA-256 of a file: openssl's uses the CPU's SHA instructions (about 5x coreutils' sha256sum
# here), which keeps the untimed checks short.
if command -v openssl >/dev/null; then
    sha256_of() { openssl dgst -sha256 -r "$1" | cut -d' ' -f1; }
else
    sha256_of() { sha256sum "$1" | cut -d' ' -f1; }
fi
mapfile -t target_files < <(ls "$repo"/targets/*.tar.zst)
((${#target_files[@]} == 1)) || die "expected one payload target in $repo/targets, found ${#target_files[@]}"
target=${target_files[0]}
target_name=$(basename "$target")
sha=${target_name%%.*}
length=$(stat -c %s "$target")
say "payload target $target_name, $length bytes"
[[ $(sha256_of "$target") == "$sha" ]] || die "$target does not hash to its name"
# nginx's workers must read it.
chmod -R a+rX "$repo"

# --- 4. nginx ---------------------------------------------------------------------------------
ngx=$BENCH_DIR/nginx
rm -rf "$ngx"
mkdir -p "$ngx/tmp"
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if [[ -z $PORT ]]; then
    for p in $(seq 18431 18531); do
        if port_free "$p"; then
            PORT=$p
            break
        fi
    done
    [[ -n $PORT ]] || die "no free port in 18431-18531; set PORT"
else
    port_free "$PORT" || die "port $PORT is in use"
fi
# Temp-path directives only for the modules this nginx has (a missing module's directive is an
# error); nothing here uses them, but their compiled-in defaults are outside $BENCH_DIR.
ngx_build=$(nginx -V 2>&1)
temp_paths="client_body_temp_path $ngx/tmp/body; proxy_temp_path $ngx/tmp/proxy;"
for m in fastcgi uwsgi scgi; do
    [[ $ngx_build == *--without-http_${m}_module* ]] || temp_paths+=" ${m}_temp_path $ngx/tmp/$m;"
done
ngx_user=
# As root, workers would run as nobody; run them as root so any BENCH_DIR is readable.
[[ $(id -u) != 0 ]] || ngx_user="user root root;"
cat >"$ngx/nginx.conf" <<EOF
# Written by bench/download-bench.sh.
$ngx_user
worker_processes 1;
daemon off;
pid $ngx/nginx.pid;
error_log $ngx/error.log warn;
events { worker_connections 64; }
http {
    log_format bench '\$msec "\$request" "\$http_range" \$status \$body_bytes_sent \$request_time';
    access_log $ngx/access.log bench;
    $temp_paths
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    types { application/json json; }
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$PORT;
        root $repo;
    }
}
EOF
nginx -t -q -p "$ngx" -e "$ngx/error.log" -c "$ngx/nginx.conf" || die "nginx rejects $ngx/nginx.conf"
nginx -p "$ngx" -e "$ngx/error.log" -c "$ngx/nginx.conf" &
nginx_pid=$!
state=$BENCH_DIR/state
root=$BENCH_DIR/root
cleanup() {
    if [[ -n ${wua_bg:-} ]]; then kill -KILL "$wua_bg" 2>/dev/null || true; fi
    if [[ -n ${nginx_pid:-} ]]; then
        kill -TERM "$nginx_pid" 2>/dev/null || true
        wait "$nginx_pid" 2>/dev/null || true
    fi
    rm -f "$BENCH_DIR/curl.out"
    rm -rf "$state" "$root"
}
trap cleanup EXIT
base=http://127.0.0.1:$PORT
url=$base/targets/$target_name
for ((i = 0; ; i++)); do
    curl -sf -o /dev/null "$base/metadata/timestamp.json" && break
    ((i < 100)) || die "nginx did not answer on $base (log: $ngx/error.log)"
    kill -0 "$nginx_pid" 2>/dev/null || die "nginx stopped (log: $ngx/error.log)"
    sleep 0.05
done
say "nginx $nginx_pid serves $repo on $base"
log=$ngx/access.log

# --- 5. wua's service -------------------------------------------------------------------------
rm -rf "$state" "$root"
mkdir -p "$state" "$root"
W=("$WUA" --state-dir "$state" --root "$root" -q)
wlog=$BENCH_DIR/wua.log
: >"$wlog"
"${W[@]}" service add bench "$base/" --trusted-root "$repo/metadata/1.root.json" >>"$wlog" 2>&1 ||
    die "wua service add failed (log: $wlog)"
cached=$state/cache/payloads/$sha.tar.zst
partial=$state/cache/partial/$sha.tar.zst.part
curl_out=$BENCH_DIR/curl.out

# --- 6. Rounds --------------------------------------------------------------------------------
samples=$BENCH_DIR/samples.tsv
printf 'round\ttool\treturn\tdurable\n' >"$samples"
extra=$BENCH_DIR/overhead.tsv
printf 'round\twhat\tseconds\n' >"$extra"

secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", b - a}'; }
mbps() { awk -v n="$1" -v s="$2" 'BEGIN {printf "%.1f", n / 1e6 / s}'; }

# The file must be the payload: its length and SHA-256 (its name).
check_file() { # WHAT FILE
    [[ -f $2 ]] || die "$1: $2 is missing"
    local n
    n=$(stat -c %s "$2")
    ((n == length)) || die "$1: $2 has $n bytes, expected $length"
    [[ $(sha256_of "$2") == "$sha" ]] || die "$1: $2 does not have SHA-256 $sha"
}

run_curl() { curl -sS --fail -o "$curl_out" "$url"; }
run_wua() { "${W[@]}" download --all; }
run_wua_unsafe() { "${W[@]}" --unsafe-io download --all; }

timed() { # ROUND TOOL
    local round=$1 tool=$2 file t0 t1 t2
    case $tool in
        curl) rm -f "$curl_out" && file=$curl_out ;;
        wua | wua_unsafe) rm -rf "$state/cache" && file=$cached ;;
    esac
    sync
    t0=$EPOCHREALTIME
    "run_$tool" >>"$wlog" 2>&1 || die "$tool failed in round $round (log: $wlog)"
    t1=$EPOCHREALTIME
    sync "$file"
    t2=$EPOCHREALTIME
    check_file "$tool (round $round)" "$file"
    local ret dur
    ret=$(secs "$t0" "$t1")
    dur=$(secs "$t0" "$t2")
    ((round <= 0)) || printf '%s\t%s\t%s\t%s\n' "$round" "$tool" "$ret" "$dur" >>"$samples"
    printf '    %-10s return %7.3f s (%s MB/s)  durable %7.3f s (%s MB/s)\n' "$tool" \
        "$ret" "$(mbps "$length" "$ret")" "$dur" "$(mbps "$length" "$dur")" >&2
}

# The fixed cost of a wua run, with the payload in the cache: `service refresh` alone, and a
# `download --all` that has nothing to download.
overhead() { # ROUND
    local t0 t1 t2
    t0=$EPOCHREALTIME
    "${W[@]}" service refresh bench >>"$wlog" 2>&1 || die "wua service refresh failed (log: $wlog)"
    t1=$EPOCHREALTIME
    run_wua >>"$wlog" 2>&1 || die "wua download (cached) failed (log: $wlog)"
    t2=$EPOCHREALTIME
    if (($1 > 0)); then
        printf '%s\trefresh\t%s\n%s\tcached\t%s\n' "$1" "$(secs "$t0" "$t1")" "$1" "$(secs "$t1" "$t2")" >>"$extra"
    fi
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
busy_before=$(pgrep -c -x 'cargo|rustc|cc1|ld|clang|perf' || true)
started=$EPOCHREALTIME
for ((i = 1 - WARMUP; i <= ROUNDS; i++)); do
    # Rotate the order each round, so no tool always goes first (or right after another).
    k=$(((i + WARMUP) % ${#TOOLS[@]}))
    order=("${TOOLS[@]:k}" "${TOOLS[@]:0:k}")
    if ((i > 0)); then say "round $i/$ROUNDS: ${order[*]}"; else say "warm-up round: ${order[*]}"; fi
    for tool in "${order[@]}"; do
        timed "$i" "$tool"
    done
    overhead "$i"
done
rm -f "$curl_out"

# --- 7. Resume after a cut --------------------------------------------------------------------
resumes=$BENCH_DIR/resumes.tsv
printf 'run\tcut_bytes\twua_s\twua_bytes\tcurl_s\tcurl_bytes\n' >"$resumes"
cut_at=$((length * CUT / 100))

# The requests for the target logged after line N of the access log: "range status bytes".
target_requests() {
    tail -n +"$(($1 + 1))" "$log" | awk -v t="/targets/$target_name" '
        { for (i = 1; i <= NF; i++) if ($i == t) { n = split($0, q, "\""); split(q[5], r, " ");
          print (q[4] == "-" ? "none" : q[4]), r[1], r[2]; break } }'
}

# Exactly one request for the target since line N: a 206 for `bytes=CUT-` with the rest.
check_resumed() { # WHAT N CUT
    local got want
    got=$(target_requests "$2")
    want="bytes=$3- 206 $((length - $3))"
    [[ $got == "$want" ]] || die "$1: expected one request \"$want\" in nginx's log, found: [${got//$'\n'/; }]"
}

lines() { wc -l <"$log"; }

for ((r = 1; r <= RESUMES; r++)); do
    say "resume $r/$RESUMES: cut at $CUT %"
    rm -rf "$state/cache"
    sync
    n_pre=$(lines)
    "${W[@]}" download --all >>"$wlog" 2>&1 &
    wua_bg=$!
    while :; do
        have=$(stat -c %s "$partial" 2>/dev/null || echo 0)
        ((have < cut_at)) || break
        kill -0 "$wua_bg" 2>/dev/null || die "resume $r: wua ended before the cut (log: $wlog)"
        sleep 0.002
    done
    kill -KILL "$wua_bg"
    wait "$wua_bg" 2>/dev/null || true
    wua_bg=
    [[ ! -e $cached ]] || die "resume $r: wua finished before it was killed; lower CUT"
    cut_bytes=$(stat -c %s "$partial")
    # nginx logs the cut request when it notices the closed connection: wait for that line, so
    # that every later line for the target belongs to the resume.
    for ((k = 0; k < 200; k++)); do
        [[ -z $(target_requests "$n_pre") ]] || break
        sleep 0.01
    done
    sync
    n0=$(lines)
    t0=$EPOCHREALTIME
    run_wua >>"$wlog" 2>&1 || die "resume $r: wua failed (log: $wlog)"
    t1=$EPOCHREALTIME
    check_file "wua resume $r" "$cached"
    check_resumed "wua resume $r" "$n0" "$cut_bytes"
    wua_s=$(secs "$t0" "$t1")

    # The same cut for curl: the file truncated to the same length, then `curl -C -`.
    head -c "$cut_bytes" "$target" >"$curl_out"
    sync
    n0=$(lines)
    t0=$EPOCHREALTIME
    curl -sS --fail -C - -o "$curl_out" "$url" >>"$wlog" 2>&1 || die "resume $r: curl -C - failed"
    t1=$EPOCHREALTIME
    check_file "curl resume $r" "$curl_out"
    check_resumed "curl resume $r" "$n0" "$cut_bytes"
    curl_s=$(secs "$t0" "$t1")
    rm -f "$curl_out"
    rest=$((length - cut_bytes))
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$cut_bytes" "$wua_s" "$rest" "$curl_s" "$rest" >>"$resumes"
    printf '    cut at %s bytes (%.1f %%); wua resumed in %s s (%s MB/s of the rest), curl -C - in %s s (%s MB/s)\n' \
        "$cut_bytes" "$(awk -v c="$cut_bytes" -v l="$length" 'BEGIN {print 100 * c / l}')" \
        "$wua_s" "$(mbps "$rest" "$wua_s")" "$curl_s" "$(mbps "$rest" "$curl_s")" >&2
done
elapsed=$(secs "$started" "$EPOCHREALTIME")
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# --- 8. Report --------------------------------------------------------------------------------
median_of() { # reads numbers on stdin
    sort -g | awk '{v[NR] = $1} END {if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
median() { awk -F'\t' -v t="$1" -v c="$2" 'NR > 1 && $2 == t {print $c}' "$samples" | median_of; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }

c_ret=$(median curl 3) c_dur=$(median curl 4) w_ret=$(median wua 3) w_dur=$(median wua 4)
refresh=$(awk -F'\t' 'NR > 1 && $2 == "refresh" {print $3}' "$extra" | median_of)
cached_run=$(awk -F'\t' 'NR > 1 && $2 == "cached" {print $3}' "$extra" | median_of)

table="| tool | to-return (s) | MB/s | to-durable (s) | MB/s | throughput / curl's, to-return | to-durable |
|---|---:|---:|---:|---:|---:|---:|"
for tool in "${TOOLS[@]}"; do
    case $tool in
        curl) label="\`curl -o\`" ;;
        wua) label="\`wua download --all\` (verified, fsynced)" ;;
        wua_unsafe) label="\`wua --unsafe-io download --all\` (verified, not fsynced)" ;;
    esac
    r=$(median "$tool" 3) d=$(median "$tool" 4)
    table+="
| $label | $r | $(mbps "$length" "$r") | $d | $(mbps "$length" "$d") | $(ratio "$c_ret" "$r") | $(ratio "$c_dur" "$d") |"
done
overhead_line="wua's fixed cost, payload cached (medians): \`service refresh\` $refresh s; \`download --all\` with nothing to download $cached_run s"

resume_table=
if ((RESUMES > 0)); then
    rm_cut=$(awk -F'\t' 'NR > 1 {print $2}' "$resumes" | median_of)
    rm_rest=$((length - ${rm_cut%.*}))
    rm_w=$(awk -F'\t' 'NR > 1 {print $3}' "$resumes" | median_of)
    rm_c=$(awk -F'\t' 'NR > 1 {print $5}' "$resumes" | median_of)
    resume_table="| resume after a cut at $CUT % (median of $RESUMES) | time (s) | MB/s of the rest |
|---|---:|---:|
| cut at (bytes), rest fetched with \`Range\` (bytes) | $rm_cut | $rm_rest |
| wua \`download --all\`: re-hash the partial file, \`Range\` request, verify, fsync | $rm_w | $(mbps "$rm_rest" "$rm_w") |
| \`curl -C -\` of the same cut (reference) | $rm_c | $(mbps "$rm_rest" "$rm_c") |"
fi
verdict() { awk -v r="$1" 'BEGIN {print (r >= 0.9) ? "met" : "NOT met"}'; }
r_ret=$(ratio "$c_ret" "$w_ret")
r_dur=$(ratio "$c_dur" "$w_dur")
verdicts="- wua's throughput / curl's, each to-return (wua's file is durable, curl's is not) = $r_ret (target ≥ 0.9): $(verdict "$r_ret")
- wua's throughput / curl's, each to-durable (curl + fsync of its file) = $r_dur (target ≥ 0.9): $(verdict "$r_dur")"
if [[ $UNSAFE == 1 ]]; then
    r_uns=$(ratio "$c_ret" "$(median wua_unsafe 3)")
    verdicts+="
- \`wua --unsafe-io\`'s throughput / curl's, each to-return (neither durable) = $r_uns: $(verdict "$r_uns")"
fi

mkdir -p "$REPO/bench/results"
stamp=$(date -u +%Y-%m-%d-%H%M)
RESULTS=${RESULTS:-$REPO/bench/results/download-$stamp.md}
mem=$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
fs=$(df -T "$BENCH_DIR" | awk 'NR == 2 {print $2 " on " $1}')
fs_dev=$(basename "$(df "$BENCH_DIR" | awk 'NR == 2 {print $1}')")
if [[ -r /sys/fs/ext4/$fs_dev/journal_task ]]; then
    [[ $(cat "/sys/fs/ext4/$fs_dev/journal_task") == "<none>" ]] && fs+=" (no journal)" || fs+=" (journalled)"
fi
fs+=", mounted $(awk -v d="$(df "$BENCH_DIR" | awk 'NR == 2 {print $6}')" '$2 == d {print $4}' /proc/mounts | tail -n1)"
{
    echo "# Download benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "wua commit $commit, built from $built_from. Command:" \
        "\`${WUA_BIN:+WUA_BIN=$WUA_BIN }SIZE_MIB=$SIZE_MIB ROUNDS=$ROUNDS WARMUP=$WARMUP RESUMES=$RESUMES CUT=$CUT UNSAFE=$UNSAFE bash bench/download-bench.sh\`."
    echo
    echo "Medians of $ROUNDS rounds (after $WARMUP warm-up), the tools (${TOOLS[*]}) in an order" \
        "rotated each round; each step starts after \`sync\`; to-durable adds \`sync FILE\`." \
        "MB/s = 10^6 bytes per second; the payload is $length bytes."
    echo
    echo "$table"
    echo
    echo "$verdicts"
    echo
    echo "$overhead_line"
    echo
    if [[ -n $resume_table ]]; then
        echo "$resume_table"
        echo
    fi
    echo "## Setup"
    echo
    echo "- machine: $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $mem," \
        "kernel $(uname -r); BENCH_DIR $BENCH_DIR on $fs"
    echo "- load average before / after: $load_before / $load_after; $busy_before compiler or" \
        "cargo processes were running at the start; the rounds took ${elapsed} s"
    echo "- payload: \`targets/$target_name\`, $length bytes (one file of $SIZE_MIB MiB of" \
        "random bytes, zstd -10 by \`wua catalog build\`); $publish_note"
    echo "- server: $(nginx -v 2>&1 | sed 's/^nginx version: //'), 1 worker, \`sendfile on\`," \
        "on 127.0.0.1:$PORT, the file in the page cache"
    echo "- $(curl --version | head -n1 | cut -d' ' -f1-5)"
    echo "- curl: \`curl -sS --fail -o FILE $url\`; durable adds \`sync FILE\`"
    echo "- wua: \`wua --state-dir S --root R -q [--unsafe-io] download --all\` after \`rm -rf S/cache\`; the" \
        "service was added with \`wua service add bench $base/ --trusted-root repo/metadata/1.root.json\`"
    echo "- every file was checked after its step: $length bytes, SHA-256 $sha"
    echo
    echo "## Samples (seconds)"
    echo
    echo "| round | tool | to-return | to-durable | MB/s (return) |"
    echo "|---:|---|---:|---:|---:|"
    tail -n +2 "$samples" | while IFS=$'\t' read -r a b c d; do
        echo "| $a | $b | $c | $d | $(mbps "$length" "$c") |"
    done
    echo
    echo "| round | \`service refresh\` (s) | \`download --all\`, cached (s) |"
    echo "|---:|---:|---:|"
    awk -F'\t' 'NR > 1 {v[$1 "," $2] = $3; if ($1 > m) m = $1}
        END {for (i = 1; i <= m; i++) printf "| %d | %s | %s |\n", i, v[i ",refresh"], v[i ",cached"]}' "$extra"
    if ((RESUMES > 0)); then
        echo
        echo "| resume | cut at (bytes) | wua (s) | curl -C - (s) | rest (bytes) |"
        echo "|---:|---:|---:|---:|---:|"
        tail -n +2 "$resumes" | while IFS=$'\t' read -r a b c d e _; do
            echo "| $a | $b | $c | $e | $d |"
        done
    fi
} >"$RESULTS"

echo
echo "$table"
echo
echo "$verdicts"
echo
echo "$overhead_line"
if [[ -n $resume_table ]]; then
    echo
    echo "$resume_table"
fi
echo
echo "Results: $RESULTS"

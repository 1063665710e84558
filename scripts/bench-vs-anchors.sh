#!/usr/bin/env bash
# AtlasVault against the anchors (restic, borg, rustic) on a realistic corpus (issue 9).
#
#   scripts/bench-vs-anchors.sh [--corpus DIR] [--work DIR] [--keep] [--pg-scale N]
#   scripts/bench-vs-anchors.sh --scale [--work DIR] [--keep]
#
# Main mode. The corpus (built unless --corpus names an existing one; a --corpus DIR that does
# not exist yet is built there and kept):
#   CORPUS/src         ~350 MB of real source code in ~20k files (crates from ~/.cargo/registry/src,
#                      /usr/include; copied, not linked)
#   CORPUS/libs        ~650 MB of real shared libraries (/usr/lib/x86_64-linux-gnu, ...)
#   CORPUS/dump/db.sql a ~550 MB plain pg_dump of a pgbench database (the scale is calibrated by
#                      dumping scale 1 and measuring; --pg-scale N sets it)
#   CORPUS/dump2/db.sql the same database after a busy 15 minutes (1,350 account rows updated,
#                      20,000 history rows inserted), dumped again
# PostgreSQL runs as a private server on a loopback port in the work dir (as nobody when run as
# root) and is stopped once both dumps are taken (and by the exit trap).
#
# Then, for AtlasVault (target/release/vault, encrypted: its default) and each anchor (restic and
# rustic with a password, borg --encryption none --compression zstd,3), each into its own fresh
# repository: initial snapshot of src, libs and dump; the same again with nothing changed; delta
# (dump/db.sql replaced by the second dump); full restore of the latest snapshot into an empty
# dir of its own (checked with diff -r afterwards, outside the timing; all are kept until the
# end, see below); verify with a full read of the data.
# Each step is timed by /usr/bin/time (wall, user+sys CPU, peak RSS) and the repository size is
# taken after it (du -sb; restic's, rustic's and borg's local caches live outside the repository
# and are not counted). `sync` runs before every step, outside the timing. The page cache cannot
# be dropped (no root guarantee), so every step is warm-cache, for every tool alike: the corpus,
# the repository and the tool's cache are read just before it (see warm() below).
#
# --scale mode: AtlasVault alone on 1,000,000 small files (0-200 bytes, 1000 dirs) and on one
# 20 GiB file (sparse, with 1 GiB of random regions written into it): snapshot time and peak RSS,
# and the 20 GiB file's restore when at least 50 GB are free. Slow; separate from the comparison.
#
# Installs what is missing: restic and borgbackup (Debian), rustic (cargo install rustic-rs
# --locked; RUSTIC_VERSION=x.y.z pins one), PostgreSQL and GNU time (Debian).
# Env knobs: SRC_MB (350), SRC_FILES (20000), LIBS_MB (650), DUMP_MB (550), VAULT_INIT_ARGS
# (extra `vault init` flags, e.g. "--argon2-memory-kib 8192 --argon2-iterations 1"),
# TOOLS ("vault restic borg rustic"); for --scale: SCALE_FILES (1000000, in 1000 dirs), BIG_GIB (20).
set -euo pipefail
cd "$(dirname "$0")/.."
repo_root=$PWD

corpus="" keep=0 scale_mode=0 workbase=${TMPDIR:-/tmp} pg_scale=""
while (($#)); do
    case "$1" in
    --corpus) corpus=$(realpath -m "$2"); shift 2 ;;
    --work) workbase=$(realpath -m "$2"); shift 2 ;;
    --keep) keep=1; shift ;;
    --scale) scale_mode=1; shift ;;
    --pg-scale) pg_scale=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
SRC_MB=${SRC_MB:-350} SRC_FILES=${SRC_FILES:-20000} LIBS_MB=${LIBS_MB:-650} DUMP_MB=${DUMP_MB:-550}
TOOLS=${TOOLS:-vault restic borg rustic}

started=$(date +%s)
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------- disk space
mkdir -p "$workbase"
free_gb() { df -P -B1G "$1" | awk 'NR==2 {print $4}'; }
need_gb=17 # the corpus, four repositories and four restored copies (kept until the end)
if ((scale_mode)); then need_gb=8; fi
if [[ -n "$corpus" && -f "$corpus/dump/db.sql" ]]; then need_gb=$((need_gb - 3)); fi
have=$(free_gb "$workbase")
((have >= need_gb)) || die "$workbase has ${have} GB free; this benchmark needs about ${need_gb} GB (use --work DIR on a bigger disk)"

# ---------------------------------------------------------------------------- installs
sudo=""
if [[ "$(id -u)" -ne 0 ]]; then sudo="sudo"; fi
apt_need=()
[[ -x /usr/bin/time ]] || apt_need+=(time)
if ((!scale_mode)); then
    [[ " $TOOLS " == *" restic "* ]] && ! command -v restic >/dev/null && apt_need+=(restic)
    [[ " $TOOLS " == *" borg "* ]] && ! command -v borg >/dev/null && apt_need+=(borgbackup)
    if [[ -z "$corpus" || ! -f "$corpus/dump2/db.sql" ]]; then
        ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_need+=(postgresql)
    fi
fi
if ((${#apt_need[@]})); then
    log "installing from Debian: ${apt_need[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${apt_need[@]}" >/dev/null
fi
case ":$PATH:" in *":$HOME/.cargo/bin:"*) ;; *) export PATH="$PATH:$HOME/.cargo/bin" ;; esac
if ((!scale_mode)) && [[ " $TOOLS " == *" rustic "* ]] && ! command -v rustic >/dev/null; then
    # rustic-rs 0.11.x needs rustc 1.91; with an older toolchain pin e.g. RUSTIC_VERSION=0.9.5.
    spec=rustic-rs${RUSTIC_VERSION:+@$RUSTIC_VERSION}
    log "installing $spec with cargo (about 10-20 minutes on 2 cores)"
    build_dir=$(mktemp -d "$workbase/rustic-build.XXXXXX")
    CARGO_TARGET_DIR=$build_dir cargo install "$spec" --locked --quiet || {
        rm -rf "$build_dir"
        die "cargo install $spec failed; try RUSTIC_VERSION=0.9.5 (or another that builds with $(rustc --version))"
    }
    rm -rf "$build_dir"
fi

log "building AtlasVault (cargo build --release)"
cargo build --release --quiet
cargo build --release --quiet --example cpufloor
vault_bin=$repo_root/target/release/vault

# ---------------------------------------------------------------------------- work dir
work=$(mktemp -d "$workbase/bench-anchors.XXXXXX")
chmod 755 "$work"
pgbin="" as_pg=() corpus_db1_saved=""
cleanup() {
    local rc=$?
    if [[ -n "$pgbin" && -d "$work/pg/data" ]]; then
        "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    # A --corpus given by the caller gets its first dump back.
    if [[ -n "$corpus_db1_saved" && -f "$corpus_db1_saved" ]]; then
        cp -f "$corpus_db1_saved" "$corpus/dump/db.sql" || true
    fi
    if ((keep)); then
        echo "kept: $work" >&2
    else
        chmod -R u+w "$work" 2>/dev/null || true
        rm -rf "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$work/logs" "$work/run"
TIME=/usr/bin/time

# run_timed NAME CMD...: runs CMD (stdout/stderr to logs/NAME.*), leaves "wall user sys rss_kb" in
# $work/logs/NAME.time and sets $rc.
run_timed() {
    local name=$1; shift
    sync
    rc=0
    $TIME -f "%e %U %S %M" -o "$work/logs/$name.time" "$@" \
        >"$work/logs/$name.out" 2>"$work/logs/$name.err" || rc=$?
    # GNU time puts "Command exited with non-zero status N" first when the command fails.
    tail -n 1 "$work/logs/$name.time" >"$work/logs/$name.time.last"
    mv "$work/logs/$name.time.last" "$work/logs/$name.time"
}
fail_step() {
    echo "---- $1 failed (exit $rc); last lines of its stderr:" >&2
    tail -n 20 "$work/logs/$1.err" >&2
    exit 1
}
dir_bytes() { du -sb "$1" | cut -f1; }
human() { numfmt --to=iec-i --suffix=B --format=%.1f "$1"; }

header() {
    echo "## AtlasVault benchmark: $1"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- machine: $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p' | head -1)), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM, $(uname -sr)"
    echo "- file system of the work dir: $(df -PT "$work" | awk 'NR==2 {print $2}')"
}

# ============================================================================ --scale mode
if ((scale_mode)); then
    version=$("$vault_bin" --version)
    header "scale"
    echo "- $version (encrypted, default settings${VAULT_INIT_ARGS:+, init: $VAULT_INIT_ARGS})"
    echo "- warm cache: the page cache is not dropped"
    echo
    SCALE_FILES=${SCALE_FILES:-1000000} BIG_GIB=${BIG_GIB:-20}
    (($(df --output=iavail "$work" | tail -1) > SCALE_FILES * 11 / 10)) ||
        die "fewer than $((SCALE_FILES * 11 / 10)) free inodes under $work: the small-files test cannot run"
    export VAULT_PASSWORD_FILE=$work/password
    head -c 24 /dev/urandom | base64 >"$VAULT_PASSWORD_FILE"
    results=$work/scale.tsv
    : >"$results"
    record() { # what step name
        read -r wall user sys rss <"$work/logs/$3.time"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$wall" "$user" "$sys" "$rss" "$(dir_bytes "$VAULT_DIR")" >>"$results"
        log "$1 / $2: ${wall}s wall, $(awk -v u="$user" -v s="$sys" 'BEGIN {print u + s}')s CPU, $((rss / 1024)) MiB peak RSS"
    }

    many_label="$(printf "%'d" "$SCALE_FILES") small files" big_label="$BIG_GIB GiB file"
    log "generating $SCALE_FILES files of 0-200 bytes in 1000 dirs"
    python3 - "$work/many" "$((SCALE_FILES / 1000))" <<'EOF'
import os, random, sys
root, per_dir = sys.argv[1], int(sys.argv[2])
rng = random.Random(9)
words = [b"alpha", b"beta", b"gamma", b"delta", b"config", b"value", b"id", b"name", b"=", b"\n", b" "]
for d in range(1000):
    path = os.path.join(root, f"d{d:04d}")
    os.makedirs(path)
    for f in range(per_dir):
        n = rng.randint(0, 200)
        data = b"".join(rng.choice(words) for _ in range(n // 4 + 1))[:n]
        with open(os.path.join(path, f"f{f:04d}.txt"), "wb") as fh:
            fh.write(data)
EOF
    export VAULT_DIR=$work/vault-many
    (cd "$work/run" && "$vault_bin" init --new-password-file "$VAULT_PASSWORD_FILE" ${VAULT_INIT_ARGS:-} >/dev/null)
    cd "$work/run"
    run_timed many.snapshot "$vault_bin" snapshot "$work/many"
    ((rc == 0 || rc == 5)) || fail_step many.snapshot
    record "$many_label" snapshot many.snapshot
    run_timed many.unchanged "$vault_bin" snapshot "$work/many"
    ((rc == 0 || rc == 5)) || fail_step many.unchanged
    record "$many_label" "snapshot, unchanged" many.unchanged
    rm -rf "$work/many" "$VAULT_DIR"

    log "generating one $BIG_GIB GiB file (sparse, 64 random regions of 16 MiB)"
    big=$work/big/big.img
    mkdir -p "$work/big"
    truncate -s "${BIG_GIB}G" "$big"
    stride=$((BIG_GIB * 1024 / 16 / 64)) # in 16 MiB blocks: the regions are spread over the file
    for i in $(seq 0 63); do
        dd if=/dev/urandom of="$big" bs=16M count=1 seek=$((i * stride)) conv=notrunc status=none
    done
    export VAULT_DIR=$work/vault-big
    "$vault_bin" init --new-password-file "$VAULT_PASSWORD_FILE" ${VAULT_INIT_ARGS:-} >/dev/null
    run_timed big.snapshot "$vault_bin" snapshot "$work/big"
    ((rc == 0 || rc == 5)) || fail_step big.snapshot
    record "$big_label" snapshot big.snapshot
    free_now=$(free_gb "$work")
    need_restore=$((BIG_GIB * 5 / 2)) # 50 GB for 20 GiB: the restored copy and room to spare
    if ((free_now >= need_restore)); then
        run_timed big.restore "$vault_bin" restore latest --target "$work/restore"
        ((rc == 0)) || fail_step big.restore
        record "$big_label" restore big.restore
        cmp "$big" "$work/restore/big/big.img" || die "the restored $big_label differs"
        log "the restored $big_label matches"
        rm -rf "$work/restore"
    else
        log "SKIPPED the $big_label restore: only ${free_now} GB free under $work (needs $need_restore)"
        printf '%s\t%s\t\t\t\t\t\n' "$big_label" "restore SKIPPED (${free_now} GB free, needs $need_restore)" >>"$results"
    fi
    echo
    echo "| data | step | wall s | CPU s | peak RSS MiB | vault size |"
    echo "|---|---|---:|---:|---:|---:|"
    while IFS=$'\t' read -r what step wall user sys rss size; do
        if [[ -z "$wall" ]]; then
            echo "| $what | $step | | | | |"
        else
            echo "| $what | $step | $wall | $(awk -v u="$user" -v s="$sys" 'BEGIN {print u + s}') | $((rss / 1024)) | $(human "$size") |"
        fi
    done <"$results"
    echo
    echo "total run time: $(($(date +%s) - started)) s"
    exit 0
fi

# ============================================================================ main mode
# ---------------------------------------------------------------------------- corpus
pg_start() {
    pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    mkdir -p "$work/pg"
    if [[ "$(id -u)" -eq 0 ]]; then
        as_pg=(setpriv --reuid=65534 --regid=65534 --clear-groups)
        chown 65534:65534 "$work/pg"
        "${as_pg[@]}" test -w "$work/pg" || die "user nobody cannot write $work/pg (a parent of --work is not world-traversable)"
    fi
    pg_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "${as_pg[@]}" "$pgbin/initdb" -D "$work/pg/data" -U postgres -A trust -E UTF8 --no-sync >/dev/null
    "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w \
        -o "-p $pg_port -k $work/pg -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
    export PGHOST=127.0.0.1 PGPORT=$pg_port PGUSER=postgres
    "$pgbin/psql" -X -q -c "CREATE DATABASE bench"
}
pg_stop() {
    "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg/data" -m fast -w stop >/dev/null
    rm -rf "$work/pg"
}

build_src() { # DEST: whole crates / include dirs, picked reproducibly, up to SRC_FILES and SRC_MB
    python3 - "$1" "$SRC_FILES" "$((SRC_MB * 1000000))" <<'EOF'
import glob, os, random, shutil, sys
dest, want_n, want_b = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
# Files a backup tool may treat specially (ignore rules, template-only secrets) are left out so
# that every tool stores, and restores, exactly the same tree.
skip = {".gitignore", ".ignore", ".vaultignore", ".env", ".git"}
groups = []
for root in glob.glob(os.path.expanduser("~/.cargo/registry/src/*")):
    groups += [os.path.join(root, d) for d in sorted(os.listdir(root))]
for root in ["/usr/include", "/usr/src", "/usr/share/perl5", "/usr/lib/python3/dist-packages"] + sorted(glob.glob("/usr/lib/python3.*")):
    if os.path.isdir(root):
        groups += [os.path.join(root, d) for d in sorted(os.listdir(root)) if os.path.isdir(os.path.join(root, d))]
def files(g):
    out = []
    for dirpath, dirnames, filenames in os.walk(g):
        dirnames[:] = [d for d in dirnames if d not in skip]
        for f in filenames:
            if f in skip or f.startswith(".env"):
                continue
            p = os.path.join(dirpath, f)
            if os.path.isfile(p) and not os.path.islink(p):
                out.append((p, os.path.getsize(p)))
    return out
random.Random(9).shuffle(groups)
scanned = [(g, files(g)) for g in groups]
scanned = [(g, fs, len(fs), sum(s for _, s in fs)) for g, fs in scanned if fs]
avg = want_b / want_n
n = b = 0
taken, names = [], set()
# Passes over the shuffled groups: take a group when it fits and pulls the average file size
# toward the target's (bigger files while the bytes lag behind the count, smaller otherwise).
for _ in range(4):
    for item in scanned:
        g, fs, gn, gb = item
        name = g.strip("/").replace("/", "_")
        if name in names or n + gn > want_n * 1.02 or b + gb > want_b * 1.02:
            continue
        bytes_lag = b / want_b < n / want_n
        if n and (gb / gn > avg) != bytes_lag and gn > 20:
            continue
        names.add(name); taken.append((name, g, fs)); n += gn; b += gb
    if n >= want_n * 0.97 and b >= want_b * 0.97:
        break
n = b = 0
for name, g, fs in taken:
    for p, size in fs:
        out = os.path.join(dest, name, os.path.relpath(p, g))
        os.makedirs(os.path.dirname(out), exist_ok=True)
        try:
            shutil.copy2(p, out)
        except OSError:
            continue
        n += 1; b += size
print(f"{n} files, {b / 1e6:.0f} MB")
EOF
}

build_libs() { # DEST: real shared libraries (distinct inodes) up to LIBS_MB
    python3 - "$1" "$((LIBS_MB * 1000000))" <<'EOF'
import glob, os, shutil, sys
dest, want = sys.argv[1], int(sys.argv[2])
roots = ["/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib", "/usr/libexec",
         "/usr/local/lib"] + glob.glob(os.path.expanduser("~/.rustup/toolchains/*/lib"))
seen, b, n = set(), 0, 0
for root in roots:
    if not os.path.isdir(root):
        continue
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for f in sorted(filenames):
            if ".so" not in f:
                continue
            p = os.path.join(dirpath, f)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            st = os.stat(p)
            if (st.st_dev, st.st_ino) in seen or st.st_size == 0 or b + st.st_size > want * 1.02:
                continue
            seen.add((st.st_dev, st.st_ino))
            out = os.path.join(dest, os.path.relpath(p, "/"))
            os.makedirs(os.path.dirname(out), exist_ok=True)
            try:
                shutil.copy2(p, out)
            except OSError:
                continue
            b += st.st_size; n += 1
            if b >= want * 0.99:
                print(f"{n} files, {b / 1e6:.0f} MB"); sys.exit(0)
print(f"{n} files, {b / 1e6:.0f} MB")
EOF
}

build_dumps() { # CORPUS
    pg_start
    local psql="$pgbin/psql -X -q -v ON_ERROR_STOP=1 -d bench"
    local scale=$pg_scale
    if [[ -z "$scale" ]]; then
        "$pgbin/pgbench" -i -q -s 1 bench >/dev/null 2>&1
        local per
        per=$("$pgbin/pg_dump" --no-password bench | wc -c)
        scale=$(((DUMP_MB * 1000000 + per / 2) / per))
        log "a scale-1 dump is $per bytes: pgbench scale $scale for ~$DUMP_MB MB"
    fi
    log "loading pgbench scale $scale"
    "$pgbin/pgbench" -i -q -s "$scale" bench >/dev/null 2>&1
    mkdir -p "$1/dump" "$1/dump2"
    "$pgbin/pg_dump" --no-password bench >"$1/dump/db.sql"
    log "first dump: $(stat -c %s "$1/dump/db.sql") bytes"
    log "a busy 15 minutes: 1,350 account rows updated, 20,000 history rows inserted"
    $psql <<EOF
UPDATE pgbench_accounts SET abalance = abalance + (aid % 997) - 498
WHERE aid IN (SELECT 1 + (i::bigint * 2654435761) % n
              FROM generate_series(1, 1350) i, (SELECT count(*) n FROM pgbench_accounts) c);
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime)
SELECT 1 + (i % (10 * $scale)), 1 + (i % $scale), 1 + (i::bigint * 7919) % ($scale * 100000), i % 1000 - 500,
       now() - (20000 - i) * interval '45 milliseconds'
FROM generate_series(1, 20000) i;
EOF
    "$pgbin/pg_dump" --no-password bench >"$1/dump2/db.sql"
    log "second dump: $(stat -c %s "$1/dump2/db.sql") bytes"
    pg_scale_used=$scale
    pg_version=$("$pgbin/postgres" --version)
    pg_stop
}

pg_scale_used="(given corpus)" pg_version=""
if [[ -z "$corpus" || ! -e "$corpus" ]]; then
    if [[ -z "$corpus" ]]; then corpus=$work/corpus; fi
    mkdir -p "$corpus"
    log "building the corpus in $corpus"
    log "src: $(build_src "$corpus/src")"
    log "libs: $(build_libs "$corpus/libs")"
    build_dumps "$corpus"
else
    for p in src libs dump/db.sql dump2/db.sql; do
        [[ -e "$corpus/$p" ]] || die "--corpus $corpus lacks $p (layout: src/ libs/ dump/db.sql dump2/db.sql)"
    done
    [[ "$(find "$corpus/dump" -mindepth 1 -maxdepth 1 | wc -l)" -eq 1 ]] || die "$corpus/dump must hold db.sql alone"
    if find "$corpus/src" "$corpus/libs" \( -name .gitignore -o -name .ignore -o -name .vaultignore -o -name '.env*' \) | grep -q .; then
        log "WARNING: the corpus holds ignore files or .env files: AtlasVault honours/templates them, the anchors do not"
    fi
fi
db1=$work/db1.sql
cp "$corpus/dump/db.sql" "$db1"
if [[ "$corpus" != "$work/corpus" ]]; then corpus_db1_saved=$db1; fi
db2=$corpus/dump2/db.sql
src_n=$(find "$corpus/src" -type f | wc -l) src_b=$(dir_bytes "$corpus/src")
libs_n=$(find "$corpus/libs" -type f | wc -l) libs_b=$(dir_bytes "$corpus/libs")
db1_b=$(stat -c %s "$db1") db2_b=$(stat -c %s "$db2")
total_b=$((src_b + libs_b + db1_b))

# ---------------------------------------------------------------------------- tools
password=$work/password
head -c 24 /dev/urandom | base64 >"$password"
export VAULT_PASSWORD_FILE=$password RESTIC_PASSWORD_FILE=$password RUSTIC_PASSWORD_FILE=$password
export RESTIC_CACHE_DIR=$work/cache/restic RUSTIC_CACHE_DIR=$work/cache/rustic
export BORG_BASE_DIR=$work/cache/borg BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
export LC_ALL=C.UTF-8

declare -A ver
for t in $TOOLS; do
    case $t in
    vault) ver[$t]=$("$vault_bin" --version) ;;
    restic) ver[$t]=$(restic version | cut -d' ' -f1-2) ;;
    borg) ver[$t]=$(borg --version) ;;
    rustic) ver[$t]=$(rustic --version | head -1) ;;
    *) die "unknown tool $t (TOOLS: vault restic borg rustic)" ;;
    esac
done
label() {
    case $1 in
    vault) echo "AtlasVault" ;; restic) echo "restic" ;; borg) echo "borg" ;; rustic) echo "rustic" ;;
    esac
}

# tool_cmd TOOL STEP REPO: sets the array cmd to one step's command, run from inside the corpus
# (relative paths src libs dump, so that every tool restores TARGET/src, TARGET/libs, TARGET/dump).
# shellcheck disable=SC2206,SC2054 # VAULT_INIT_ARGS is split on purpose; zstd,3 is one word
tool_cmd() {
    local t=$1 step=$2 repo=$3 n
    case $t:$step in
    vault:init) cmd=("$vault_bin" init --vault "$repo" --new-password-file "$password" ${VAULT_INIT_ARGS:-}) ;;
    vault:snapshot) cmd=("$vault_bin" snapshot --vault "$repo" "$corpus/src" "$corpus/libs" "$corpus/dump") ;;
    vault:restore) cmd=("$vault_bin" restore --vault "$repo" latest --target "$work/restore-$t") ;;
    vault:verify) cmd=("$vault_bin" verify --vault "$repo" --read-data) ;;
    restic:init) cmd=(restic -q -r "$repo" init) ;;
    restic:snapshot) cmd=(restic -q -r "$repo" backup src libs dump) ;;
    restic:restore) cmd=(restic -q -r "$repo" restore latest --target "$work/restore-$t") ;;
    restic:verify) cmd=(restic -q -r "$repo" check --read-data) ;;
    borg:init) cmd=(borg init --encryption none "$repo") ;;
    borg:snapshot) n=$(($(cat "$work/borg.n" 2>/dev/null || echo 0) + 1)); echo $n >"$work/borg.n"
        cmd=(borg create --compression zstd,3 "$repo::snap$n" src libs dump) ;;
    borg:restore) cmd=(borg extract "$repo::snap$(cat "$work/borg.n")") ;; # run inside $work/restore-borg
    borg:verify) cmd=(borg check --verify-data "$repo") ;;
    rustic:init) cmd=(rustic --no-progress -r "$repo" init) ;;
    rustic:snapshot) cmd=(rustic --no-progress -r "$repo" backup src libs dump) ;;
    rustic:restore) cmd=(rustic --no-progress -r "$repo" restore latest "$work/restore-$t") ;;
    rustic:verify) cmd=(rustic --no-progress -r "$repo" check --read-data) ;;
    esac
}
# exit codes that still mean "the data is stored": AtlasVault 5 (a gate rejected the snapshot,
# which is kept), borg 1 (warnings)
ok_rc() {
    ((rc == 0)) && return 0
    [[ $1 == vault && $2 == snapshot && $rc == 5 ]] && { log "note: a gate rejected the snapshot (kept, not promoted): $(tail -n 3 "$work/logs/$3.err" | tr '\n' ' ')"; return 0; }
    [[ $1 == borg && $rc == 1 ]] && { log "note: borg warned: $(tail -n 3 "$work/logs/$3.err" | tr '\n' ' ')"; return 0; }
    return 1
}

results=$work/results.tsv
: >"$results"
# Every step starts with the corpus, the tool's repository and its cache read into the page
# cache ("warm cache" below). Once is not enough: this project's VMs run DAMON with a `pageout`
# scheme (/sys/kernel/mm/damon/admin/kdamonds/0: pages not accessed for 12 aggregation intervals
# of 5 s are paged out), so a corpus read at the start is back on disk by the second tool, and
# the tools after the first would pay for reading it.
warm() {
    { find "$corpus" "$@" -type f -print0 2>/dev/null | xargs -0 -r cat >/dev/null; } || true
}
steps=(initial unchanged delta restore verify)
for t in $TOOLS; do
    repo=$work/repo-$t
    log "== $(label "$t") (${ver[$t]})"
    cp -f "$db1" "$corpus/dump/db.sql"
    rm -rf "$work/cache"
    mkdir -p "$work/cache"
    tool_cmd "$t" init "$repo"
    (cd "$work/run" && "${cmd[@]}" >"$work/logs/$t.init.out" 2>&1) ||
        { cat "$work/logs/$t.init.out" >&2; die "$t init failed"; }
    before=$(dir_bytes "$repo")
    for step in "${steps[@]}"; do
        name=$t.$step
        case $step in
        initial | unchanged) tool_cmd "$t" snapshot "$repo"; dir=$corpus ;;
        delta) cp -f "$db2" "$corpus/dump/db.sql"; tool_cmd "$t" snapshot "$repo"; dir=$corpus ;;
        restore) mkdir -p "$work/restore-$t"; tool_cmd "$t" restore "$repo"; dir=$work/run
            if [[ $t == borg ]]; then dir=$work/restore-$t; fi ;;
        verify) tool_cmd "$t" verify "$repo"; dir=$work/run ;;
        esac
        warm "$repo" "$work/cache"
        cd "$dir"
        run_timed "$name" "${cmd[@]}"
        cd "$repo_root"
        ok_rc "$t" "$step" "$name" || fail_step "$name"
        size=$(dir_bytes "$repo")
        read -r wall user sys rss <"$work/logs/$name.time"
        added=$((size - before))
        before=$size
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$step" "$wall" "$user" "$sys" "$rss" "$size" "$added" >>"$results"
        log "$(label "$t") $step: ${wall}s wall, $(awk -v u="$user" -v s="$sys" 'BEGIN {print u + s}')s CPU, $((rss / 1024)) MiB peak RSS, repo $(human "$size") ($( ((added >= 0)) && echo +)$(human "$added"))"
        if [[ $step == restore ]]; then
            for p in src libs dump; do
                diff -r "$corpus/$p" "$work/restore-$t/$p" >"$work/logs/$t.diff" 2>&1 ||
                    { head -n 20 "$work/logs/$t.diff" >&2; die "$(label "$t")'s restore differs from the corpus ($p)"; }
            done
            log "$(label "$t") restore checked: diff -r finds no difference"
            # Kept until the end: deleting 21,000 files makes ext4 without a journal (this
            # project's VMs) create inodes several times slower for a minute or more after
            # (`recently_deleted`), which the next tool's restore would pay.
        fi
    done
done
cp -f "$db1" "$corpus/dump/db.sql"
# What the CPU allows: each step's own work timed stage by stage on one core over the corpus of
# the first snapshot (examples/cpufloor.rs), to set the ratios above against a floor that no
# tool can go under on this machine.
floor_tsv=$work/floor.tsv
: >"$floor_tsv"
if [[ " $TOOLS " == *" vault "* ]]; then
    log "measuring the CPU floor of each step (examples/cpufloor)"
    warm
    (cd "$corpus" && "$repo_root/target/release/examples/cpufloor" --tsv src libs dump) >"$floor_tsv" ||
        die "examples/cpufloor failed"
fi

# ---------------------------------------------------------------------------- report
{
    header "main comparison"
    for t in $TOOLS; do
        case $t in
        vault) echo "- ${ver[$t]}: encrypted (XChaCha20-Poly1305, its default${VAULT_INIT_ARGS:+; init: $VAULT_INIT_ARGS})" ;;
        restic) echo "- ${ver[$t]}: encrypted (password), default compression" ;;
        borg) echo "- ${ver[$t]}: --encryption none, --compression zstd,3" ;;
        rustic) echo "- ${ver[$t]}: encrypted (password), default compression" ;;
        esac
    done
    [[ -n "$pg_version" ]] && echo "- $pg_version, pgbench scale $pg_scale_used"
    echo "- corpus: src $src_n files $(human "$src_b"), libs $libs_n files $(human "$libs_b"), dump $(human "$db1_b") (second dump $(human "$db2_b")); $(human "$total_b") in all"
    echo "- warm cache: the corpus, the tool's repository and its cache are read just before each step (this VM's DAMON pages out what has been idle for a minute), the page cache is not dropped, the same for every tool; \`sync\` before each step"
    echo "- repo size: \`du -sb\` of the repository after the step (local caches of restic/rustic/borg not counted); delta *added* = size after delta - size before"
    echo
} >"$work/report.md"
python3 - "$results" "$TOOLS" "$floor_tsv" >>"$work/report.md" <<'EOF'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
tools = sys.argv[2].split()
label = {"vault": "AtlasVault", "restic": "restic", "borg": "borg", "rustic": "rustic"}
steps = ["initial", "unchanged", "delta", "restore", "verify"]
r = {}
for t, s, wall, user, sys_, rss, size, added in rows:
    r[(t, s)] = dict(wall=float(wall), cpu=float(user) + float(sys_), rss=int(rss) / 1024, size=int(size), added=int(added))
def mib(b): return f"{b / 2**20:,.1f}"
print("| step | tool | wall s | CPU s | peak RSS MiB | repo MiB after | added MiB |")
print("|---|---|---:|---:|---:|---:|---:|")
for s in steps:
    for t in tools:
        v = r.get((t, s))
        if not v: continue
        print(f"| {s} | {label[t]} | {v['wall']:.2f} | {v['cpu']:.2f} | {v['rss']:.0f} | {mib(v['size'])} | {mib(v['added'])} |")
anchors = [t for t in tools if t != "vault"]
if "vault" in tools and anchors:
    print()
    print("AtlasVault / anchor (below 1 = AtlasVault is faster, leaner or smaller):")
    print()
    print("| step | metric | " + " | ".join(f"vs {label[a]}" for a in anchors) + " |")
    print("|---|---|" + "---:|" * len(anchors))
    def ratio(a, b): return "n/a" if b == 0 else f"{a / b:.2f}x"
    for s in steps:
        metrics = [("wall", "wall time"), ("cpu", "CPU time"), ("rss", "peak RSS")]
        if s == "delta": metrics.append(("added", "bytes added"))
        for k, name in metrics:
            v = r.get(("vault", s))
            if not v: continue
            cells = [ratio(v[k], r[(a, s)][k]) if (a, s) in r else "n/a" for a in anchors]
            print(f"| {s} | {name} | " + " | ".join(cells) + " |")
    # The repository after the last step, to the byte: the size target is a near thing.
    last = [s for s in steps if ("vault", s) in r][-1:]
    for s in last:
        v = r[("vault", s)]["size"]
        cells = [f"{v / r[(a, s)]['size']:.4f}x ({v - r[(a, s)]['size']:+,} bytes)" if (a, s) in r else "n/a" for a in anchors]
        print(f"| after {s} | repository size | " + " | ".join(cells) + " |")
floor = dict(l.rstrip("\n").split("\t") for l in open(sys.argv[3]) if l.strip())
if floor and ("vault", "initial") in r:
    cores = int(floor["cores"])
    print()
    print(f"What the CPU allows (examples/cpufloor: each stage timed on one core over the first snapshot's corpus,")
    print(f"reading the files left out; the floor is those CPU seconds over {cores} cores, a perfect pipeline):")
    print()
    print("| step | stages | floor CPU s | floor wall s | AtlasVault wall s | AtlasVault / floor | issue 9's target | target wall s | target / floor |")
    print("|---|---|---:|---:|---:|---:|---|---:|---:|")
    rows_f = [
        ("initial", "initial (zstd 3)", "chunk + hash + zstd 3 + seal", ("restic", 0.25)),
        ("initial", "initial (vault levels)", "chunk + hash + zstd 5 text / 3 binary + seal", ("restic", 0.25)),
        ("restore", "restore", "open + unzstd + hash, each blob once (files not written)", ("rustic", 0.35)),
        ("verify", "verify", "hash stored + open + unzstd + hash, each blob once", ("rustic", 0.5)),
    ]
    for step, key, stages, (anchor, k) in rows_f:
        cpu = float(floor[key]); wall = cpu / cores
        v = r.get(("vault", step)); a = r.get((anchor, step))
        ours = f"{v['wall']:.2f} | {v['wall'] / wall:.2f}x" if v else "n/a | n/a"
        target = f"<= {k}x {label[anchor]}"
        tw = f"{k * a['wall']:.2f} | {k * a['wall'] / wall:.2f}x" if a else "n/a | n/a"
        print(f"| {key} | {stages} | {cpu:.2f} | {wall:.2f} | {ours} | {target} | {tw} |")
    print()
    print("A target / floor below 1x asks for less wall time than the step's own work takes on these cores.")
EOF
echo
cat "$work/report.md"
echo
echo "total run time: $(($(date +%s) - started)) s (corpus build included)"

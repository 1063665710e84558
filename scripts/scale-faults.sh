#!/usr/bin/env bash
# Scale faults too slow for the test suite, on the release binary:
#   1. FILES empty files spread over DIRS directories: snapshot, verify, restore, and a check
#      that every file came back (and is empty);
#   2. a sparse file of BIG_GIB GiB with a little data at its start, middle and end: snapshot,
#      verify --read-data, restore, a byte check of the data regions, and a check that the
#      restored file is sparse too (`du` of it well under its apparent size).
# Prints each step's wall time and peak RSS (/usr/bin/time) and exits non-zero on any failure.
#
#   scripts/scale-faults.sh                      (FILES=1000000 DIRS=1000 BIG_GIB=20)
#   FILES=100000 BIG_GIB=2 scripts/scale-faults.sh
# Needs about BIG_GIB GiB free for the restore only if sparse restore is broken; the work dir is
# $SCALE_DIR (default a temp dir under /tmp), removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
files="${FILES:-1000000}"
dirs="${DIRS:-1000}"
big_gib="${BIG_GIB:-20}"
cargo build --release --quiet
vault_bin="${CARGO_TARGET_DIR:-$PWD/target}/release/vault"
work="${SCALE_DIR:-$(mktemp -d /tmp/atlasvault-scale.XXXXXX)}"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
export VAULT_DIR="$work/vault" VAULT_PASSWORD_FILE="$work/password"
echo "scale-faults-password" > "$VAULT_PASSWORD_FILE"
"$vault_bin" init --argon2-memory-kib 8192 --argon2-iterations 1 >/dev/null

# Runs a step under /usr/bin/time: "label: 12.34 s 56789 KiB". Fails the script when it fails.
step() {
    local label=$1
    shift
    if ! /usr/bin/time -f '%e s %M KiB' -o "$work/time" "$@" > "$work/out" 2> "$work/err"; then
        echo "FAILED: $label: $*" >&2
        tail -5 "$work/err" >&2
        exit 1
    fi
    printf '%-40s %s\n' "$label:" "$(cat "$work/time")"
}

echo "== $files empty files in $dirs directories"
many="$work/many"
per=$(( (files + dirs - 1) / dirs ))
python3 - "$many" "$files" "$dirs" "$per" <<'PY'
import os, sys
root, files, dirs, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
n = 0
for d in range(dirs):
    p = os.path.join(root, f"d{d:04}")
    os.makedirs(p)
    for i in range(per):
        if n == files:
            break
        open(os.path.join(p, f"e{i:06}"), "wb").close()
        n += 1
PY
step "snapshot (empty files)" "$vault_bin" snapshot "$many"
step "snapshot again, unchanged" "$vault_bin" snapshot "$many"
step "verify --read-data" "$vault_bin" verify --read-data
step "restore (empty files)" "$vault_bin" restore latest --target "$work/many-out"
got=$(find "$work/many-out/many" -type f | wc -l)
nonempty=$(find "$work/many-out/many" -type f -size +0c | wc -l)
if [[ "$got" != "$files" || "$nonempty" != 0 ]]; then
    echo "FAILED: restored $got files ($nonempty non-empty), want $files empty" >&2
    exit 1
fi
echo "restored $got empty files"
rm -rf "$many" "$work/many-out"

echo "== a ${big_gib} GiB sparse file"
sparse="$work/sparse"
mkdir -p "$sparse"
img="$sparse/disk.img"
truncate -s "${big_gib}G" "$img"
size=$(( big_gib * 1024 * 1024 * 1024 ))
for at in 0 $(( size / 2 )) $(( size - 1048576 )); do
    head -c 1048576 /dev/urandom | dd of="$img" bs=1M seek=$(( at / 1048576 )) conv=notrunc status=none
done
step "snapshot (sparse)" "$vault_bin" snapshot "$sparse"
step "verify --read-data" "$vault_bin" verify --read-data
step "restore (sparse)" "$vault_bin" restore latest --target "$work/sparse-out"
out="$work/sparse-out/sparse/disk.img"
step "compare (cmp)" cmp "$img" "$out"
apparent=$(stat -c %s "$out")
used_kib=$(du -k "$out" | cut -f1)
echo "restored: apparent $apparent bytes, $used_kib KiB on disk"
if [[ "$apparent" != "$size" ]]; then
    echo "FAILED: restored size $apparent, want $size" >&2
    exit 1
fi
# Three 1 MiB data regions: anything near the apparent size means the holes were written out.
if (( used_kib > 64 * 1024 )); then
    echo "FAILED: the restored sparse file takes $used_kib KiB (not sparse)" >&2
    exit 1
fi
echo "vault: $(du -sh "$VAULT_DIR" | cut -f1)"
echo "scale-faults: all passed"

#!/usr/bin/env bash
# Prune on a vault that has churned: N snapshots of a tree where a tenth of the files change each
# time, then `forget --keep-last K` and `prune`. Prints the vault size before and after, the
# prune's wall time and peak RSS, how long it held the exclusive lock, and then verifies and
# restores the newest snapshot. Release build; everything under a temp dir (or $BENCH_DIR).
#
#   scripts/bench-prune.sh [FILES] [SNAPSHOTS] [KEEP]      (defaults 2000 files, 12, 3)
set -euo pipefail
cd "$(dirname "$0")/.."
files="${1:-2000}"
snaps="${2:-12}"
keep="${3:-3}"
cargo build --release --quiet
vault_bin="$PWD/target/release/vault"
work="${BENCH_DIR:-$(mktemp -d /tmp/atlasvault-bench-prune.XXXXXX)}"
trap '[[ -z "${BENCH_DIR:-}" ]] && rm -rf "$work"' EXIT
data="$work/data"
export VAULT_DIR="$work/vault" VAULT_PASSWORD_FILE="$work/password"
echo "bench-prune-password" > "$VAULT_PASSWORD_FILE"
mkdir -p "$data"
"$vault_bin" init --argon2-memory-kib 8192 --argon2-iterations 1 >/dev/null
# 100 KiB to 300 KiB of incompressible bytes per file.
write_file() { head -c $(( (100 + ($2 % 200)) * 1024 )) /dev/urandom > "$1"; }
for i in $(seq 1 "$files"); do write_file "$data/f$i" "$i"; done
for s in $(seq 1 "$snaps"); do
    for i in $(seq "$s" 10 "$files"); do write_file "$data/f$i" "$((i + s))"; done
    "$vault_bin" snapshot "$data" >/dev/null
done
size() { du -sb "$VAULT_DIR/packs" | cut -f1; }
before=$(size)
"$vault_bin" forget --keep-last "$keep" >/dev/null
/usr/bin/time -f "%e %M" -o "$work/time" "$vault_bin" --json prune > "$work/prune.json"
read -r wall rss_kib < "$work/time"
after=$(size)
python3 - "$work/prune.json" "$before" "$after" "$wall" "$rss_kib" "$files" "$snaps" "$keep" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
before, after, wall, rss = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
files, snaps, keep = sys.argv[6:9]
mb = lambda b: f"{b / 1e6:.0f} MB"
print(f"{files} files, {snaps} snapshots, kept {keep}: packs {mb(before)} -> {mb(after)} "
      f"(reclaimed {mb(r['bytes_reclaimed'])}); prune {wall:.1f} s, peak RSS {rss // 1024} MB, "
      f"exclusive lock {r['exclusive_ms']} ms; {r['packs_deleted']} packs deleted, "
      f"{r['packs_repacked']} repacked into {r['packs_written']}")
PY
"$vault_bin" verify --read-data | tail -1
"$vault_bin" restore latest --target "$work/restored" >/dev/null
diff -r "$data" "$work/restored/data" && echo "newest snapshot restores byte for byte"

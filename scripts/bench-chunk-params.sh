#!/usr/bin/env bash
# Repository size and delta cost of chunker settings (issue 9), on the corpus of
# scripts/bench-vs-anchors.sh: init an encrypted vault, set config.json keys, snapshot
# src + libs + dump (the first dump), then the same with the second dump; print wall time,
# CPU and peak RSS of both snapshots, the repository size after them and what the second added.
#
#   scripts/bench-chunk-params.sh --corpus DIR --db1 FILE --db2 FILE [--set KEY=VALUE]... [--plain]
#       [--template VAULT] [--vault-bin PATH]
#
# KEY is a dotted path into config.json (`chunker_text.avg_size`), VALUE a JSON value. --plain
# makes the vault unencrypted: its cut points then do not depend on a random key, so sizes repeat
# exactly from run to run. An encrypted vault's cut points depend on its key (about +-0.3 MiB of
# repository from one key to the next), so to compare two builds exactly, make one empty vault
# (`vault init --vault T --new-password-file F`, the password `benchmark password`) and pass
# `--template T` to both runs, with `--vault-bin` naming the other build's binary: each run copies
# T and so cuts with the same key. The corpus's dump/db.sql is replaced during the run and put back.
set -euo pipefail

corpus="" db1="" db2="" plain=0 template="" vault=""
sets=()
while (($#)); do
    case $1 in
    --corpus) corpus=$2; shift 2 ;;
    --db1) db1=$2; shift 2 ;;
    --db2) db2=$2; shift 2 ;;
    --set) sets+=("$2"); shift 2 ;;
    --plain) plain=1; shift ;;
    --template) template=$2; shift 2 ;;
    --vault-bin) vault=$2; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
[[ -d $corpus && -f $db1 && -f $db2 ]] || { echo "need --corpus DIR --db1 FILE --db2 FILE" >&2; exit 2; }

root=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z $vault ]]; then
    cargo build --release --quiet --manifest-path "$root/Cargo.toml"
    vault=$root/target/release/vault
fi
work=$(mktemp -d)
trap 'cp -f "$db1" "$corpus/dump/db.sql"; rm -rf "$work"' EXIT
printf 'benchmark password\n' >"$work/pw"
export VAULT_PASSWORD_FILE=$work/pw
if [[ -n $template ]]; then
    cp -a "$template" "$work/v"
elif ((plain)); then
    "$vault" init --vault "$work/v" --encryption none >/dev/null 2>&1
else
    "$vault" init --vault "$work/v" --new-password-file "$work/pw" >/dev/null
fi
python3 - "$work/v/config.json" "${sets[@]}" <<'PY'
import json, sys
path, sets = sys.argv[1], sys.argv[2:]
cfg = json.load(open(path))
for s in sets:
    key, value = s.split("=", 1)
    *parents, last = key.split(".")
    node = cfg
    for p in parents:
        node = node[p]
    node[last] = json.loads(value)
json.dump(cfg, open(path, "w"), indent=2)
PY

run() {
    sync
    /usr/bin/time -f "%e %U %S %M" -o "$work/time" \
        "$vault" snapshot --vault "$work/v" "$corpus/src" "$corpus/libs" "$corpus/dump" >/dev/null
    read -r wall user sys rss <"$work/time"
    echo "$1: ${wall} s wall, $(awk -v u="$user" -v s="$sys" 'BEGIN {print u + s}') s CPU, $((rss / 1024)) MiB peak RSS"
}
cp -f "$db1" "$corpus/dump/db.sql"
run initial
before=$(du -sb "$work/v" | cut -f1)
cp -f "$db2" "$corpus/dump/db.sql"
run delta
after=$(du -sb "$work/v" | cut -f1)
awk -v a="$before" -v b="$after" -v n="${sets[*]:-}" 'BEGIN {
    printf "settings: %s\nrepository after the delta: %.2f MiB; the second dump added %.3f MiB\n",
        (n == "" ? "defaults" : n), b / 1048576, (b - a) / 1048576 }'

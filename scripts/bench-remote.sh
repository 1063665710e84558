#!/usr/bin/env bash
# Times push and restore through each kind of remote on one corpus, side by side with the local
# vault: push to a directory, push to a local s3s-fs, then restore the last-known-good from the
# local vault, from the directory and from S3 (each from an empty cache, as on a fresh machine).
#
#   scripts/bench-remote.sh [CORPUS_DIR]      (default: /usr/lib/x86_64-linux-gnu + /usr/share/doc)
#
# Needs s3s-fs (cargo install s3s-fs@0.14.1 --features binary --locked). Uses the release build.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
VAULT="$PWD/target/release/vault"
work=$(mktemp -d /tmp/bench-remote.XXXXXX)
s3pid=""
cleanup() {
    if [[ -n "$s3pid" ]]; then kill "$s3pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

corpus=("$@")
if [[ ${#corpus[@]} -eq 0 ]]; then corpus=(/usr/lib/x86_64-linux-gnu /usr/share/doc); fi
echo "corpus: ${corpus[*]} ($(du -scb "${corpus[@]}" | tail -1 | cut -f1) bytes, $(find "${corpus[@]}" -type f | wc -l) files)"

head -c 32 /dev/urandom | base64 > "$work/pw"
export VAULT_PASSWORD_FILE="$work/pw"
export XDG_CACHE_HOME="$work/cache"

# A local S3 server that checks signatures.
mkdir -p "$work/s3/bench"
export AWS_ACCESS_KEY_ID=AKIABENCH AWS_SECRET_ACCESS_KEY="$(head -c 24 /dev/urandom | base64)"
RUST_LOG=s3s_fs=info s3s-fs --host 127.0.0.1 --port 0 --access-key "$AWS_ACCESS_KEY_ID" \
    --secret-key "$AWS_SECRET_ACCESS_KEY" "$work/s3" >"$work/s3.log" 2>&1 &
s3pid=$!
for _ in $(seq 100); do
    port=$(grep -o '127.0.0.1:[0-9]*' "$work/s3.log" | head -1 | cut -d: -f2 || true)
    [[ -n "$port" ]] && break
    sleep 0.1
done
endpoint="http://127.0.0.1:$port"

cat >"$work/vault.toml" <<EOF
vault = "$work/vault"
[[remote]]
name = "dir"
url = "$work/remote-dir"
[[remote]]
name = "s3"
url = "s3://bench/vault"
endpoint = "$endpoint"
region = "us-east-1"
path_style = true
EOF
export VAULT_CONFIG="$work/vault.toml"
mkdir "$work/remote-dir"

# step NAME COMMAND...: wall seconds and peak RSS of one command.
step() {
    local name=$1
    shift
    local t0 t1
    t0=$(date +%s.%N)
    /usr/bin/time -f "%M" -o "$work/rss" "$@" >/dev/null
    t1=$(date +%s.%N)
    printf '%-28s %7.2f s  %6d MB peak RSS\n' "$name" "$(awk "BEGIN{print $t1 - $t0}")" "$(($(cat "$work/rss") / 1024))"
}

"$VAULT" init --new-password-file "$work/pw" >/dev/null
step "snapshot" "$VAULT" snapshot "${corpus[@]}"
echo "vault size: $(du -sb "$work/vault/packs" | cut -f1) bytes in packs"
step "push to directory" "$VAULT" push --remote dir
step "push to s3s-fs" "$VAULT" push --remote s3
step "push again (nothing new)" "$VAULT" push
step "restore local" "$VAULT" restore --lkg --target "$work/r-local"
rm -rf "$work/r-local"
step "restore --from directory" "$VAULT" restore --lkg --from "file://$work/remote-dir" --target "$work/r-dir" --cache-dir "$work/c-dir"
rm -rf "$work/r-dir"
step "restore --from s3" "$VAULT" restore --lkg --from "s3://bench/vault?endpoint=$endpoint&path_style=true" --target "$work/r-s3" --cache-dir "$work/c-s3"
step "verify --remote s3 --read-data" "$VAULT" verify --remote s3 --read-data

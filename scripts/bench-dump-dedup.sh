#!/usr/bin/env bash
# Dedup across 15-minute dumps: what does the second pg_dump add, in AtlasVault and in restic?
#
#   scripts/bench-dump-dedup.sh [SCALE]     (default 30, as the issue asks: about 3M rows)
#   VAULT_INIT_ARGS="--chunk-avg 4096 ..."  extra `vault init` flags, to try other chunk sizes
#
# Starts a throwaway PostgreSQL on a loopback port (as nobody when run as root), loads pgbench at
# SCALE, dumps it into a fresh AtlasVault (encrypted, its default) and a fresh restic repository,
# then updates about 1% of the account rows and inserts 20,000 history rows, dumps again into
# both, and prints what each second dump added as a share of the dump's size. Installs restic
# and PostgreSQL from Debian when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
scale=${1:-30}

sudo=""
if [[ "$(id -u)" -ne 0 ]]; then sudo="sudo"; fi
need=()
command -v restic >/dev/null || need+=(restic)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if ((${#need[@]})); then
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
cargo build --release --quiet
vault_bin=$PWD/target/release/vault

work=$(mktemp -d "${TMPDIR:-/tmp}/dump-dedup.XXXXXX")
chmod 755 "$work"
as_pg=()
if [[ "$(id -u)" -eq 0 ]]; then
    as_pg=(setpriv --reuid=65534 --regid=65534 --clear-groups)
    mkdir "$work/pg" && chown 65534:65534 "$work/pg"
else
    mkdir "$work/pg"
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
    "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
"${as_pg[@]}" "$pgbin/initdb" -D "$work/pg/data" -U postgres -A trust -E UTF8 --no-sync >/dev/null
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w \
    -o "-p $port -k $work/pg -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
export PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres PATH="$pgbin:$PATH"
psql -X -q -c "CREATE DATABASE bench"
echo "loading pgbench scale $scale..."
pgbench -i -q -s "$scale" bench >/dev/null 2>&1

export VAULT_PASSWORD_FILE=$work/password RESTIC_PASSWORD_FILE=$work/password
head -c 24 /dev/urandom | base64 >"$work/password"
cat >"$work/vault.toml" <<EOF
vault = "$work/vault"

[[source]]
name = "db"
kind = "postgres"
host = "127.0.0.1"
port = $port
user = "postgres"
dbname = "bench"
EOF
export VAULT_CONFIG=$work/vault.toml
"$vault_bin" init ${VAULT_INIT_ARGS:-} >/dev/null
restic init -q -r "$work/restic"

dump_size() { pg_dump --no-password bench | wc -c; }
# "new stored": what the vault grew by (after zstd); "new": plaintext of the chunks it lacked.
vault_added() { "$vault_bin" snapshot --json | python3 -c 'import json,sys; v=json.load(sys.stdin); print(v["bytes_stored"], v["bytes_new"])'; }
restic_added() {
    pg_dump --no-password bench | restic backup -q -r "$work/restic" --stdin --stdin-filename bench.sql --json |
        python3 -c 'import json,sys
for line in sys.stdin:
    v = json.loads(line)
    if v.get("message_type") == "summary": print(v["data_added"])'
}

size1=$(dump_size)
read -r v1 n1 < <(vault_added)
r1=$(restic_added)
rows=$((scale * 1000))
echo "15 minutes of work: $rows account rows updated, 20000 history rows inserted..."
psql -X -q bench <<EOF
UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 100 = 7;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime)
SELECT 1 + (i % (10 * $scale)), 1 + (i % $scale), 1 + (i * 7919) % ($scale * 100000), i % 1000, now()
FROM generate_series(1, 20000) i;
EOF
size2=$(dump_size)
read -r v2 n2 < <(vault_added)
r2=$(restic_added)
pct() { python3 -c "print(f'{100 * $1 / $2:.2f}%')"; }
echo
echo "bytes added to the repository (restic 0.14 stores uncompressed; AtlasVault after zstd),"
echo "and, for AtlasVault, the plaintext of the chunks it did not have:"
printf '%-24s %16s %16s %16s\n' "" "AtlasVault" "(plaintext new)" "restic 0.14"
printf '%-24s %16s %16s %16s\n' "first dump, $size1 B" "$v1" "$n1" "$r1"
printf '%-24s %16s %16s %16s\n' "second dump, $size2 B" "$v2" "$n2" "$r2"
printf '%-24s %16s %16s %16s\n' "second adds, of its size" "$(pct "$v2" "$size2")" "$(pct "$n2" "$size2")" "$(pct "$r2" "$size2")"

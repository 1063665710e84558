#!/usr/bin/env bash
# The S3 integration tests (tests/integration/remote_s3.rs) against Garage, a production
# distributed S3 store, instead of the s3s-fs they normally start for themselves.
#
# s3s-fs checks signatures but is a thin layer over a directory; Garage is what a user may
# actually run, with its own listing, multipart, range-read and error behaviour. The script
# starts a throwaway single-node Garage on loopback (config, metadata and data in a temp dir),
# points the tests at it through VAULT_TEST_S3_ENDPOINT and friends (see
# tests/integration/s3server.rs), stops it and removes everything on exit, and exits with the
# test run's status.
#
# Garage is installed with cargo (GARAGE_VERSION, default 2.5.0; 12-15 minutes on 2 cores)
# when `garage` is neither on PATH nor in ~/.cargo/bin.
# Knobs: GARAGE_VERSION=X.Y.Z, GARAGE_SETUP=auto|single-node|classic (how the layout, bucket
# and key are made; auto uses `server --single-node --default-bucket` when the binary has it),
# TEST_GARAGE_KEEP_LOG=PATH (copy Garage's log there before the temp dir goes).
set -euo pipefail
cd "$(dirname "$0")/.."

garage_version="${GARAGE_VERSION:-2.5.0}"
setup="${GARAGE_SETUP:-auto}"
bucket="atlas-test"
# Garage signs and checks requests with its configured region; the tests default to "garage"
# too, but say it explicitly so the two cannot drift apart.
region="garage"

say() { echo "test-garage: $*" >&2; }

# ---- The garage binary ---------------------------------------------------------------------
garage=""
if command -v garage >/dev/null 2>&1; then
    garage="$(command -v garage)"
elif [[ -x "$HOME/.cargo/bin/garage" ]]; then
    garage="$HOME/.cargo/bin/garage"
else
    say "garage is not installed; building garage@$garage_version with cargo (takes a while)"
    # Only the sqlite metadata engine (no lmdb/fjall to compile) and bundled C libraries, so
    # nothing but a C compiler is needed; nice, because the build takes every core for minutes.
    nice -n 19 cargo install "garage@$garage_version" --locked --no-default-features \
        --features bundled-libs,sqlite
    garage="$HOME/.cargo/bin/garage"
fi
# `garage --version` prints "garage cargo:2.5.0 [features: ...]" for a crates.io build (a git
# build says e.g. v2.5.0 there): keep that word, without the "cargo:".
version="$("$garage" --version 2>/dev/null | awk '{print $2; exit}')"
version="${version#cargo:}"
version="${version:-unknown}"
say "using $garage ($version)"

# ---- Scratch space, and the cleanup that always runs ---------------------------------------
work="$(mktemp -d "${TMPDIR:-/tmp}/test-garage.XXXXXX")"
server_pid=""
# shellcheck disable=SC2317 # invoked by the EXIT trap, which shellcheck does not follow
cleanup() {
    local rc=$?
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        # SIGTERM lets Garage close its sqlite database cleanly; SIGKILL if it hangs.
        kill -TERM "$server_pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [[ -n "${TEST_GARAGE_KEEP_LOG:-}" && -f "$work/garage.log" ]]; then
        cp -- "$work/garage.log" "$TEST_GARAGE_KEEP_LOG" || true
    fi
    rm -rf -- "$work"
    exit "$rc"
}
trap cleanup EXIT
# Turn Ctrl-C and kill into a normal exit, so that the EXIT trap stops the server.
trap 'exit 130' INT
trap 'exit 143' TERM

# n random bytes as lowercase hex, straight from the kernel (no openssl needed).
random_hex() { head -c "$1" /dev/urandom | od -An -v -tx1 | tr -d ' \n'; }

# Sets `port` to a TCP port on 127.0.0.1 that nothing listens on. The kernel picks one when
# python3 is there; otherwise random ports are probed. Either way another process may take it
# before Garage binds it, which then fails the start loudly rather than silently.
taken=()
port=""
free_port() {
    local p
    for _ in $(seq 100); do
        if command -v python3 >/dev/null 2>&1; then
            p="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
        else
            p=$((20000 + RANDOM % 40000))
            if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then continue; fi
        fi
        # The RPC and S3 ports must differ: skip one handed out already.
        if [[ " ${taken[*]-} " != *" $p "* ]]; then
            taken+=("$p")
            port="$p"
            return
        fi
    done
    say "found no free port"
    return 1
}

# Not $(free_port): a subshell would lose `taken`, and both ports could come out the same.
free_port
rpc_port="$port"
free_port
s3_port="$port"
# The S3 key the tests use. Garage's own keys look like GK + 24 hex digits and 64 hex digits;
# the same shapes here, so that the key behaves like one `garage key create` makes.
access_key="GK$(random_hex 12)"
secret_key="$(random_hex 32)"
cfg="$work/garage.toml"
mkdir -p "$work/meta" "$work/data"
# Single node, replication factor 1, sqlite metadata (the one engine this build has); RPC and
# S3 bound to loopback only. No admin API or web endpoint: the CLI talks RPC, the tests S3.
# fsync stays off (the default): the data is thrown away at the end anyway. The config holds
# the RPC secret; mktemp -d made its directory private (0700).
cat >"$cfg" <<EOF
metadata_dir = "$work/meta"
data_dir = "$work/data"
db_engine = "sqlite"
replication_factor = 1

rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$(random_hex 32)"

[s3_api]
s3_region = "$region"
api_bind_addr = "127.0.0.1:$s3_port"
root_domain = ".s3.garage.localhost"
EOF
say "config: $cfg: rpc 127.0.0.1:$rpc_port, s3 127.0.0.1:$s3_port, region $region"

g() { "$garage" -c "$cfg" "$@"; }

# `server --single-node --default-bucket` (Garage 2.x) makes the one-node layout, the key and
# the bucket itself, from GARAGE_DEFAULT_* in its environment; older builds need the classic
# CLI sequence after the start.
if [[ "$setup" == auto ]]; then
    if g server --help 2>/dev/null | grep -q -- '--default-bucket'; then
        setup="single-node"
    else
        setup="classic"
    fi
fi
say "setup: $setup"

# ---- Start the server ----------------------------------------------------------------------
log="$work/garage.log"
if [[ "$setup" == single-node ]]; then
    GARAGE_DEFAULT_ACCESS_KEY="$access_key" GARAGE_DEFAULT_SECRET_KEY="$secret_key" \
        GARAGE_DEFAULT_BUCKET="$bucket" RUST_LOG="${RUST_LOG:-garage=info}" \
        "$garage" -c "$cfg" server --single-node --default-bucket >"$log" 2>&1 &
else
    RUST_LOG="${RUST_LOG:-garage=info}" "$garage" -c "$cfg" server >"$log" 2>&1 &
fi
server_pid=$!

# Up means the S3 port answers HTTP (anonymous requests get a 403, which is an answer).
s3_answers() {
    if command -v curl >/dev/null 2>&1; then
        [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$s3_port/" || true)" != 000 ]]
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$s3_port") 2>/dev/null
    fi
}
deadline=$((SECONDS + 60))
until s3_answers; do
    if ! kill -0 "$server_pid" 2>/dev/null; then
        say "garage exited before its S3 port answered; its log:"
        cat "$log" >&2
        exit 1
    fi
    if ((SECONDS > deadline)); then
        say "garage's S3 port did not answer within 60s; its log:"
        tail -n 40 "$log" >&2
        exit 1
    fi
    sleep 0.2
done
say "garage answers on http://127.0.0.1:$s3_port (pid $server_pid)"

if [[ "$setup" == classic ]]; then
    # The node's id, the layout that gives it the whole (single) zone, then key and bucket.
    node_id="$(g node id -q 2>/dev/null | cut -d@ -f1)"
    g layout assign -z dc1 -c 1G "$node_id" >/dev/null
    g layout apply --version 1 >/dev/null
    g bucket create "$bucket" >/dev/null
    # Garage generates this key; its secret is parsed out of the output, never shown.
    key_out="$(g key create atlas-key)"
    # It prints an aligned table: "Key ID:   GK...", "Secret key:   <64 hex digits>".
    access_key="$(awk '/^Key ID:/ {print $NF}' <<<"$key_out")"
    secret_key="$(awk '/^Secret key:/ {print $NF}' <<<"$key_out")"
    unset key_out
    if [[ -z "$access_key" || -z "$secret_key" ]]; then
        say "could not read the key from \`garage key create\`"
        exit 1
    fi
    g bucket allow --read --write --owner "$bucket" --key atlas-key >/dev/null
fi
# Only the first characters of the secret, to tell runs apart.
say "bucket $bucket, key $access_key, secret ${secret_key:0:4}****"
# The bucket must exist and the key must be allowed on it before the tests start.
if ! g bucket info "$bucket" >"$work/bucket-info" 2>&1 || ! grep -q "$access_key" "$work/bucket-info"; then
    say "bucket $bucket is missing or $access_key has no access to it:"
    cat "$work/bucket-info" >&2
    exit 1
fi

# ---- The tests -----------------------------------------------------------------------------
export VAULT_TEST_S3_ENDPOINT="http://127.0.0.1:$s3_port"
export VAULT_TEST_S3_BUCKET="$bucket"
export VAULT_TEST_S3_REGION="$region"
export AWS_ACCESS_KEY_ID="$access_key"
export AWS_SECRET_ACCESS_KEY="$secret_key"
# Credentials of the caller's own AWS setup must not mix with the ones above.
unset AWS_SESSION_TOKEN AWS_SECURITY_TOKEN AWS_PROFILE AWS_DEFAULT_PROFILE

test_log="$work/test.log"
started=$SECONDS
set +e
if cargo nextest --version >/dev/null 2>&1; then
    # --no-fail-fast: one failing test should not hide what the others say about Garage.
    cargo nextest run --no-fail-fast --test integration remote_s3 2>&1 | tee "$test_log"
else
    say "cargo-nextest is missing; using cargo test"
    cargo test --no-fail-fast --test integration remote_s3 2>&1 | tee "$test_log"
fi
status=${PIPESTATUS[0]}
set -e
elapsed=$((SECONDS - started))

# nextest ends with "N tests run: P passed, F failed, ..."; cargo test with
# "test result: ... P passed; F failed; ...".
count() { grep -oE "[0-9]+ $1" "$test_log" | tail -n 1 | grep -oE '^[0-9]+' || echo 0; }
passed="$(count passed)"
failed="$(count failed)"
if ((status != 0)) && ((failed == 0)); then
    say "the test run failed before any test did (build error?); status $status"
fi
if ((status != 0)); then
    say "last lines of garage's log:"
    # Without its colour codes, which Garage writes even to a file.
    tail -n 30 "$log" | sed $'s/\x1b\\[[0-9;]*m//g' >&2
fi
say "tests took ${elapsed}s"
echo "test-garage: $passed passed, $failed failed against Garage $version"
exit "$status"

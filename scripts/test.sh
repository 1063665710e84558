#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit + integration tests (a real PostgreSQL server
# among them), doc tests, and a short fuzzing run.
set -euo pipefail
cd "$(dirname "$0")/.."
# The PostgreSQL tests start a real server (Debian's postgresql: initdb + pg_ctl on loopback).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "test.sh: installing Debian's postgresql for the PostgreSQL tests" >&2
    sudo=""
    if [[ "$(id -u)" -ne 0 ]]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
fi
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets
cargo test --doc
# Every decoder's cargo-fuzz target, briefly (FUZZ_SECONDS each, default 20).
bash scripts/fuzz-smoke.sh

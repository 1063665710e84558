#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit + integration tests (a real PostgreSQL server, a
# real S3 server and a real NTFS file system among them), doc tests, and a short fuzzing run.
set -euo pipefail
cd "$(dirname "$0")/.."
# The build needs a few GB; say what there is, so a linker killed by a full disk is recognisable.
df -h . | awk 'NR==2 { print "test.sh: " $4 " free on " $6 }' >&2
# The PostgreSQL tests start a real server (Debian's postgresql: initdb + pg_ctl on loopback).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "test.sh: installing Debian's postgresql for the PostgreSQL tests" >&2
    sudo=""
    if [[ "$(id -u)" -ne 0 ]]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
fi
# The NTFS remote tests format and mount a real NTFS image (Debian's ntfs-3g, FUSE).
if ! command -v mkntfs >/dev/null 2>&1 && ! [[ -x /sbin/mkntfs || -x /usr/sbin/mkntfs ]]; then
    echo "test.sh: installing Debian's ntfs-3g for the NTFS remote tests" >&2
    sudo=""
    if [[ "$(id -u)" -ne 0 ]]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq ntfs-3g >/dev/null
fi
# The S3 remote tests start a real S3 server that checks signatures (about 2 minutes to build).
if ! command -v s3s-fs >/dev/null 2>&1 && ! [[ -x "$HOME/.cargo/bin/s3s-fs" ]]; then
    echo "test.sh: installing s3s-fs 0.14.1 for the S3 remote tests" >&2
    cargo install s3s-fs@0.14.1 --features binary --locked --quiet
fi
# Each stage says how long it took, so a slow CI run shows where the time went.
stage() {
    local t=$SECONDS
    "$@"
    echo "test.sh: '$*' took $((SECONDS - t)) s (total $SECONDS s)" >&2
}
stage cargo fmt --all -- --check
stage cargo clippy --all-targets -- -D warnings
stage cargo test --all-targets
stage cargo test --doc
# Every decoder's cargo-fuzz target, briefly: 10 s each here, which keeps the whole suite under
# 20 minutes on 2 cores (FUZZ_SECONDS=N for more; scripts/fuzz-smoke.sh alone defaults to 20).
FUZZ_SECONDS="${FUZZ_SECONDS:-10}" stage bash scripts/fuzz-smoke.sh

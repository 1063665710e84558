#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit + integration tests, doc tests.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets
cargo test --doc
# Every decoder's cargo-fuzz target, briefly (FUZZ_SECONDS each, default 20).
bash scripts/fuzz-smoke.sh

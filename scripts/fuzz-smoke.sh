#!/usr/bin/env bash
# Fuzz smoke test: runs every cargo-fuzz target in fuzz/ for FUZZ_SECONDS seconds (default 20).
#
# Each target starts from a scratch corpus holding fuzz/seeds/TARGET/ (real vault files) and
# fuzz/regressions/TARGET/ (inputs that once crashed), so a regression fails the run straight away.
# Exits non-zero if any target crashes, panics, leaks, times out or exceeds 2 GiB; libFuzzer leaves
# the input in fuzz/artifacts/TARGET/ (gitignored): copy it to fuzz/regressions/TARGET/ to pin it.
#
# cargo-fuzz builds with AddressSanitizer, which takes nightly-only -Z flags: the script uses the
# nightly toolchain when rustup has one, else the default toolchain with RUSTC_BOOTSTRAP=1. It
# installs cargo-fuzz if `cargo fuzz` is missing.
# Knobs: FUZZ_SECONDS=N, FUZZ_TARGETS="pack tree", FUZZ_TOOLCHAIN=NAME (a rustup toolchain),
# FUZZ_SANITIZER=address|none (default none).
#
# Why no sanitizer by default: the decoders are safe Rust, so AddressSanitizer finds little that a
# panic or the RSS limit does not, while its build of the whole dependency tree (bundled SQLite and
# zstd included) takes 9-15 minutes on a 2-core CI box against about 4 without it. Without a
# sanitizer libFuzzer cannot enforce -malloc_limit_mb; -rss_limit_mb still catches unbounded
# allocation. Long fuzzing sessions should set FUZZ_SANITIZER=address.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-20}"
sanitizer="${FUZZ_SANITIZER:-none}"
rss_limit_mb=2048
# Above every size cap the decoders document (the largest is a 256 MiB blob), so a single
# allocation this big means a length was trusted that should not have been.
malloc_limit_mb=512
# One input running this long is a hang worth failing on, not a slow machine.
input_timeout_secs=20

toolchain="${FUZZ_TOOLCHAIN:-nightly}"
if cargo "+$toolchain" --version >/dev/null 2>&1; then
    cargo=(cargo "+$toolchain")
elif [[ -z "${FUZZ_TOOLCHAIN:-}" ]]; then
    echo "fuzz-smoke: no nightly toolchain; using the default one with RUSTC_BOOTSTRAP=1" >&2
    export RUSTC_BOOTSTRAP=1
    cargo=(cargo)
else
    echo "fuzz-smoke: rustup has no toolchain $toolchain" >&2
    exit 1
fi
if ! cargo fuzz --help >/dev/null 2>&1; then
    echo "fuzz-smoke: cargo-fuzz is missing; installing it" >&2
    cargo install cargo-fuzz --locked
fi

if [[ -n "${FUZZ_TARGETS:-}" ]]; then
    read -ra targets <<<"$FUZZ_TARGETS"
else
    mapfile -t targets < <("${cargo[@]}" fuzz list)
fi
if ((${#targets[@]} == 0)); then
    echo "fuzz-smoke: no fuzz targets found" >&2
    exit 1
fi

scratch="$(mktemp -d "${TMPDIR:-/tmp}/fuzz-smoke.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

started=$SECONDS
echo "fuzz-smoke: building ${targets[*]}"
for t in "${targets[@]}"; do
    if ! "${cargo[@]}" fuzz build --sanitizer "$sanitizer" "$t" >"$scratch/build.log" 2>&1; then
        cat "$scratch/build.log" >&2
        exit 1
    fi
done

failed=()
for t in "${targets[@]}"; do
    corpus="$scratch/corpus/$t"
    mkdir -p "$corpus"
    for d in "fuzz/seeds/$t" "fuzz/regressions/$t"; do
        if [[ -d "$d" ]]; then
            cp -- "$d"/* "$corpus"/ 2>/dev/null || true
        fi
    done
    log="$scratch/$t.log"
    if "${cargo[@]}" fuzz run --sanitizer "$sanitizer" "$t" "$corpus" -- \
        -max_total_time="$seconds" -rss_limit_mb="$rss_limit_mb" \
        -malloc_limit_mb="$malloc_limit_mb" \
        -timeout="$input_timeout_secs" -print_final_stats=1 >"$log" 2>&1; then
        runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
        units="$(find "$corpus" -type f | wc -l)"
        echo "fuzz-smoke: $t ok: $runs runs in ${seconds}s, corpus of $units inputs"
    else
        failed+=("$t")
        echo "fuzz-smoke: $t FAILED; last lines of its log:" >&2
        tail -n 60 "$log" >&2
        echo "fuzz-smoke: $t: input saved under fuzz/artifacts/$t/" >&2
    fi
done

echo "fuzz-smoke: ${#targets[@]} targets in $((SECONDS - started))s"
if ((${#failed[@]})); then
    echo "fuzz-smoke: FAILED: ${failed[*]}" >&2
    exit 1
fi

#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ (the codec, topic names and filters, the RON files) for SECONDS
# each, one after the other, starting from the committed seed corpus; prints each target's
# executions and whether it found a crash, and exits non-zero if any did.
#
#   scripts/fuzz.sh            # 30 s per target (CI runs 20 s)
#   scripts/fuzz.sh 3600       # an hour per target, before a release
#
# Needs the nightly toolchain (libFuzzer's instrumentation is nightly-only); installs cargo-fuzz
# if it is missing. A crash leaves its input in fuzz/artifacts/TARGET/; reproduce it with
# `cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/crash-...` and shrink it with
# `cargo +nightly fuzz tmin TARGET fuzz/artifacts/TARGET/crash-...`.
#
# Env: FUZZ_TARGETS (all of them: codec topics ron_files)  FUZZ_CODEGEN_UNITS (16)
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET=${1:-30}
TARGETS=${FUZZ_TARGETS:-codec topics ron_files}
# cargo-fuzz builds with one codegen unit by default: a little faster to run, but it leaves
# one of two cores idle through most of a build that is already long with every dependency
# instrumented. Short runs spend most of their time building.
CODEGEN_UNITS=${FUZZ_CODEGEN_UNITS:-16}

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz: the nightly toolchain is needed (rustup toolchain install nightly)" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

# Built once for every target, with the same options as the runs below so that `run` finds
# nothing to rebuild.
BUILD_OPTS=(--release --debug-assertions --codegen-units "$CODEGEN_UNITS")
echo "== building the fuzz targets (nightly, AddressSanitizer)" >&2
cargo +nightly fuzz build "${BUILD_OPTS[@]}"

# New inputs a run finds go to a scratch corpus, so that runs never change the committed seeds
# (libFuzzer writes to the first corpus folder only; the seeds are read from the second).
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT

failed=()
for t in $TARGETS; do
    echo "== fuzz $t for ${SECONDS_PER_TARGET}s" >&2
    mkdir -p "$SCRATCH/$t" "fuzz/artifacts/$t"
    log="$SCRATCH/$t.log"
    status=0
    # -timeout: an input that takes this long is a hang, and is reported like a crash.
    cargo +nightly fuzz run "${BUILD_OPTS[@]}" "$t" "$SCRATCH/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=30 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    # The final stats when the run ends by itself; after a crash, the last progress line's count.
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    [ -n "$execs" ] || execs=$(grep -o '^#[0-9]*' "$log" | tail -n 1 | tr -d '#')
    seeds=$(find "fuzz/corpus/$t" -type f | wc -l)
    found=$(find "$SCRATCH/$t" -type f | wc -l)
    if [ "$status" -eq 0 ]; then
        echo "fuzz $t: ${execs:-?} executions in ${SECONDS_PER_TARGET}s, corpus $seeds seeds + $found new inputs, no crash"
    else
        # The run's own report: the panic or sanitizer message, the stack and the input's path.
        tail -n 60 "$log" >&2
        echo "fuzz $t: CRASH (exit $status) after ${execs:-?} executions; input in fuzz/artifacts/$t/"
        failed+=("$t")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: crashes in ${failed[*]}" >&2
    exit 1
fi

#!/usr/bin/env bash
# Brief coverage-guided fuzzing of every decoder (the cargo-fuzz targets in fuzz/), for CI and
# before a change to the repository format. Installs cargo-fuzz if it is missing, builds all
# targets, then runs each for SECONDS_PER_TARGET seconds (default 20) starting from its
# committed seed corpus (fuzz/corpus/<target>/, left unchanged: new inputs go to a temporary
# directory). Fails if any target crashes, panics, leaks, times out or runs out of memory;
# the offending input is then in fuzz/artifacts/<target>/. See docs/fuzzing.md.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]
#   FUZZ_TARGETS="tree index"  runs only those targets (default: all, from `cargo fuzz list`)
#   FUZZ_ARGS="-max_len=65536" adds libFuzzer flags to every run
#   FUZZ_LOGS=DIR              keeps each target's log as DIR/<target>.log (default: a
#                              temporary directory, removed at the end)
#   FUZZ_SANITIZER=none        builds without AddressSanitizer (default: address). CI uses
#                              none: the build takes a fraction of the time, and Rust's own
#                              checks (bounds, overflow, panics), the allocation limit and the
#                              timeouts still catch what the targets look for
set -euo pipefail
if [[ -n "${FUZZ_LOGS:-}" ]]; then
  mkdir -p "$FUZZ_LOGS"
  FUZZ_LOGS=$(cd "$FUZZ_LOGS" && pwd)
fi
cd "$(dirname "$0")/../fuzz"
secs="${1:-20}"
# cargo-fuzz passes -Z flags (sanitizers, coverage instrumentation) to rustc; this makes the
# stable toolchain accept them.
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=never
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --version 0.13.2 --locked
fi
read -r -a targets <<<"${FUZZ_TARGETS:-$(cargo fuzz list | tr '\n' ' ')}"
sanitizer="${FUZZ_SANITIZER:-address}"
start=$SECONDS
cargo fuzz build --sanitizer "$sanitizer"
echo "fuzz: built the targets (sanitizer: $sanitizer) in $((SECONDS - start)) s"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
logs="${FUZZ_LOGS:-$work}"
mkdir -p "$logs"
read -r -a extra <<<"${FUZZ_ARGS:-}"
failed=()
for t in "${targets[@]}"; do
  mkdir -p "$work/$t"
  # Memory: libFuzzer's default 2 GiB for RSS and for any single allocation.
  if nice -n 19 cargo fuzz run --sanitizer "$sanitizer" "$t" "$work/$t" "corpus/$t" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    "${extra[@]}" >"$logs/$t.log" 2>&1; then
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log")
    cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$logs/$t.log" | tail -n 1 || true)
    echo "fuzz: $t ok: ${execs:-?} runs in ${secs} s, ${cov:-no coverage line}"
  else
    failed+=("$t")
    echo "fuzz: $t FAILED; its log ends:"
    tail -n 40 "$logs/$t.log"
    ls -1 "artifacts/$t/" 2>/dev/null | sed "s|^|  artifact: fuzz/artifacts/$t/|" || true
  fi
done
echo "fuzz: $(( ${#targets[@]} - ${#failed[@]} )) passed, ${#failed[@]} failed in $((SECONDS - start)) s"
if ((${#failed[@]})); then
  echo "fuzz: failing targets: ${failed[*]}"
  exit 1
fi

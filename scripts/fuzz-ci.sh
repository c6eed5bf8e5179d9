#!/usr/bin/env bash
# CI for the fuzz targets in fuzz/ (cargo-fuzz, libFuzzer): builds every
# target, replays its committed corpus (fuzz/corpus/<target>/), then fuzzes
# each for a few seconds (FUZZ_SECONDS, default 5: about a minute in all).
# Exits non-zero on any finding; the crashing input is left in
# fuzz/artifacts/<target>/. New inputs go to a scratch directory, never
# into the committed corpus.
#
# Built without a sanitizer (crier-server forbids unsafe code) and with
# debug assertions, so integer overflows are findings too; on the stable
# toolchain cargo-fuzz needs RUSTC_BOOTSTRAP=1 for its -Z flags.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
seconds=${FUZZ_SECONDS:-5}
triple=$(rustc -vV | sed -n 's/^host: //p')
start=$(date +%s)
cargo fuzz build -O -a -s none
echo "fuzz: built every target in $(( $(date +%s) - start ))s"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in $(cargo fuzz list); do
  bin=target/$triple/release/$target
  mkdir -p "corpus/$target" "artifacts/$target" "$scratch/$target"
  # Replay: every corpus input runs once while the corpus loads.
  "$bin" -runs=0 -artifact_prefix="artifacts/$target/" "corpus/$target" 2>"$scratch/$target.replay" \
    || { tail -30 "$scratch/$target.replay"; echo "fuzz: $target failed on its corpus" >&2; exit 1; }
  # A short bounded run from the corpus.
  "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="artifacts/$target/" "$scratch/$target" "corpus/$target" 2>"$scratch/$target.run" \
    || { tail -30 "$scratch/$target.run"; echo "fuzz: $target found a failure" >&2; exit 1; }
  echo "fuzz: $target ok ($(sed -n 's/^stat::number_of_executed_units: *//p' "$scratch/$target.run") runs)"
done
echo "fuzz: done in $(( $(date +%s) - start ))s"

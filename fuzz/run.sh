#!/usr/bin/env bash
# Runs every fuzz target for N seconds each (default 20) and prints its
# executions per second and in total; fails on the first crash, with the
# input left in fuzz/artifacts/TARGET/. Needs the nightly toolchain: skips
# (exit 0) with a message without it, and installs cargo-fuzz when missing.
#   fuzz/run.sh [seconds]        FUZZ_TARGETS="config ws_frames" to pick
# See docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-20}
targets=${FUZZ_TARGETS:-"proxy_protocol h1_response ws_frames config admin_json"}
# Release build with debug assertions (overflow checks) and AddressSanitizer.
flags=(-O --debug-assertions)

# Read whole first: `grep -q` closing the pipe early could fail it (pipefail).
toolchains=$(rustup toolchain list 2>/dev/null || true)
if ! grep -q '^nightly' <<<"$toolchains"; then
  echo "fuzz: skipped: no nightly toolchain (rustup toolchain install nightly)"
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo +nightly install cargo-fuzz --locked
fi
cargo +nightly fuzz build "${flags[@]}"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in $targets; do
  # New inputs go to corpus/$t beside the seeds (git ignores them).
  if ! cargo +nightly fuzz run "${flags[@]}" "$t" -- \
    -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "fuzz: $t FAILED; the input is in fuzz/artifacts/$t/"
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  printf 'fuzz: %-15s %8s execs/s %11s execs in %s s\n' "$t" "$rate" "$runs" "$secs"
done

#!/usr/bin/env bash
# Fuzzes every parser of untrusted input (fuzz/fuzz_targets) for FUZZ_SECONDS each (default 20)
# on top of the committed corpus, with libFuzzer through cargo-fuzz on the nightly toolchain.
# New inputs go to a scratch folder, so the committed corpus changes only by hand (`fuzz/README.md`).
# Any crash fails the run after every target has had its turn; the input is kept under
# fuzz/artifacts/<target>/ and printed in base64, to become a unit test where the bug lives.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${FUZZ_SECONDS:-20}

cargo +nightly --version
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "installing cargo-fuzz 0.13 from crates.io"
  cargo install --quiet --locked cargo-fuzz --version "^0.13"
fi
# No sanitizer: every crate of ours forbids unsafe code, and libFuzzer's own checks (panics,
# overflows under debug assertions, timeouts, memory) are what we are after here.
start=$(date +%s)
cargo +nightly fuzz build -s none
echo "fuzz targets built in $(( $(date +%s) - start )) s"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=()
for target in $(cargo +nightly fuzz list); do
  mkdir -p "$scratch/$target" "corpus/$target"
  echo "== fuzz $target (${seconds} s)"
  if ! cargo +nightly fuzz run -s none "$target" "$scratch/$target" "corpus/$target" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      2>"$scratch/$target.log"; then
    tail -40 "$scratch/$target.log"
    for crash in artifacts/"$target"/*; do
      [ -f "$crash" ] && echo "input $crash (base64): $(base64 -w0 "$crash")"
    done
    failed+=("$target")
  else
    grep -E "stat::number_of_executed_units|Done [0-9]+ runs" "$scratch/$target.log" | tail -2
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing found crashes in: ${failed[*]}"
  exit 1
fi
echo "fuzzing: no crash in $(cargo +nightly fuzz list | wc -l) targets, ${seconds} s each"

#!/usr/bin/env bash
# Runs each fuzz target for SECONDS (default 60) from the seed corpus in
# fuzz/corpus/<target>/. Needs a nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz`). New inputs the fuzzer finds stay in a scratch
# corpus; every crashing input is copied to fuzz/regressions/<target>/, where
# the ordinary test suite (crates/pmpo/tests/fuzz_corpus.rs) replays it on
# the stable toolchain until the bug is fixed. Exit status 1 if any target
# crashed.
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -uo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(plan_loader condition template_scanner model_answer)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
status=0
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t" "artifacts/$t"
  echo "== $t: ${secs}s"
  log="$scratch/$t.log"
  cargo +nightly fuzz run "$t" "$scratch/$t" "corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 > "$log" 2>&1
  rc=$?
  grep -E '^(Done [0-9]+ runs|stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)|==[0-9]+== ERROR|SUMMARY)' "$log" || true
  crashes=$(find "artifacts/$t" -type f \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' \) 2>/dev/null)
  if [ -n "$crashes" ]; then
    mkdir -p "regressions/$t"
    cp $crashes "regressions/$t/"
    echo "!! $t: $(echo "$crashes" | wc -l) crashing input(s) kept in fuzz/regressions/$t/"
    status=1
  elif [ $rc -ne 0 ]; then
    echo "!! $t: the fuzzer did not run (exit $rc):"
    tail -20 "$log"
    status=1
  fi
done
exit $status

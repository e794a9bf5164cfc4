#!/usr/bin/env bash
# The cost of the evidence rule: N independent stages, each writing its file
# and checking it in its `validate:` list, plus a `validation_plan` entry per
# stage (so every check asks which stage owns its files and records their
# digests). Prints the median wall time per stage over 5 runs, each in a fresh
# workspace, `--jobs 1`.
#   bench/evidence.sh [N]                 # this checkout's release binary
#   BASE_BIN=/path/to/older/pmpo bench/evidence.sh [N]
#                                          # the same plan with another binary
#                                          # too, alternating, and the difference
set -euo pipefail
source "$(dirname "$0")/common.sh"
n=${1:-1000}
setup
python3 - "$n" "$dir/plan.yaml" <<'PY'
import sys
n, path = int(sys.argv[1]), sys.argv[2]
with open(path, "w") as f:
    f.write("specification:\n  artifact_name: bench\n  artifact_type: code\n  constraints:\n")
    for i in range(n):
        f.write(f"    - {{id: c{i}, description: file {i} is there, severity: blocking}}\n")
    f.write("plan:\n  stages:\n")
    for i in range(n):
        f.write(f"    - id: s{i}\n      with: {{command: [sh, -c, 'echo {i} > out/{i}.txt']}}\n"
                f"      outputs: [out/{i}.txt]\n"
                f"      validate: [{{check: file_exists, with: {{path: out/{i}.txt}}}}]\n")
    f.write("  validation_plan:\n")
    for i in range(n):
        f.write(f"    - {{constraint_id: c{i}, validation_method: file_exists, with: {{path: out/{i}.txt}}}}\n")
PY
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
run_once() { # BIN TAG ROUND -> ms
  local w="$dir/$2-$3"; mkdir -p "$w/out"; cp "$dir/plan.yaml" "$w/"
  local s e; s=$(date +%s%N); "$1" execute -q "$w/plan.yaml" --jobs 1 || true; e=$(date +%s%N)
  echo $(( (e - s) / 1000000 ))
}
: > "$dir/new"; : > "$dir/base"
for r in 1 2 3 4 5; do
  run_once "$bin" new "$r" >> "$dir/new"
  if [ -n "${BASE_BIN:-}" ]; then run_once "$BASE_BIN" base "$r" >> "$dir/base"; fi
done
new=$(median < "$dir/new")
awk -v t="$new" -v n="$n" 'BEGIN {printf "this binary: %d ms for %d stages with 2 checks each (%.3f ms/stage)\n", t, n, t/n}'
if [ -n "${BASE_BIN:-}" ]; then
  base=$(median < "$dir/base")
  awk -v t="$base" -v n="$n" 'BEGIN {printf "BASE_BIN:    %d ms (%.3f ms/stage)\n", t, t/n}'
  awk -v a="$new" -v b="$base" -v n="$n" 'BEGIN {printf "difference:  %+.3f ms/stage (median of 5 alternating runs)\n", (a-b)/n}'
fi

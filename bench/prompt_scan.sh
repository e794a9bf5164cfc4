#!/usr/bin/env bash
# Scanning prompts for `{{ name }}`: `pmpo check` on an `ai` stage whose
# prompt file is SIZE KB (default 480) of one repeated pattern of braces that
# close late or never. Prints the median wall time of 3 runs per pattern and
# per 100 KB, which stays flat when the scan is linear in the text.
#   bench/prompt_scan.sh [SIZE_KB]
set -euo pipefail
source "$(dirname "$0")/common.sh"
kb=${1:-480}
setup
for pattern in 'x {{ ' '{{ a ' '{{ {{ a }}' '{{ a }} {{ ' 'plain text '; do
  w="$dir/ws"; rm -rf "$w"; mkdir -p "$w/prompts"
  python3 - "$pattern" "$kb" "$w/prompts/p.md" <<'PY'
import sys
unit, kb, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
open(path, "w").write(unit * (kb * 1024 // len(unit)))
PY
  cat > "$w/plan.yaml" <<'YAML'
specification: {artifact_name: bench, artifact_type: report}
plan:
  stages:
    - id: draw
      requires_execution: false
      with: {prompt_file: prompts/p.md, vars: {a: x}}
YAML
  times=()
  for _ in 1 2 3; do
    s=$(date +%s%N)
    "$bin" check "$w/plan.yaml" >/dev/null 2>&1 || true
    times+=($(( ($(date +%s%N) - s) / 1000 )))
  done
  med=$(printf '%s\n' "${times[@]}" | sort -n | sed -n 2p)
  printf '%-14s %6d KB  check %8.1f ms  (%.2f ms per 100 KB)\n' "'$pattern'" "$kb" \
    "$(echo "$med / 1000" | bc -l)" "$(echo "$med / 1000 / $kb * 100" | bc -l)"
done

#!/usr/bin/env bash
# The added cost of running a tool in a child process (issue 15, item 2): a
# chain of N tiny `template` stages, then of N tiny `markdown` stages, run
# with the tools in a child process (the default) and in pmpo's own process
# (PMPO_TOOL_ISOLATION=off). Prints the median wall time of 3 runs each and
# the difference per tool call in milliseconds.
#   bench/isolate.sh [N]
set -euo pipefail
source "$(dirname "$0")/common.sh"
n=${1:-200}
setup
for tool in template markdown; do
  w="$dir/$tool"; mkdir -p "$w"
  printf 'Hello {{ name }}\n' > "$w/t.j2"
  printf '# Title\n\nSome *text*.\n' > "$w/in.md"
  python3 - "$n" "$w/plan.yaml" "$tool" <<'PY'
import sys
n, path, tool = int(sys.argv[1]), sys.argv[2], sys.argv[3]
with open(path, "w") as f:
    f.write("specification:\n  artifact_name: bench\n  artifact_type: code\nplan:\n  stages:\n")
    for i in range(n):
        dep = f"\n      depends_on: [s{i-1}]" if i else ""
        if tool == "template":
            w = f"{{template: t.j2, output: out/{i}.txt, vars: {{name: n{i}}}}}"
        else:
            w = f"{{input: in.md, output: out/{i}.html}}"
        f.write(f"    - id: s{i}{dep}\n      tool: {tool}\n      with: {w}\n")
PY
  median() { printf '%s\n' "$@" | sort -n | sed -n 2p; }
  run() {
    local times=()
    for _ in 1 2 3; do
      rm -rf "$w/out" "$w/.state" "$w/logs"
      local s; s=$(date +%s%N)
      env "$@" "$bin" execute "$w/plan.yaml" >/dev/null 2>&1
      times+=($(( ($(date +%s%N) - s) / 1000 )))
    done
    median "${times[@]}"
  }
  child=$(run PMPO_TOOL_ISOLATION=on)
  own=$(run PMPO_TOOL_ISOLATION=off)
  awk -v t="$tool" -v n="$n" -v c="$child" -v o="$own" 'BEGIN {
    printf "%-9s %d calls: child process %.0f ms, in process %.0f ms, added %.2f ms per call\n",
      t, n, c / 1000, o / 1000, (c - o) / 1000 / n }'
done

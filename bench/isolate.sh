#!/usr/bin/env bash
# The added cost of running a tool or a heavy check in a child process
# (issue 15, item 2): a chain of N tiny `template` stages, of N tiny
# `markdown` stages, and of N `run` stages each with one `xml` check, run
# with the tools in a child process (the default) and in pmpo's own process
# (PMPO_TOOL_ISOLATION=off), interleaved. Prints the least and the median
# wall time of RUNS runs each and the difference per tool call in
# milliseconds (the least is the better estimate on a loaded machine).
#   bench/isolate.sh [N] [RUNS]
set -euo pipefail
source "$(dirname "$0")/common.sh"
n=${1:-200}
runs=${2:-5}
setup
for tool in template markdown xml-check; do
  w="$dir/$tool"; mkdir -p "$w"
  printf 'Hello {{ name }}\n' > "$w/t.j2"
  printf '# Title\n\nSome *text*.\n' > "$w/in.md"
  printf '<a><b/></a>\n' > "$w/a.xml"
  python3 - "$n" "$w/plan.yaml" "$tool" <<'PY'
import sys
n, path, tool = int(sys.argv[1]), sys.argv[2], sys.argv[3]
with open(path, "w") as f:
    f.write("specification:\n  artifact_name: bench\n  artifact_type: code\nplan:\n  stages:\n")
    for i in range(n):
        dep = f"\n      depends_on: [s{i-1}]" if i else ""
        if tool == "template":
            w = f"{{template: t.j2, output: out/{i}.txt, vars: {{name: n{i}}}}}"
        elif tool == "markdown":
            w = f"{{input: in.md, output: out/{i}.html}}"
        else:
            # A `run` stage with one heavy check (the check in a child process).
            f.write(f"    - id: s{i}{dep}\n      with: {{command: [true]}}\n"
                    f"      validate: [{{check: xml, with: {{path: a.xml}}}}]\n")
            continue
        f.write(f"    - id: s{i}{dep}\n      tool: {tool}\n      with: {w}\n")
PY
  once() {
    rm -rf "$w/out" "$w/.state" "$w/logs"
    local s; s=$(date +%s%N)
    env "$@" "$bin" execute "$w/plan.yaml" >/dev/null 2>&1
    echo $(( ($(date +%s%N) - s) / 1000 ))
  }
  # Interleaved, so that a burst of load on the shared machine hits both.
  child=(); own=()
  for _ in $(seq "$runs"); do
    child+=($(once PMPO_TOOL_ISOLATION=on ${EXTRA_ENV:-}))
    own+=($(once PMPO_TOOL_ISOLATION=off))
  done
  python3 - "$tool" "$n" "${child[*]}" "${own[*]}" <<'PY'
import statistics, sys
tool, n = sys.argv[1], int(sys.argv[2])
c = [int(x) / 1000 for x in sys.argv[3].split()]
o = [int(x) / 1000 for x in sys.argv[4].split()]
for name, f in (("min", min), ("median", statistics.median)):
    print(f"{tool:9} {n} calls, {name:6} of {len(c)}: child process {f(c):.0f} ms, "
          f"in process {f(o):.0f} ms, added {(f(c) - f(o)) / n:.2f} ms per call")
PY
done

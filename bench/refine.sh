#!/usr/bin/env bash
# One full offline iteration of the logo refinement (Specify, Plan, Execute,
# Reflect, Persist, decide) on examples/brand/logo.svg, N times (default 7) in
# fresh workspaces. Prints the median of each part of `pmpo refine --json`'s
# timings: total, the stages' own work (tools, rasterizing, the browser's
# rendering), the browser's shutdown, and pmpo's own time (target < 50 ms).
set -euo pipefail
source "$(dirname "$0")/common.sh"
n=${1:-7}
setup
for i in $(seq "$n"); do
  ws="$dir/run$i"
  mkdir -p "$ws/brand"
  cp examples/brand/logo.svg "$ws/brand/logo.svg"
  (cd "$ws" && "$bin" refine acme-logo --type logo --input brand/logo.svg --offline --json -q) > "$dir/report$i.json" || true
done
python3 - "$dir" "$n" <<'PY'
import json, statistics, sys
d, n = sys.argv[1], int(sys.argv[2])
reports = [json.load(open(f"{d}/report{i}.json")) for i in range(1, n + 1)]
outcomes = {r["outcome"] for r in reports}
print(f"offline logo refinement, {n} runs, outcome(s): {', '.join(sorted(outcomes))}, iterations: {reports[0]['iteration']}")
for key, label in [("total_ms", "total"), ("stages_ms", "stages' own work"), ("teardown_ms", "browser shutdown"), ("engine_ms", "pmpo's own time")]:
    values = [r["timings"][key] for r in reports]
    print(f"  {label:<18} median {statistics.median(values):7.1f} ms   (min {min(values):.1f}, max {max(values):.1f})")
print("  target: pmpo's own time for one offline iteration < 50 ms")
PY

#!/usr/bin/env bash
# Resume after a crash: a chain of N stages (default 10,000) is killed with
# SIGKILL once half of it has run; the re-run's time from process start to the
# next stage starting is printed (target: under 300 ms for 10,000 stages).
set -euo pipefail
source "$(dirname "$0")/common.sh"
n=${1:-10000}
setup
# Progress is counted in the declared outputs: a write anywhere else (a
# counter file) is refused by the sandbox.
make_plan "$n" "$dir/plan.yaml" chain 'echo {i} > out/{i}.txt'
mkdir -p "$dir/out"
made() { find "$dir/out" -maxdepth 1 -name '*.txt' | wc -l; }
"$bin" execute -q "$dir/plan.yaml" & pid=$!
half=$((n / 2))
while [ "$(made)" -lt "$half" ]; do sleep 0.05; done
kill -9 "$pid"; wait "$pid" 2>/dev/null || true
done_before=$(made)
start=$(date +%s%N)
"$bin" execute -q "$dir/plan.yaml"
python3 - "$dir/logs/executor.jsonl" "$start" "$done_before" "$n" <<'PY'
import json, sys, datetime
path, start_ns, done, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
events = [json.loads(l) for l in open(path)]
resumed = max(i for i, e in enumerate(events) if e["event"] == "EXECUTION_RESUMED")
first = next(e for e in events[resumed:] if e["event"] == "TASK_STARTED")
t = datetime.datetime.fromisoformat(first["timestamp"].replace("Z", "+00:00")).timestamp()
print(f"plan: {n} stages, killed after {done} had run")
print(f"resume: next stage ({first['stage_id']}) started {(t * 1e9 - start_ns) / 1e6:.0f} ms after the process started (target < 300 ms)")
PY

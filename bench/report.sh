#!/usr/bin/env bash
# `pmpo report` of a large run: N stages (default 1,000; the last 5 preview a
# small page each, so the report carries screenshots) are run once, then the
# report is built R times (default 5; median printed) and rendered by
# `pmpo preview` in headless Chromium, whose own timings (page load, settle,
# screenshot) are read from its preview-report.json. Prints the file's size
# (target: under 2 MB) and the render (target: under 2 s).
set -euo pipefail
source "$(dirname "$0")/common.sh"
n=${1:-1000}
runs=${2:-5}
setup
previews=5
make_plan "$((n - previews))" "$dir/plan.yaml" independent 'echo {i} > out/{i}.txt'
mkdir -p "$dir/out" "$dir/pages"
for i in $(seq 1 "$previews"); do
  printf '<!doctype html><html><body style="background:hsl(%d,70%%,85%%)"><h1>Page %d</h1><p>A page of the benchmark.</p></body></html>\n' \
    "$((i * 60))" "$i" > "$dir/pages/p$i.html"
  printf '    - id: preview-%d\n      tool: preview\n      with: {input: pages/p%d.html, id: p%d, viewport: {width: 800, height: 500}}\n      outputs: [dist/previews/p%d]\n' \
    "$i" "$i" "$i" "$i" >> "$dir/plan.yaml"
done
"$bin" execute -q "$dir/plan.yaml" || true
times=()
for _ in $(seq 1 "$runs"); do
  start=$(date +%s%N)
  "$bin" report -w "$dir" --json > "$dir/report.json"
  times+=($(( ($(date +%s%N) - start) / 1000000 )))
done
rel=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["relative_path"])' "$dir/report.json")
# Rendering (the target) is timed without the accessibility audit, which is
# timed on its own by a second preview that runs it.
start=$(date +%s%N)
"$bin" preview -w "$dir" "$dir/$rel" --id report --viewport 1280x900 --no-accessibility --json > "$dir/preview.json" || true
render_ms=$(( ($(date +%s%N) - start) / 1000000 ))
"$bin" preview -w "$dir" "$dir/$rel" --id report-audited --viewport 1280x900 --json > "$dir/audited.json" || true
python3 - "$dir/report.json" "$dir/preview.json" "$render_ms" "$n" "$dir/audited.json" "${times[@]}" <<'PY'
import json, statistics, sys
report = json.load(open(sys.argv[1]))
preview = json.load(open(sys.argv[2]))["report"]
render_ms, n = int(sys.argv[3]), int(sys.argv[4])
audited = json.load(open(sys.argv[5]))["report"]
times = [int(t) for t in sys.argv[6:]]
t = preview.get("timings", {})
c = report["counts"]
print(f"run: {n} stages ({c['previews']} previews, {c['files']} ledger entries)")
print(f"pmpo report: median {statistics.median(times):.0f} ms over {len(times)} builds ({', '.join(map(str, times))} ms)")
print(f"report file: {report['size']} bytes ({report['size'] / 2**20:.2f} MB, target < 2 MB), {report['images']} pictures inline ({report['image_bytes']} bytes)")
print(f"render with pmpo preview: {preview['status']}, load {t.get('load_ms', 0):.0f} ms, settle {t.get('settle_ms', 0):.0f} ms, "
      f"screenshot {t.get('screenshot_ms', 0):.0f} ms, preview total {t.get('total_ms', 0):.0f} ms; whole command {render_ms} ms (target < 2 s)")
a = audited.get("accessibility") or {}
print(f"accessibility audit of the report (axe-core, a second preview): {a.get('status')}, {a.get('duration_ms', 0):.0f} ms, "
      f"violations {sum((a.get('counts') or {}).values())}; that preview's total {audited.get('timings', {}).get('total_ms', 0):.0f} ms")
print(f"browser: console errors {preview['counts']['console_errors']}, failed requests {preview['counts']['failed_requests']}, blank {preview.get('image', {}).get('blank')}")
PY

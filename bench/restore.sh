#!/usr/bin/env bash
# Memory of `pmpo restore` against the size of the file it brings back: a
# stage overwrites a file of SIZE MiB (default 1024), then `pmpo restore`
# brings it back; prints the restore's wall time and peak memory
# (`/usr/bin/time -v`), which should stay flat whatever the size.
set -euo pipefail
source "$(dirname "$0")/common.sh"
mib=${1:-1024}
setup
w="$dir/ws"; mkdir -p "$w"
head -c "$((mib * 1024 * 1024))" /dev/urandom > "$w/data.bin"
cat > "$w/plan.yaml" <<'YAML'
specification: {artifact_name: bench, artifact_type: code}
plan:
  stages:
    - id: overwrite
      with: {command: [sh, -c, 'printf small > data.bin']}
      outputs: [data.bin]
YAML
"$bin" execute -q "$w/plan.yaml"
/usr/bin/time -v "$bin" restore data.bin -w "$w" 2> "$dir/time.txt" >/dev/null
awk -F': ' '/Maximum resident set size/ {printf "peak memory of pmpo restore: %.1f MiB\n", $2/1024}
            /Elapsed \(wall clock\)/ {print "wall time: " $2}' "$dir/time.txt"
size=$(stat -c %s "$w/data.bin")
echo "restored file: $((size / 1024 / 1024)) MiB"

#!/usr/bin/env bash
# 1,000 independent trivial stages with --jobs 1 and --jobs 2, each in a fresh
# workspace; prints the median wall time of 5 runs each and the ratio
# (target: --jobs 2 takes at most 60% of --jobs 1).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}
cargo build --release -q -p pmpo
bin=$PWD/target/release/pmpo
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
python3 - "$n" "$dir/plan.yaml" <<'PY'
import sys
n, path = int(sys.argv[1]), sys.argv[2]
with open(path, "w") as f:
    f.write("specification:\n  artifact_name: parallel\n  artifact_type: code\nplan:\n  stages:\n")
    for i in range(n):
        f.write(f"    - id: s{i}\n      with: {{command: [sh, -c, 'echo {i} > out/{i}.txt']}}\n      outputs: [out/{i}.txt]\n")
PY
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A t
for j in 1 2; do
  for r in 1 2 3 4 5; do
    w="$dir/w$j-$r"; mkdir -p "$w/out"; cp "$dir/plan.yaml" "$w/"
    s=$(date +%s%N); "$bin" execute -q "$w/plan.yaml" --jobs "$j"; e=$(date +%s%N)
    echo $(( (e - s) / 1000000 ))
  done | median > "$dir/t$j"
  t[$j]=$(cat "$dir/t$j")
  echo "--jobs $j: ${t[$j]} ms (median of 5, $n independent stages)"
done
awk -v a="${t[2]}" -v b="${t[1]}" 'BEGIN {printf "ratio --jobs 2 / --jobs 1: %.0f%% (target <= 60%%)\n", 100*a/b}'

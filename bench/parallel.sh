#!/usr/bin/env bash
# 1,000 independent trivial stages with --jobs 1 and --jobs 2, each in a fresh
# workspace; prints the median wall time of 5 runs each and the ratio
# (target: --jobs 2 takes at most 60% of --jobs 1).
set -euo pipefail
source "$(dirname "$0")/common.sh"
n=${1:-1000}
setup
make_plan "$n" "$dir/plan.yaml" independent 'echo {i} > out/{i}.txt'
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

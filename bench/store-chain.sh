#!/usr/bin/env bash
# The same chain plan on the two execution stores, side by side: the time of
# `pmpo execute` on N stages in a chain (default 100), with SQLite
# (.state/pmpo.db) and with PostgreSQL (a new database on the server named by
# PMPO_BENCH_PG, else PMPO_TEST_PG; created, used, dropped). Each stage
# completion is committed before the next stage starts, so the figure is
# mostly N commits. Median of 5 alternating runs, each in a new workspace.
#   bash bench/store-chain.sh [N]
set -euo pipefail
source "$(dirname "$0")/common.sh"
n=${1:-100}
base=${PMPO_BENCH_PG:-${PMPO_TEST_PG:-}}
[ -n "$base" ] || { echo "set PMPO_BENCH_PG (or PMPO_TEST_PG) to a postgres:// URL of a server where you may create databases" >&2; exit 2; }
psql=$(command -v psql || ls /usr/lib/postgresql/*/bin/psql | tail -1)
setup
make_plan "$n" "$dir/plan.yaml" chain 'echo {i} > out/{i}.txt'
db="pmpo_bench_chain_$$"
"$psql" -qAt "$base" -c "CREATE DATABASE $db"
trap '"$psql" -qAt "$base" -c "DROP DATABASE IF EXISTS $db" >/dev/null; rm -rf "$dir"' EXIT
url=$(python3 -c 'import sys; b, d = sys.argv[1:]; h, _, q = b.partition("?"); print(h.rsplit("/", 1)[0] + "/" + d + ("?" + q if q else ""))' "$base" "$db")
one() { # store -> milliseconds of one execute in a new workspace
  local ws="$dir/ws-$RANDOM$RANDOM"
  mkdir -p "$ws/out"; cp "$dir/plan.yaml" "$ws/"
  if [ "$1" = postgres ]; then
    # One database serves one workspace: start each run on an empty one.
    "$psql" -qAt "$base" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
  fi
  local s e; s=$(date +%s%N)
  PMPO_STORE=$([ "$1" = postgres ] && echo "$url" || echo sqlite) "$bin" execute -q -w "$ws" "$ws/plan.yaml" >/dev/null
  e=$(date +%s%N)
  echo $(( (e - s) / 1000000 ))
}
sqlite=(); pg=()
for _ in 1 2 3 4 5; do
  sqlite+=("$(one sqlite)"); pg+=("$(one postgres)")
done
median() { printf '%s\n' "$@" | sort -n | sed -n 3p; }
ms=$(median "${sqlite[@]}"); mp=$(median "${pg[@]}")
echo "chain of $n stages, pmpo execute, median of 5 (alternating):"
echo "  sqlite:     $ms ms   (${sqlite[*]})"
echo "  postgresql: $mp ms   (${pg[*]})"
awk -v a="$ms" -v b="$mp" -v n="$n" 'BEGIN { printf "  postgresql / sqlite: %.2fx; %.2f ms more per stage\n", b / a, (b - a) / n }'

#!/usr/bin/env bash
# Workers: 1,000 independent stages of `sleep 0.05`, run by 1, 2 and 4
# `pmpo worker`s through the PostgreSQL queue (`pmpo execute --workers`).
# Prints the wall time of each run, the speedup over one worker, and the
# claim-to-start latency per stage (median and p95 of claim_to_start_ms: from
# the worker's claim to the tool's start).
#
#   bash bench/workers.sh [N]            (default N=1000)
#
# PostgreSQL: PMPO_BENCH_PG (a server URL whose user may create databases), or
# else a throwaway cluster started with scripts/pg-cluster.sh and stopped at
# the end. Builds the binary as bench/common.sh says (PMPO_BENCH_PROFILE=release
# for the everyday release build).
set -euo pipefail
source "$(dirname "$0")/common.sh"
n=${1:-1000}
setup
psql_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)/psql
cluster=""
if [ -n "${PMPO_BENCH_PG:-}" ]; then
  base=$PMPO_BENCH_PG
else
  cluster=$(mktemp -d)
  base=$(bash scripts/pg-cluster.sh start "$cluster")
fi
workers_pids=()
cleanup() {
  for p in "${workers_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -z "$cluster" ] || bash scripts/pg-cluster.sh stop "$cluster" >/dev/null 2>&1 || true
  rm -rf "$dir" "$cluster"
}
trap cleanup EXIT
db_url() { # base URL with its database replaced
  python3 -c 'import sys; b,n=sys.argv[1:]; h,_,q=b.partition("?"); r=h.rsplit("/",1)[0]; print(f"{r}/{n}"+(f"?{q}" if q else ""))' "$1" "$2"
}

echo "workers bench: $n independent stages of sleep 0.05 on $(nproc) cores"
one=""
for w in 1 2 4; do
  name="pmpo_bench_workers_${w}_$$"
  PGOPTIONS="-c client_min_messages=warning" "$psql_bin" -q "$base" -c "DROP DATABASE IF EXISTS $name" -c "CREATE DATABASE $name" >/dev/null
  url=$(db_url "$base" "$name")
  ws="$dir/ws$w"
  mkdir -p "$ws/out"
  make_plan "$n" "$ws/plan.yaml" independent 'sleep 0.05; echo {i} > out/{i}.txt'
  workers_pids=()
  for _ in $(seq "$w"); do
    PMPO_STORE=$url "$bin" worker -w "$ws" --json >/dev/null 2>"$ws/worker.err" &
    workers_pids+=($!)
  done
  s=$(date +%s%N)
  PMPO_STORE=$url "$bin" execute "$ws/plan.yaml" --workers -q
  e=$(date +%s%N)
  for p in "${workers_pids[@]}"; do kill "$p"; done
  wait "${workers_pids[@]}" 2>/dev/null || true
  workers_pids=()
  secs=$(awk -v a="$s" -v b="$e" 'BEGIN{printf "%.2f", (b-a)/1e9}')
  [ -n "$one" ] || one=$secs
  lat=$("$psql_bin" -qtA "$url" -c "SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY claim_to_start_ms)::numeric, 2) || ' ms median, ' || round(percentile_cont(0.95) WITHIN GROUP (ORDER BY claim_to_start_ms)::numeric, 2) || ' ms p95' FROM pmpo_jobs")
  per=$("$psql_bin" -qtA "$url" -c "SELECT string_agg(c::text, '/' ORDER BY c DESC) FROM (SELECT count(*) c FROM pmpo_jobs GROUP BY worker) x")
  printf '%d worker(s): %7.2f s  speedup %.2fx  claim-to-start %s  stages per worker %s\n' \
    "$w" "$secs" "$(awk -v a="$one" -v b="$secs" 'BEGIN{print a/b}')" "$lat" "$per"
  "$psql_bin" -q "$base" -c "DROP DATABASE $name" >/dev/null
done
echo "target: 4 workers at least 3x faster than 1; claim-to-start under 5 ms"

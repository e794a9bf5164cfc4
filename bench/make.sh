#!/usr/bin/env bash
# pmpo beside GNU make: the same N trivial stages (default 1,000, each
# `sh -c 'echo i > out/i.txt'`) as a chain, as independent stages with two
# jobs (`--jobs 2` against `make -j2`) and as a no-op re-run of the chain,
# for make, `pmpo execute --no-sandbox` and `pmpo execute` (sandbox on).
# Runs them alternately, R rounds (default 5) after a warm-up, and prints the
# medians of wall and CPU time (user + sys of the whole process tree), the
# ratios pmpo/make, pmpo's peak memory, and the machine's load.
#
#   bash bench/make.sh [N] [R]
#   bash bench/make.sh --strace [N]   (default 500: system calls per stage, by
#                                      process, of a chain under strace -ff)
#
# Uses the everyday `release` binary (the one `cargo run --release` builds),
# in $CARGO_TARGET_DIR or target/. Installs make with apt-get if it is missing.
# The workloads are written by bench/make.py into a temporary directory
# (TMPDIR), removed at the end; timings are whole processes, so on a busy
# machine trust the ratios more than the seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
strace=
if [ "${1:-}" = --strace ]; then strace=1; shift; fi
n=${1:-1000}
rounds=${2:-5}
if ! command -v make >/dev/null; then
  echo "make is missing: installing it with apt-get" >&2
  apt-get install -y -q make >/dev/null
fi
cargo build --release -q -p pmpo
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/pmpo
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
echo "$(make --version | head -1); pmpo $("$bin" --version | awk '{print $NF}') (release);" \
  "scratch on $(df -T "$dir" | awk 'NR == 2 {print $2}'); load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -n "$strace" ]; then
  python3 bench/make.py --strace "$bin" "${1:-500}" "$dir"
  exit
fi
python3 bench/make.py "$bin" "$n" "$rounds" "$dir"
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)"

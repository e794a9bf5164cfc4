#!/usr/bin/env bash
# Build times of the pmpo binary, per cargo profile: a clean build, then an
# incremental one after a one-line change of code in pmpo-engine (a public
# function appended to crates/pmpo-engine/src/lib.rs, so the crate and every
# crate above it are compiled again; removed afterwards).
#
#   bash bench/build_time.sh [PROFILE ...]     (default: release dist)
#
# Each profile builds in its own target directory under $BENCH_TARGET
# (default: a temporary directory, removed at the end), so nothing is shared
# between profiles and the repository's own target/ is left alone. Prints wall
# seconds and CPU seconds (user+sys): on a busy machine the wall figure grows,
# the CPU figure much less, so compare profiles by both.
set -euo pipefail
cd "$(dirname "$0")/.."
profiles=("$@")
[ ${#profiles[@]} -gt 0 ] || profiles=(release dist)
root=${BENCH_TARGET:-$(mktemp -d)}
[ -n "${BENCH_TARGET:-}" ] || trap 'rm -rf "$root"' EXIT
lib=crates/pmpo-engine/src/lib.rs
cp "$lib" "$root/lib.rs.orig"
restore() { cp "$root/lib.rs.orig" "$lib"; }
trap 'restore; [ -n "${BENCH_TARGET:-}" ] || rm -rf "$root"' EXIT

timed() { # label, command...
  local out="$root/time.txt"
  /usr/bin/time -f '%e %U %S' -o "$out" "${@:2}" >/dev/null 2>&1
  read -r wall user sys < "$out"
  printf '%-28s wall %7.1f s   cpu %7.1f s\n' "$1" "$wall" "$(awk -v u="$user" -v s="$sys" 'BEGIN{print u+s}')"
}

echo "pmpo build times on $(nproc) cores ($(rustc --version))"
for p in "${profiles[@]}"; do
  export CARGO_TARGET_DIR="$root/$p"
  cargo fetch -q
  timed "$p: clean build" cargo build --locked --profile "$p" -p pmpo
  echo "#[doc(hidden)] pub fn build_time_bench() -> u64 { $(date +%s%N) }" >> "$lib"
  timed "$p: one line in pmpo-engine" cargo build --locked --profile "$p" -p pmpo
  restore
done

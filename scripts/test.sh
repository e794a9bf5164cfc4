#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need, then
# runs format and lint checks and every test. Used by CI (.ci/run) as is.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif need sudo; then sudo "$@"; else "$@"; fi; }

# Tools the tests run as stages and checks: sh, python3, node (syntax and import
# checks), pgrep (procps). The preview tests render real pages in Chromium; text
# needs a font.
missing=()
need python3 || missing+=(python3)
need node || missing+=(nodejs)
need pgrep || missing+=(procps)
[ -x /usr/bin/chromium ] || need chromium || missing+=(chromium)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
need npm || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "test.sh: installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

# esbuild compiles .tsx previews: a pinned dev dependency in tools/ (lockfile).
if [ ! -x tools/node_modules/.bin/esbuild ]; then
  echo "test.sh: installing esbuild (npm ci --prefix tools)"
  npm ci --prefix tools --no-audit --no-fund
fi
# Browser tests must not pass by skipping here.
export PMPO_REQUIRE_BROWSER=1

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked

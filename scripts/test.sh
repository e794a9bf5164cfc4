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
# The MCP client tests' virtual environment needs venv and pip.
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
need node || missing+=(nodejs)
need pgrep || missing+=(procps)
[ -x /usr/bin/chromium ] || need chromium || missing+=(chromium)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
need npm || missing+=(npm)
# The PostgreSQL store and the workers are tested against a real server.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  echo "test.sh: installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

# esbuild compiles .tsx previews, and the React-component tests use React:
# pinned dev dependencies in tools/ (lockfile).
if [ ! -x tools/node_modules/.bin/esbuild ] || [ ! -f tools/node_modules/react-dom/package.json ]; then
  echo "test.sh: installing esbuild and React (npm ci --prefix tools)"
  npm ci --prefix tools --no-audit --no-fund
fi
# The MCP server is tested with the official Python SDK (a real client), in a
# virtual environment under target/ (pinned in tests/mcp/requirements.txt);
# crates/pmpo/tests/mcp.rs runs tests/mcp/test_mcp.py with it.
venv=target/.venv-mcp
if ! "$venv/bin/python" -m pip freeze 2>/dev/null | grep -qxF -f <(grep -E '^[^#[:space:]]' tests/mcp/requirements.txt); then
  echo "test.sh: installing the MCP Python SDK into $venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r tests/mcp/requirements.txt
fi
export PMPO_MCP_PYTHON="$PWD/$venv/bin/python"
# Browser tests must not pass by skipping here.
export PMPO_REQUIRE_BROWSER=1

# A throwaway PostgreSQL cluster for the store and worker tests (initdb and
# pg_ctl as an unprivileged user, in a temporary directory), stopped at the end.
pgdir=$(mktemp -d "${TMPDIR:-/tmp}/pmpo-test-pg.XXXXXX")
trap 'bash scripts/pg-cluster.sh stop "$pgdir"; rm -rf "$pgdir"' EXIT
PMPO_TEST_PG=$(bash scripts/pg-cluster.sh start "$pgdir")
export PMPO_TEST_PG
# PostgreSQL tests must not pass by skipping here.
export PMPO_REQUIRE_PG=1

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked

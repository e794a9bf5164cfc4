#!/usr/bin/env bash
# The sandbox's cost per stage: building a stage's policy and Landlock
# ruleset, entering it in the child (timed inside a forked child), and the
# detection fallback (two metadata snapshots of the workspace and their diff)
# at 1,000, 10,000 and 50,000 files. Runs `cargo bench -p pmpo-sandbox`.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -q -p pmpo-sandbox --bench sandbox

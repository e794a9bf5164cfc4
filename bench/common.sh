# Shared by the benchmark scripts: build the shipped binary (the `dist`
# profile, so figures stay those of what users run; PMPO_BENCH_PROFILE=release
# for the everyday build the README's commands use, quicker to build), make a
# scratch directory, and write a plan of N trivial stages into it.
#   setup                       -> sets $bin and $dir (removed on exit)
#   make_plan N FILE MODE CMD   -> MODE chain|independent; CMD may use {i}
setup() {
  cd "$(dirname "$0")/.."
  local profile=${PMPO_BENCH_PROFILE:-dist}
  cargo build --profile "$profile" -q -p pmpo
  bin=${CARGO_TARGET_DIR:-$PWD/target}/$profile/pmpo
  dir=$(mktemp -d)
  trap 'rm -rf "$dir"' EXIT
}

make_plan() {
  python3 - "$@" <<'PY'
import sys
n, path, mode, cmd = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
with open(path, "w") as f:
    f.write("specification:\n  artifact_name: bench\n  artifact_type: code\nplan:\n  stages:\n")
    for i in range(n):
        dep = f"\n      depends_on: [s{i-1}]" if i and mode == "chain" else ""
        c = cmd.replace("{i}", str(i))
        f.write(f"    - id: s{i}{dep}\n      with: {{command: [sh, -c, '{c}']}}\n      outputs: [out/{i}.txt]\n")
PY
}

#!/usr/bin/env python3
"""pmpo beside GNU make: the generator and the timer behind bench/make.sh.

    python3 bench/make.py PMPO_BIN N ROUNDS SCRATCH_DIR
    python3 bench/make.py --strace PMPO_BIN N SCRATCH_DIR

Writes, for N stages each `sh -c 'echo i > out/i.txt'`, a pmpo plan and a
Makefile of the same shape (a chain, each stage after the one before, and N
independent stages), then times three workloads for make, pmpo --no-sandbox
and pmpo with its sandbox on:

  chain        N chained stages in a fresh directory (pmpo's default --jobs,
               make's default of one job: a chain runs one stage at a time);
  independent  N independent stages, `--jobs 2` against `make -j2`;
  no-op        the chain run again where it has already run (all cached for
               pmpo, all up to date for make).

One warm-up run of each, then ROUNDS rounds; in each round the runners take
turns, in an order that rotates from round to round. Every run is a whole
process: wall time from spawn to reaping, CPU time (user + sys) of the process
and of every descendant it reaped (wait4's rusage), and peak resident memory
(/usr/bin/time's %M: the largest single process of the tree, pmpo itself for
pmpo). The scratch
directories are kept until the end, so no run creates files right after
thousands were deleted (slower on ext4, for pmpo and make alike).

With --strace, each runner runs an N-stage chain once under `strace -ff`,
and the system calls are printed per stage, by process: the runner's main
thread, the threads it starts, and the stages' processes (from the spawn, so
what happens between fork and exec counts with the stage).
"""
import os
import re
import statistics
import subprocess
import sys
import time

RUNNERS = ("make", "pmpo --no-sandbox", "pmpo (sandbox)")
WORKLOADS = ("chain", "independent", "no-op")


def write_plan(path, n, chain):
    with open(path, "w") as f:
        f.write("specification:\n  artifact_name: bench\n  artifact_type: code\n")
        f.write("plan:\n  stages:\n")
        for i in range(n):
            dep = f"\n      depends_on: [s{i - 1}]" if i and chain else ""
            f.write(f"    - id: s{i}{dep}\n"
                    f"      with: {{command: [sh, -c, 'echo {i} > out/{i}.txt']}}\n"
                    f"      outputs: [out/{i}.txt]\n")


def write_makefile(path, n, chain):
    with open(path, "w") as f:
        goals = f"out/{n - 1}.txt" if chain else " ".join(f"out/{i}.txt" for i in range(n))
        f.write(f".PHONY: all\nall: {goals}\n")
        for i in range(n):
            dep = f" out/{i - 1}.txt" if i and chain else ""
            f.write(f"out/{i}.txt:{dep}\n\tsh -c 'echo {i} > out/{i}.txt'\n")


def workspace(root, name, runner, n, chain):
    ws = os.path.join(root, name)
    os.makedirs(os.path.join(ws, "out"))
    if runner == "make":
        write_makefile(os.path.join(ws, "Makefile"), n, chain)
    else:
        write_plan(os.path.join(ws, "plan.yaml"), n, chain)
    return ws


def argv(runner, workload, pmpo):
    if runner == "make":
        return ["make", "-s"] + (["-j2"] if workload == "independent" else [])
    a = [pmpo, "execute", "-q", "plan.yaml"]
    if workload == "independent":
        a += ["--jobs", "2"]
    if runner == "pmpo --no-sandbox":
        a.append("--no-sandbox")
    return a


def run(cmd, cwd, rss_file):
    """Wall seconds, CPU seconds of the tree, peak RSS in KiB.

    The command runs under /usr/bin/time, for the peak memory only: a child
    forked from this Python process would count Python's own memory in its
    peak (the kernel keeps the largest of the image it replaced by exec).
    The wrapper costs both runners the same (under a millisecond)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", rss_file] + cmd,
                         cwd=cwd, stdout=subprocess.DEVNULL)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} in {cwd}: exit {p.returncode}")
    with open(rss_file) as f:
        rss = int(f.read().split()[-1])
    return wall, ru.ru_utime + ru.ru_stime, rss


def check_outputs(ws, n):
    for i in (0, n // 2, n - 1):
        with open(os.path.join(ws, "out", f"{i}.txt")) as f:
            if f.read().strip() != str(i):
                sys.exit(f"{ws}: out/{i}.txt is wrong")


class Bench:
    def __init__(self, pmpo, n, root):
        self.pmpo, self.n, self.root = pmpo, n, root
        self.count = 0
        self.done = {}  # runner -> a workspace where the chain has run
        self.samples = {(w, r): [] for w in WORKLOADS for r in RUNNERS}
        self.loads = []

    def once(self, workload, runner, keep):
        if workload == "no-op":
            ws = self.done[runner]
        else:
            self.count += 1
            ws = workspace(self.root, f"w{self.count}", runner, self.n, workload == "chain")
        self.loads.append(os.getloadavg()[0])
        sample = run(argv(runner, workload, self.pmpo), ws, os.path.join(self.root, "rss"))
        check_outputs(ws, self.n)
        if workload == "chain":
            self.done.setdefault(runner, ws)
        if keep:
            self.samples[(workload, runner)].append(sample)

    def rounds(self, count):
        for workload in WORKLOADS:
            for runner in RUNNERS:
                self.once(workload, runner, keep=False)
        for k in range(count):
            order = RUNNERS[k % 3:] + RUNNERS[:k % 3]
            for workload in WORKLOADS:
                for runner in order:
                    self.once(workload, runner, keep=True)
            print(f"  round {k + 1}/{count} done, load {os.getloadavg()[0]:.2f}",
                  file=sys.stderr)


def ms(s):
    return f"{s * 1000:.0f} ms" if s < 10 else f"{s:.2f} s"


def report(b, rounds):
    print(f"\npmpo beside GNU make: {b.n} stages of sh -c 'echo i > out/i.txt', "
          f"median of {rounds} alternating runs after a warm-up")
    print(f"machine: {os.cpu_count()} cores, 1-minute load {min(b.loads):.2f} to "
          f"{max(b.loads):.2f} during the runs (median {statistics.median(b.loads):.2f})")
    head = f"{'workload':<13}{'runner':<19}{'wall':>9}{'x make':>8}{'cpu':>9}{'x make':>8}" \
           f"{'+/stage':>10}{'peak RSS':>10}"
    print(head)
    for w in WORKLOADS:
        base = None
        for r in RUNNERS:
            s = b.samples[(w, r)]
            wall = statistics.median(x[0] for x in s)
            cpu = statistics.median(x[1] for x in s)
            rss = max(x[2] for x in s) / 1024
            if base is None:
                base = (wall, cpu)
            extra = (wall - base[0]) / b.n * 1000
            print(f"{w:<13}{r:<19}{ms(wall):>9}{wall / base[0]:>8.2f}{ms(cpu):>9}"
                  f"{cpu / base[1]:>8.2f}{extra:>8.2f}ms{rss:>7.1f} MB")
    print("(x make: ratio of medians; +/stage: wall time over make's, per stage;"
          " peak RSS: largest process of the tree, the worst run)")
    for w in WORKLOADS[:2]:
        walls = [statistics.median(x[0] for x in b.samples[(w, r)]) for r in RUNNERS[1:]]
        print(f"sandbox cost, {w}: {(walls[1] - walls[0]) / b.n * 1000:.2f} ms per stage (wall)")


def count_calls(trace_dir, runner_exe):
    """System calls per process kind, from `strace -ff -o DIR/t` files."""
    calls = {}
    for name in os.listdir(trace_dir):
        with open(os.path.join(trace_dir, name), errors="replace") as f:
            lines = f.read().splitlines()
        execs = [re.search(r'^execve\("([^"]+)"', l) for l in lines if " = 0" in l]
        exe = next((m.group(1) for m in execs if m), None)
        kind = ("the runner" if exe == runner_exe else
                "the runner's threads" if exe is None else "the stage's process")
        c = calls.setdefault(kind, {})
        for line in lines:
            m = re.match(r"(\w+)\(", line)
            if m:
                k = c.setdefault(m.group(1), [0, 0])
                k[0] += 1
                k[1] += bool(re.search(r"= -1 E", line))
    return calls


def profile(pmpo, n, root):
    """strace -ff of an N-stage chain under make and pmpo: calls per stage."""
    pmpo = os.path.abspath(pmpo)
    make = subprocess.run(["sh", "-c", "command -v make"], capture_output=True,
                          text=True, check=True).stdout.strip()
    for runner in RUNNERS:
        ws = workspace(root, "p-" + runner.split()[-1].strip("()-"), runner, n, True)
        trace = os.path.join(ws, "..", os.path.basename(ws) + "-trace")
        os.makedirs(trace)
        cmd = [make if runner == "make" else pmpo] + argv(runner, "chain", pmpo)[1:]
        subprocess.run(["strace", "-ff", "-o", os.path.join(trace, "t")] + cmd,
                       cwd=ws, check=True, stdout=subprocess.DEVNULL)
        print(f"\n{runner}: system calls per stage ({n}-stage chain)")
        for kind, c in sorted(count_calls(trace, cmd[0]).items()):
            total = sum(k[0] for k in c.values()) / n
            top = sorted(c.items(), key=lambda kv: -kv[1][0])[:12]
            print(f"  {kind}: {total:.0f}")
            print("    " + ", ".join(
                f"{name} {k[0] / n:.1f}" + (f" ({k[1] / n:.1f} failed)" if k[1] else "")
                for name, k in top))


def main():
    if sys.argv[1] == "--strace":
        profile(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return
    pmpo, n, rounds, root = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    b = Bench(pmpo, n, root)
    b.rounds(rounds)
    report(b, rounds)


if __name__ == "__main__":
    main()

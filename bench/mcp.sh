#!/usr/bin/env bash
# The MCP server's cost: a tool call's overhead beyond the operation itself,
# and the server's idle memory.
#
# Method. `pmpo mcp -w DIR` is started with a named artifact in DIR; a small
# client written here (plain JSON-RPC lines over the server's stdin/stdout,
# no SDK, so the client's own cost stays small) initializes the session and
# lists the tools, then reads the server's VmRSS: its idle memory (target:
# under 30 MB). Then it calls `artifact_status` N times (default 500), one
# at a time. Each result carries `_meta["pmpo/duration_ms"]`: the time the
# server spent in the operation itself (loading the artifact's state and its
# pending question). A call's overhead is its round trip as the client sees
# it minus that time: JSON-RPC framing, parsing, routing, argument checks,
# the response's encoding and the pipes, both ways. The median is printed
# (target: under 5 ms), with the operation's own median, and, for scale, the
# median of `ping` (the protocol with no operation at all) and of a whole
# `pmpo status NAME --json` process.
set -euo pipefail
source "$(dirname "$0")/common.sh"
n=${1:-500}
setup
"$bin" init bench-logo --type logo -w "$dir" > /dev/null
python3 - "$bin" "$dir" "$n" <<'PY'
import json, statistics, subprocess, sys, time

bin, ws, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
server = subprocess.Popen([bin, "mcp", "-w", ws], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
next_id = 0

def send(method, params=None, notify=False):
    global next_id
    msg = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        msg["params"] = params
    if not notify:
        next_id += 1
        msg["id"] = next_id
    server.stdin.write((json.dumps(msg) + "\n").encode())
    server.stdin.flush()
    if notify:
        return None
    while True:
        reply = json.loads(server.stdout.readline())
        if reply.get("id") == next_id:
            if "error" in reply:
                sys.exit(f"{method}: {reply['error']}")
            return reply["result"]

send("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": {"name": "bench", "version": "1"}})
send("notifications/initialized", notify=True)
tools = send("tools/list")["tools"]
time.sleep(0.2)
rss_kb = next(int(l.split()[1]) for l in open(f"/proc/{server.pid}/status") if l.startswith("VmRSS:"))

overhead, operation, round_trip, ping = [], [], [], []
for _ in range(n):
    t = time.perf_counter()
    r = send("tools/call", {"name": "artifact_status", "arguments": {"name": "bench-logo"}})
    rt = (time.perf_counter() - t) * 1000
    if r.get("isError"):
        sys.exit(f"artifact_status failed: {r['content']}")
    op = r["_meta"]["pmpo/duration_ms"]
    round_trip.append(rt); operation.append(op); overhead.append(rt - op)
for _ in range(n):
    t = time.perf_counter()
    send("ping")
    ping.append((time.perf_counter() - t) * 1000)
server.stdin.close()
server.wait(timeout=30)

cli = []
for _ in range(min(n, 50)):
    t = time.perf_counter()
    subprocess.run([bin, "status", "bench-logo", "--json", "-w", ws], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cli.append((time.perf_counter() - t) * 1000)

med = statistics.median
print(f"server: {len(tools)} tools; idle memory after initialize + tools/list: VmRSS {rss_kb / 1024:.1f} MB (target < 30 MB)")
print(f"artifact_status x{n}: overhead beyond the operation median {med(overhead):.3f} ms, "
      f"p90 {statistics.quantiles(overhead, n=10)[-1]:.3f} ms (target < 5 ms)")
print(f"  the operation itself: median {med(operation):.3f} ms; the whole round trip: median {med(round_trip):.3f} ms")
print(f"  for scale: ping round trip median {med(ping):.3f} ms; `pmpo status NAME --json` process median {med(cli):.1f} ms")
PY

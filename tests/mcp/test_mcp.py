"""`pmpo mcp` driven by a real MCP client: the official Python SDK (`mcp`).

Each test starts `pmpo mcp -w TMPDIR` through the SDK's stdio client and
plays an agent host: it refines a logo answering the pending questions (and,
in another test, through a sampling callback), checks the preview's image,
tries to bypass verification, disconnects mid-run, and sends bad arguments.

Run: PMPO_BIN=target/debug/pmpo python -m unittest tests/mcp/test_mcp.py
(crates/pmpo/tests/mcp.rs runs it with the venv scripts/test.sh makes).
"""

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import time
import unittest
from pathlib import Path

from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client

REPO = Path(__file__).resolve().parents[2]
PMPO = os.environ.get("PMPO_BIN") or str(REPO / "target" / "debug" / "pmpo")
LOGO = REPO / "examples" / "brand" / "logo.svg"
# How long one whole call may take before the test calls it a hang.
CALL_LIMIT = 240


def make_workspace(test):
    d = tempfile.mkdtemp(prefix="pmpo-mcp-")
    test.addCleanup(shutil.rmtree, d, True)
    shutil.copy(LOGO, Path(d) / "logo.svg")
    test.ws = Path(d)
    return Path(d)


@contextlib.asynccontextmanager
async def session(ws, sampling=None, pidfile=None):
    """A client session with `pmpo mcp -w WS` (its pid written to pidfile)."""
    if pidfile is None:
        params = StdioServerParameters(command=PMPO, args=["mcp", "-w", str(ws)])
    else:
        script = 'echo $$ > "$1"; shift; exec "$@"'
        params = StdioServerParameters(
            command="sh", args=["-c", script, "sh", str(pidfile), PMPO, "mcp", "-w", str(ws)]
        )
    with open(os.devnull, "w") as quiet:
        async with stdio_client(params, errlog=quiet) as (read, write):
            async with ClientSession(read, write, sampling_callback=sampling) as s:
                await s.initialize()
                yield s


async def call(s, tool, args, **kw):
    return await asyncio.wait_for(s.call_tool(tool, args, **kw), CALL_LIMIT)


def text_of(result):
    return "\n".join(c.text for c in result.content if c.type == "text")


def baseline_stages(prompt):
    m = re.search(r"\(stages as JSON\):\n(\[.*\])\n", prompt)
    assert m, "the plan question shows the adapter's baseline plan"
    return json.loads(m.group(1))


def to_judge(prompt):
    part = prompt.split("Judge only these constraints:\n")
    lines = part[1].splitlines() if len(part) > 1 else []
    ids = []
    for line in lines:
        if not line.startswith("- "):
            break
        ids.append(line[2:].split(":")[0].strip())
    return ids


BRAND = {
    "id": "brand-calm",
    "description": "The logo reads as calm and trustworthy",
    "severity": "medium",
    "type": "brand",
}


def host_answer(phase, prompt, measured, claim_measured=False, loosen=False):
    """What a scripted host answers to a question of this phase."""
    if phase == "specify":
        return {"goals": ["a crisp logo on dark and light"], "constraints": [BRAND]}
    if phase == "plan":
        stages = baseline_stages(prompt)
        if loosen:
            stages[2]["sandbox"] = False
            stages[1]["network"] = True
            stages[0]["with"]["env_passthrough"] = ["HOME"]
        return {"stages": stages}
    if phase == "reflect":
        ids = to_judge(prompt)
        if claim_measured:
            ids = ids + list(measured)
        return {
            "judgements": [
                {"id": i, "status": "satisfied", "reason": "looks right to the host"} for i in ids
            ]
        }
    raise AssertionError(f"unexpected phase {phase}")


# A plan whose `ai` stage the host answers (`via: host` on execute).
AI_PLAN = """specification:
  artifact_name: fox-logo
  artifact_type: logo
plan:
  stages:
    - id: palette
      requires_execution: false
      with:
        prompt: "Pick the colors of {{ artifact_name }}"
        outputs_json: true
        output: dist/palette.json
        schema: {type: object, required: [primary], properties: {primary: {type: string, pattern: "^#"}}}
      outputs: [dist/palette.json]
"""


class McpServerTests(unittest.TestCase):
    maxDiff = None

    def run_async(self, coro):
        return asyncio.run(coro)

    def check_question(self, pending):
        """A pending question carries what a host needs to answer it."""
        self.assertIsInstance(pending["schema"], dict, pending)
        self.assertEqual(pending["schema"].get("type"), "object")
        first = pending["messages"][0]["content"]
        self.assertTrue(first.startswith("Phase: " + pending["phase"].capitalize()), first[:80])
        self.assertIn("answer", pending["how_to_answer"])
        if pending["phase"] in ("plan", "reflect"):
            self.assertTrue(pending["files"], pending)
            for f in pending["files"]:
                self.assertTrue((self.ws / f).exists(), f)
            for m in ("svg-valid", "png-sizes", "dark-contrast", "light-contrast"):
                self.assertIn(m, pending["measured"])

    async def drive(self, s, name, **host):
        """Refines `name` answering every pending question; returns the final
        report and the phases asked."""
        result = await call(s, "refine", {"name": name, "type": "logo", "inputs": ["logo.svg"]})
        asked = []
        for _ in range(12):
            self.assertFalse(result.is_error, text_of(result))
            report = result.structured_content
            pending = report.get("pending")
            if pending is None:
                return report, asked
            self.assertEqual(report["outcome"], "awaiting_answer")
            self.check_question(pending)
            asked.append(pending)
            first = pending["messages"][0]["content"]
            answer = host_answer(pending["phase"], first, pending["measured"], **host)
            result = await call(s, "answer", {"name": name, "answer": answer})
        self.fail(f"no final state after {asked}")

    def test_a_scripted_host_refines_a_logo_through_pending_questions(self):
        ws = make_workspace(self)

        async def go():
            async with session(ws) as s:
                tools = {t.name: t for t in (await s.list_tools()).tools}
                for name in ("check_plan", "execute", "validate", "preview", "artifact_status",
                             "artifact_list", "refine", "answer", "approve", "ledger", "restore"):
                    self.assertIn(name, tools)
                    self.assertEqual(tools[name].input_schema["type"], "object")
                report, asked = await self.drive(s, "acme-logo")
                phases = [p["phase"] for p in asked]
                self.assertEqual(phases, ["specify", "plan", "reflect"])
                self.assertEqual(report["outcome"], "converged", report.get("last_decision"))
                self.assertEqual(report["exit_code"], 0)
                by_id = {c["id"]: c for c in report["constraints"]}
                self.assertEqual(by_id["png-sizes"]["status"], "satisfied")
                self.assertEqual(by_id["brand-calm"]["basis"], "judged")
                status = await call(s, "artifact_status", {"name": "acme-logo"})
                self.assertFalse(status.is_error, text_of(status))
                self.assertEqual(status.structured_content["convergence_status"], "converged")
                self.assertNotIn("pending", status.structured_content)
                listed = await call(s, "artifact_list", {})
                self.assertIn("acme-logo", listed.structured_content["artifacts"])
                uris = [str(r.uri) for r in (await s.list_resources()).resources]
                self.assertIn("pmpo://artifacts/acme-logo/state.json", uris)
                self.assertIn("pmpo://workspace/artifact_manifest.json", uris)
                state = await s.read_resource("pmpo://artifacts/acme-logo/state.json")
                self.assertEqual(json.loads(state.contents[0].text)["artifact_name"], "acme-logo")
                shots = [u for u in uris if u.endswith("screenshot.png")]
                self.assertTrue(shots, uris)
                shot = await s.read_resource(shots[0])
                self.assertTrue(base64.b64decode(shot.contents[0].blob).startswith(b"\x89PNG"))
                ledger = await call(s, "ledger", {})
                self.assertFalse(ledger.is_error, text_of(ledger))

        self.run_async(go())
        self.assertTrue((ws / "dist" / "logo-512.png").is_file())
        self.assertFalse((ws / ".refiner/artifacts/acme-logo/pending.json").exists())

    def test_the_host_cannot_judge_a_measured_constraint(self):
        ws = make_workspace(self)

        async def go():
            async with session(ws) as s:
                return await self.drive(s, "claims", claim_measured=True)

        report, asked = self.run_async(go())
        by_id = {c["id"]: c for c in report["constraints"]}
        # The logo's colours fail the light background: measured, and the
        # host's "satisfied" changes nothing.
        self.assertEqual(by_id["light-contrast"]["status"], "violated")
        self.assertEqual(by_id["light-contrast"]["basis"], "measured")
        repairs = [p for p in asked if p["phase"] == "reflect" and len(p["messages"]) > 1]
        self.assertTrue(repairs, [p["stage"] for p in asked])
        self.assertIn("light-contrast", repairs[0]["prompt"])

    def test_a_plan_answer_that_loosens_confinement_is_refused(self):
        ws = make_workspace(self)

        async def go():
            async with session(ws) as s:
                return await self.drive(s, "loose", loosen=True)

        report, asked = self.run_async(go())
        repairs = [p for p in asked if p["phase"] == "plan" and len(p["messages"]) > 1]
        self.assertTrue(repairs, [p["stage"] for p in asked])
        self.assertIn("confinement", repairs[0]["prompt"])
        plan = json.loads((ws / ".refiner/artifacts/loose/plans/iteration-1.json").read_text())
        flat = json.dumps(plan)
        self.assertNotIn('"sandbox": false', flat)
        self.assertNotIn('"network": true', flat)
        self.assertNotIn("env_passthrough", flat)
        self.assertEqual(report["outcome"], "converged", report.get("last_decision"))

    def test_a_sampling_host_refines_without_any_pending_question(self):
        ws = make_workspace(self)
        asked = []

        async def sample(context, params):
            prompt = params.messages[-1].content.text
            phase = re.match(r"Phase: (\w+)", params.messages[0].content.text).group(1).lower()
            asked.append(phase)
            assert "JSON Schema" in (params.system_prompt or ""), params.system_prompt
            answer = host_answer(phase, params.messages[0].content.text, [])
            return types.CreateMessageResult(
                role="assistant",
                content=types.TextContent(type="text", text=json.dumps(answer)),
                model="scripted-host",
            )

        async def go():
            async with session(ws, sampling=sample) as s:
                return await call(s, "refine", {"name": "sampled", "type": "logo", "inputs": ["logo.svg"]})

        result = self.run_async(go())
        self.assertFalse(result.is_error, text_of(result))
        report = result.structured_content
        self.assertNotIn("pending", report)
        self.assertEqual(report["outcome"], "converged", report.get("last_decision"))
        self.assertEqual(asked[:2], ["specify", "plan"])
        self.assertIn("reflect", asked)
        self.assertFalse((ws / ".refiner/artifacts/sampled/pending.json").exists())
        self.assertFalse(list((ws / ".state/host/questions").glob("*.json")) if (ws / ".state/host/questions").exists() else [])

    def test_a_host_that_refuses_sampling_gets_the_adapters_answer_not_a_hang(self):
        ws = make_workspace(self)

        async def refuse(context, params):
            return types.ErrorData(code=types.INVALID_REQUEST, message="the user declined")

        notes = []

        async def note(progress, total, message):
            notes.append(message or "")

        async def go():
            async with session(ws, sampling=refuse) as s:
                args = {"name": "refused", "type": "logo", "inputs": ["logo.svg"]}
                return await call(s, "refine", args, progress_callback=note)

        result = self.run_async(go())
        self.assertFalse(result.is_error, text_of(result))
        report = result.structured_content
        self.assertNotIn("pending", report)
        self.assertIn(report["outcome"], ("converged", "max_iterations_exceeded"))
        # The refusal reached the loop as the model's error: told as progress.
        self.assertTrue(any("declined" in n for n in notes), notes)
        self.assertTrue(any(n.startswith("[iteration 1/") for n in notes), notes)
        # The Execute phase's stages are told as they go.
        self.assertTrue(any(re.match(r"\[\d+/4\] sizes completed", n) for n in notes), notes)

    def test_preview_returns_the_screenshot_as_a_png_of_the_viewport(self):
        ws = make_workspace(self)
        (ws / "page.html").write_text(
            "<html><body style='background:#234'><h1>Hi</h1>"
            "<script>console.log('hello from the page')</script></body></html>"
        )

        async def go():
            async with session(ws) as s:
                return await call(s, "preview", {"input": "page.html", "viewport": "320x200"})

        result = self.run_async(go())
        self.assertFalse(result.is_error, text_of(result))
        images = [c for c in result.content if c.type == "image"]
        self.assertEqual(len(images), 1)
        self.assertEqual(images[0].mime_type, "image/png")
        png = base64.b64decode(images[0].data)
        self.assertEqual(png[:8], b"\x89PNG\r\n\x1a\n")
        width, height = struct.unpack(">II", png[16:24])
        self.assertEqual((width, height), (320, 200))
        data = result.structured_content
        self.assertIn("hello from the page", json.dumps(data["console"]))
        self.assertEqual(data["page_errors"], [])
        self.assertEqual(data["failed_requests"], [])

    def test_a_plan_is_checked_run_validated_and_rolled_back(self):
        ws = make_workspace(self)
        (ws / "plan.yaml").write_text(PLAN)
        (ws / "go").write_text("")

        async def go():
            async with session(ws) as s:
                checked = await call(s, "check_plan", {"plan": "plan.yaml"})
                self.assertFalse(checked.is_error, text_of(checked))
                self.assertEqual(checked.structured_content["stages"], 2)
                ran = await call(s, "execute", {"plan": "plan.yaml", "jobs": 2})
                self.assertFalse(ran.is_error, text_of(ran))
                results = ran.structured_content
                self.assertEqual(results["exit_code"], 0, text_of(ran))
                self.assertEqual(results["summary"]["completed"], 2)
                self.assertEqual([st["id"] for st in results["stages"]], ["fast", "slow"])
                self.assertIn("pmpo/duration_ms", ran.meta)
                checked = await call(s, "validate", {"plan": "plan.yaml"})
                self.assertFalse(checked.is_error, text_of(checked))
                self.assertEqual(checked.structured_content["exit_code"], 0)
                entries = (await call(s, "ledger", {"run": results["run_id"]})).structured_content
                paths = json.dumps(entries)
                self.assertIn("slow.done", paths)
                undone = await call(s, "restore", {"run": results["run_id"]})
                self.assertFalse(undone.is_error, text_of(undone))

        self.run_async(go())
        self.assertFalse((ws / "slow.done").exists())

    def test_an_ai_stage_of_a_run_waits_for_the_host_and_its_answer_completes_the_run(self):
        ws = make_workspace(self)
        (ws / "ai-plan.yaml").write_text(AI_PLAN)

        async def go():
            async with session(ws) as s:
                ran = await call(s, "execute", {"plan": "ai-plan.yaml", "via": "host"})
                results = ran.structured_content
                self.assertEqual(results["exit_code"], 3, text_of(ran))
                waiting = [e for e in results["errors"] if e["kind"] == "awaiting_answer"]
                self.assertEqual([e["stage"] for e in waiting], ["palette"], results["errors"])
                self.assertFalse((ws / "dist/palette.json").exists())
                # A bad answer first: one repair question, the run waits again.
                args = {"run_id": results["run_id"], "stage": "palette"}
                again = await call(s, "answer", {**args, "answer": {"primary": "blue"}})
                self.assertEqual(again.structured_content["exit_code"], 3, text_of(again))
                done = await call(s, "answer", {**args, "answer": {"primary": "#ff6600"}})
                self.assertFalse(done.is_error, text_of(done))
                self.assertEqual(done.structured_content["exit_code"], 0, text_of(done))
                stages = {st["id"]: st["status"] for st in done.structured_content["stages"]}
                self.assertEqual(stages["palette"], "COMPLETED", stages)
                # Nothing waits any more.
                none = await call(s, "answer", {**args, "answer": {"primary": "#000000"}})
                self.assertTrue(none.is_error)
                self.assertIn("no question waiting", text_of(none))

        self.run_async(go())
        self.assertEqual(json.loads((ws / "dist/palette.json").read_text())["primary"], "#ff6600")

    def test_a_plan_the_host_runs_may_not_loosen_confinement(self):
        ws = make_workspace(self)
        loose = {
            "sandbox: false": "      sandbox: false\n",
            "network: true": "      network: true\n",
            "env_passthrough": "      with: {command: [sh, -c, 'echo x > a.txt'], env_passthrough: [HOME]}\n",
        }

        async def go():
            async with session(ws) as s:
                for what, line in loose.items():
                    stage = "      with: {command: [sh, -c, 'echo x > a.txt']}\n"
                    body = line if line.startswith("      with:") else stage + line
                    (ws / "loose.yaml").write_text(
                        "specification: {artifact_name: x, artifact_type: code}\n"
                        "plan:\n  stages:\n    - id: a\n" + body + "      outputs: [a.txt]\n"
                    )
                    checked = await call(s, "check_plan", {"plan": "loose.yaml"})
                    self.assertFalse(checked.is_error, (what, text_of(checked)))
                    for tool in ("execute", "validate"):
                        r = await call(s, tool, {"plan": "loose.yaml"})
                        self.assertTrue(r.is_error, (what, tool, text_of(r)))
                        self.assertIn(what, text_of(r))
                        self.assertIn("confinement", text_of(r))
                self.assertFalse((ws / "a.txt").exists())
                self.assertFalse((ws / ".state").exists())

        self.run_async(go())

    def test_approve_answers_the_approval_gate_and_refine_goes_on(self):
        ws = make_workspace(self)
        started = subprocess.run(
            [PMPO, "refine", "gated", "--type", "logo", "--input", "logo.svg", "--approval",
             "--offline", "-w", str(ws)],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=CALL_LIMIT,
        )
        self.assertEqual(started.returncode, 3, started.stderr)

        async def go():
            async with session(ws) as s:
                status = await call(s, "artifact_status", {"name": "gated"})
                self.assertFalse(status.is_error, text_of(status))
                approved = await call(s, "approve", {"name": "gated", "decision": "continue",
                                                     "note": "looks right"})
                self.assertFalse(approved.is_error, text_of(approved))
                self.assertEqual(approved.structured_content["decision"], "continue")
                again = await call(s, "approve", {"name": "gated", "decision": "continue"})
                self.assertTrue(again.is_error, text_of(again))
                return await call(s, "refine", {"name": "gated"})

        result = self.run_async(go())
        self.assertFalse(result.is_error, text_of(result))
        self.assertEqual(result.structured_content["outcome"], "converged", text_of(result))
        self.assertIn("looks right", (ws / "decisions.md").read_text())

    def test_nothing_but_the_protocol_reaches_stdout(self):
        """A whole paused and answered refinement over raw stdio: every line
        the server writes is a JSON-RPC message."""
        ws = make_workspace(self)
        errlog = tempfile.TemporaryFile()
        self.addCleanup(errlog.close)
        server = subprocess.Popen([PMPO, "mcp", "-w", str(ws)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=errlog, text=True)
        self.addCleanup(server.stdout.close)
        self.addCleanup(server.kill)
        lines = []

        def ask(i, method, params):
            msg = {"jsonrpc": "2.0", "method": method, "params": params}
            if i is not None:
                msg["id"] = i
            server.stdin.write(json.dumps(msg) + "\n")
            server.stdin.flush()
            while i is not None:
                line = server.stdout.readline()
                self.assertTrue(line, "the server closed its output")
                lines.append(line)
                if json.loads(line).get("id") == i:
                    return json.loads(line)

        ask(0, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                              "clientInfo": {"name": "raw", "version": "1"}})
        ask(None, "notifications/initialized", {})
        args = {"name": "raw", "type": "logo", "inputs": ["logo.svg"]}
        first = ask(1, "tools/call", {"name": "refine", "arguments": args})
        self.assertIn("pending", first["result"]["structuredContent"])
        ask(2, "tools/call", {"name": "answer", "arguments": {"name": "raw", "answer": {"constraints": []}}})
        server.stdin.close()
        lines.extend(server.stdout.readlines())
        self.assertEqual(server.wait(timeout=30), 0)
        for line in lines:
            self.assertEqual(json.loads(line)["jsonrpc"], "2.0", line)

    def test_bad_arguments_are_tool_errors_and_the_server_answers_the_next_call(self):
        ws = make_workspace(self)
        (ws / "outside").symlink_to("/etc")

        async def go():
            async with session(ws) as s:
                cases = [
                    ("artifact_status", {"name": 5}, "must be a string"),
                    ("artifact_status", {}, "needs the argument `name`"),
                    ("check_plan", {"plan": "../../etc/passwd"}, "`..`"),
                    ("check_plan", {"plan": "/etc/passwd"}, "outside the workspace"),
                    ("check_plan", {"plan": "outside/passwd"}, "symbolic link"),
                    ("refine", {"name": "../../etc/passwd"}, "path separator"),
                    ("refine", {"name": "x", "inputs": "logo.svg"}, "list of strings"),
                    ("execute", {"plan": "plan.yaml", "jobs": "many"}, "whole number"),
                    ("execute", {"plan": "plan.yaml", "rm": True}, "has no argument `rm`"),
                    ("approve", {"name": "x", "decision": "maybe"}, "`continue` or `terminate`"),
                    ("answer", {"name": "nobody", "answer": {"x": 1}}, "no pending question"),
                    ("answer", {"answer": {"x": 1}}, "needs either `name`"),
                    ("no_such_tool", {}, "there is no tool"),
                    ("check_plan", {"plan": "missing.yaml"}, "missing.yaml"),
                ]
                for tool, args, expected in cases:
                    r = await call(s, tool, args)
                    self.assertTrue(r.is_error, (tool, args, text_of(r)))
                    self.assertIn(expected, text_of(r), (tool, args))
                    self.assertTrue(text_of(r).startswith("error: "), text_of(r))
                for uri in ("pmpo://file/../../etc/passwd.png", "pmpo://artifacts/../x/state.json",
                            "pmpo://file/outside/passwd"):
                    with self.assertRaises(Exception):
                        await s.read_resource(uri)
                r = await call(s, "artifact_list", {})
                self.assertFalse(r.is_error, text_of(r))

        self.run_async(go())

    def test_a_client_that_goes_away_mid_run_leaves_a_run_that_resumes(self):
        ws = make_workspace(self)
        (ws / "plan.yaml").write_text(PLAN)
        pidfile = ws.parent / (ws.name + ".pid")
        self.addCleanup(lambda: pidfile.unlink(missing_ok=True))

        notes = []

        async def note(progress, total, message):
            notes.append(message or "")

        async def start_and_leave():
            async with session(ws, pidfile=pidfile) as s:
                args = {"plan": "plan.yaml"}
                running = asyncio.ensure_future(call(s, "execute", args, progress_callback=note))
                deadline = time.monotonic() + 60
                while not (ws / "slow.started").exists():
                    self.assertLess(time.monotonic(), deadline, "the slow stage never started")
                    await asyncio.sleep(0.1)
                running.cancel()
                with contextlib.suppress(BaseException):
                    await running
            # Leaving the session closed the server's stdin.

        self.run_async(start_and_leave())
        # The run told its progress while it ran.
        self.assertTrue(any("slow started" in n for n in notes), notes)
        pid = int(pidfile.read_text())
        deadline = time.monotonic() + 30
        while alive(pid):
            self.assertLess(time.monotonic(), deadline, "the server did not exit")
            time.sleep(0.1)
        self.assertFalse((ws / "slow.done").exists())
        (ws / "go").write_text("")

        async def come_back():
            async with session(ws) as s:
                return await call(s, "execute", {"plan": "plan.yaml"})

        result = self.run_async(come_back())
        self.assertFalse(result.is_error, text_of(result))
        self.assertEqual(result.structured_content["exit_code"], 0, text_of(result))
        self.assertTrue((ws / "slow.done").exists())
        # The first stage ran once: the second session went on from the first.
        self.assertEqual((ws / "fast.count").read_text().count("x"), 1)

    def test_a_cancelled_call_stops_its_run_and_the_server_stays_responsive(self):
        ws = make_workspace(self)
        (ws / "plan.yaml").write_text(PLAN)
        results = ws / ".state/execution_results.json"

        async def go():
            async with session(ws) as s:
                running = asyncio.ensure_future(call(s, "execute", {"plan": "plan.yaml"}))
                deadline = time.monotonic() + 60
                while not (ws / "slow.started").exists():
                    self.assertLess(time.monotonic(), deadline, "the slow stage never started")
                    await asyncio.sleep(0.1)
                # The server answers while the run goes on.
                listed = await call(s, "artifact_list", {})
                self.assertFalse(listed.is_error, text_of(listed))
                running.cancel()  # the SDK sends notifications/cancelled
                with contextlib.suppress(asyncio.CancelledError):
                    await running
                deadline = time.monotonic() + 30
                while not (results.exists() and json.loads(results.read_text())["status"] == "cancelled"):
                    self.assertLess(time.monotonic(), deadline, "the run was not cancelled")
                    await asyncio.sleep(0.1)
                (ws / "go").write_text("")
                again = await call(s, "execute", {"plan": "plan.yaml"})
                self.assertFalse(again.is_error, text_of(again))
                self.assertEqual(again.structured_content["exit_code"], 0, text_of(again))

        self.run_async(go())
        self.assertEqual((ws / "fast.count").read_text().count("x"), 1)

    def test_a_client_that_goes_away_while_its_model_thinks_leaves_a_refinement_that_resumes(self):
        ws = make_workspace(self)
        pidfile = ws.parent / (ws.name + ".pid")
        self.addCleanup(lambda: pidfile.unlink(missing_ok=True))
        async def leave():
            ready = asyncio.Event()

            async def never(context, params):
                ready.set()
                await asyncio.sleep(3600)

            async with session(ws, sampling=never, pidfile=pidfile) as s:
                args = {"name": "left", "type": "logo", "inputs": ["logo.svg"]}
                running = asyncio.ensure_future(call(s, "refine", args))
                await asyncio.wait_for(ready.wait(), 60)
                running.cancel()
                with contextlib.suppress(BaseException):
                    await running

        self.run_async(leave())
        pid = int(pidfile.read_text())
        deadline = time.monotonic() + 30
        while alive(pid):
            self.assertLess(time.monotonic(), deadline, "the server did not exit")
            time.sleep(0.1)

        async def come_back():
            async with session(ws) as s:
                return await call(s, "refine", {"name": "left"})

        # No lock is left: a new session goes on with the same refinement,
        # now asking through a pending question.
        result = self.run_async(come_back())
        self.assertFalse(result.is_error, text_of(result))
        report = result.structured_content
        self.assertEqual(report["started"], "resumed", report)
        self.assertEqual(report["pending"]["phase"], "specify")


PLAN = """
specification:
  artifact_name: slow
  artifact_type: content
  content_type: direct:text
  intent: A run that waits until the test lets it finish.
  constraints: []
plan:
  stages:
    - id: fast
      tool: run
      with:
        command: [sh, -c, "printf x >> fast.count; echo ok > fast.txt"]
      outputs: [fast.txt, fast.count]
      cache: true
    - id: slow
      tool: run
      depends_on: [fast]
      with:
        command: [sh, -c, "touch slow.started; while [ ! -e go ]; do sleep 0.2; done; echo done > slow.done"]
      outputs: [slow.done, slow.started]
"""


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie the SDK has not reaped yet has exited.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


if __name__ == "__main__":
    unittest.main()

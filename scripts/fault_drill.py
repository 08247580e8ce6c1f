"""Fault drill (issue #20): every class of fault found by trying opid as a hostile user would, run
against the real components, in a few minutes, on 127.0.0.1 only. Prints one table.

    python scripts/fault_drill.py                      # all classes
    python scripts/fault_drill.py --only server actions --requests 400

Classes (the issue's items):
  1 analyzer    a misbehaving chat-completions server of our own: each bad reply shape, 429 with
                Retry-After, resets, timeouts, lone surrogates; then `opid-train --algo opid` against it
  2 actions     hostile actions (any shape, up to past 1 MB) and hostile raw responses, every
                registered env, raw and through the agent wrappers: answered within 1 s, never raised
  3 recording   `make_agent_env(record_to=...)` with lone surrogates in responses: every step recorded
  4 server      the retrieval server under 32 concurrent clients, the malformed-request catalogue,
                clients hanging up mid-body; its log must hold no traceback
  5 resume      kill -9 + `--resume` of a small run (bit-identical to an uninterrupted one), a
                truncated latest checkpoint, a `latest` naming a missing folder, a second run in a used folder
  6 generation  kill -9 of `python -m opid_envs.alfworld.generate --level medium`: temp folders cleaned,
                never a live writer's
  7 configs     bad options of opid-train and opid-eval: exit 2 with one line naming the option,
                before any work is written

"failures" counts cases that did not behave as wanted; "data lost" counts what a user would lose
(a step, request, analysis, metrics line, checkpoint or megabyte left behind), per class.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TOY = "tests.train.toy_expert:OPIDTest/KeyDoorExpert-v0"  # a tiny env with an expert: fast warm starts
TINY = ["--tiny.hidden-size", "32", "--tiny.num-layers", "1", "--tiny.num-heads", "2",
        "--tiny.intermediate-size", "64", "--tiny.vocab-size", "600", "--threads", "1",
        "--tasks-per-update", "2", "--group-size", "2", "--max-new-tokens", "8",
        "--warmstart.episodes", "2", "--warmstart.epochs", "1", "--no-progress", "--no-tensorboard",
        "--env", TOY, "--env-kwargs", '{"max_steps": 6}']


@dataclass
class Drill:
    name: str
    cases: int = 0
    failures: list[str] = field(default_factory=list)
    lost: int = 0
    lost_unit: str = ""
    seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def check(self, ok: bool, what: str, lost: int = 0) -> bool:
        with self.lock:  # cases of one class may run in threads
            self.cases += 1
            self.lost += lost
            if not ok:
                self.failures.append(what)
        return ok


def environ(cache: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPID_CACHE=str(cache))
    env.pop("ALFWORLD_DATA", None)
    return env


def run(cmd: list[str], cache: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=ROOT, env=environ(cache), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(cmd, -9, exc.stdout or "", f"timed out after {timeout} s")


def train_cmd(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "opid_train.cli.train", "--run-dir", str(run_dir), *TINY, *extra]


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6 if path.exists() else 0.0


# -- 1. the analyzer against a misbehaving chat-completions server ---------------------------------
GOOD_REPLY = '{"episode_summary": "won", "episode_skill": "take the key first", "step_skills": {"0": "take it"}}'
BAD_BODIES = {  # 200 answers that are no chat completion: (body, content type)
    "invalid JSON": ('{"choices": [{"mess', "application/json"),
    "HTML page": ("<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html"),
    "top-level array": ("[1, 2, 3]", "application/json"),
    "choices []": ('{"choices": []}', "application/json"),
    "choices null": ('{"choices": null}', "application/json"),
    "choices [7]": ('{"choices": [7]}', "application/json"),
    "content a list": ('{"choices": [{"message": {"content": [1]}}]}', "application/json"),
    "50k-deep JSON": ("[" * 50_000 + "]" * 50_000, "application/json"),
    "empty body": ("", "application/json"),
    "bogus charset": ('{"choices": []}', "application/json; charset=bogus-8"),
}


class ChatServer(ThreadingHTTPServer):
    """Answers by the requested model name: "<fault>" always, "<fault>|once" once then well."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), ChatHandler)
        self.calls, self.times, self.lock = defaultdict(int), defaultdict(list), threading.Lock()
        self.counter = 0

    def handle_error(self, request, client_address):
        pass  # faults we cause on purpose


class ChatHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def send(self, code: int, body: str | bytes, content_type="application/json", headers=()):
        data = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def completion(self, content) -> str:
        return json.dumps({"id": "c", "object": "chat.completion", "created": 0, "model": "m",
                           "choices": [{"index": 0, "finish_reason": "stop",
                                        "message": {"role": "assistant", "content": content}}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        s = self.server
        fault, _, once = body["model"].partition("|")
        with s.lock:
            s.calls[body["model"]] += 1
            s.times[body["model"]].append(time.monotonic())
            n = s.calls[body["model"]]
            s.counter += 1
            counter = s.counter
        if fault == "rotating":  # the training run: every other request is one of the bad shapes
            names = list(BAD_BODIES) + ["surrogate", "500"]
            fault = "good" if counter % 2 else names[(counter // 2) % len(names)]
        if once and n > 1:
            fault = "good"
        if fault in BAD_BODIES:
            return self.send(200, *BAD_BODIES[fault])
        if fault == "500":
            return self.send(500, '{"error": {"message": "overloaded"}}')
        if fault == "429 Retry-After 1":
            return self.send(429, '{"error": {"message": "slow down"}}', headers=[("Retry-After", "1")])
        if fault == "429 Retry-After 3600":
            return self.send(429, '{"error": {"message": "slow down"}}', headers=[("Retry-After", "3600")])
        if fault == "400":
            return self.send(400, '{"error": {"message": "no such model"}}')
        if fault == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.close_connection = True
            return
        if fault == "slow":
            time.sleep(2.0)
        if fault == "truncated":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "5000")
            self.end_headers()
            self.wfile.write(self.completion(GOOD_REPLY)[:40].encode())
            self.close_connection = True
            return
        if fault == "2 MB answer":
            return self.send(200, self.completion("x" * (2 << 20)))
        if fault == "surrogate":
            return self.send(200, self.completion(GOOD_REPLY.replace("the key", "the \ud800 key")))
        return self.send(200, self.completion(GOOD_REPLY))


def drill_analyzer(d: Drill, work: Path, cache: Path) -> None:
    from opid_train.algorithms.config import AnalyzerConfig
    from opid_train.analyzers import make_analyzer
    from opid_train.types import Step, Trajectory
    from wrappers import PromptContext

    d.lost_unit = "analyses"
    server = ChatServer()
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/v1"
    os.environ.setdefault("OPID_DRILL_KEY", "sk-drill")
    ctx = PromptContext(task="open the door", history=(), observation="You see a key.",
                        admissible_actions=("take key",), step=0)
    step = Step(t=0, observation=ctx.observation, context=ctx, prompt="", response="<action>take key</action>",
                action="take key", reward=1.0, format_valid=True, action_valid=True)
    trajectory = Trajectory(env_id="toy", split="train", task="open the door", task_id=0, task_type="toy",
                            group_id=0, traj_id=0, steps=[step], score=1.0, won=True)
    cache_dir = work / "analyses"

    def analyzer(model, **kw):
        cfg = AnalyzerConfig(backend="openai", model=model, base_url=url, api_key_env="OPID_DRILL_KEY",
                             cache_dir=str(cache_dir), **({"backoff_s": 0.01, "timeout_s": 1.0, "max_retries": 2} | kw))
        return make_analyzer(cfg)

    permanent = [*BAD_BODIES, "500", "400", "reset", "truncated", "2 MB answer", "429 Retry-After 3600"]
    transient = [*BAD_BODIES, "500", "reset", "slow", "truncated", "429 Retry-After 1"]
    for fault in permanent:  # never usable: a counted failure, not an exception
        try:
            a = analyzer(fault, backoff_max_s=0.05)
            result = a.analyze(trajectory)
            inner = getattr(a, "inner", a)
            d.check(result is None and inner.failures == 1, f"analyzer: {fault} (always)")
        except Exception as exc:  # noqa: BLE001  (the drill reports whatever escapes)
            d.check(False, f"analyzer: {fault} (always) raised {type(exc).__name__}")
    for fault in transient:  # bad once, then good: the analysis must not be lost
        try:
            t0 = time.monotonic()
            result = analyzer(f"{fault}|once", timeout_s=1.0 if fault != "slow" else 0.5).analyze(trajectory)
            ok = result is not None
            if fault.startswith("429"):
                first, second = server.times[f"{fault}|once"][:2]
                ok = ok and second - first >= 0.95  # Retry-After honoured, not the 0.01 s backoff
            d.check(ok, f"analyzer: {fault} (once)", lost=int(result is None))
        except Exception as exc:  # noqa: BLE001
            d.check(False, f"analyzer: {fault} (once) raised {type(exc).__name__}", lost=1)
        with contextlib.suppress(Exception):  # a cached success would hide the next fault
            shutil.rmtree(cache_dir)
    try:  # an env that echoed a hostile action: a lone surrogate in what the analyzer reads
        step.observation += " \udfff"
        result = analyzer("good").analyze(trajectory)
        d.check(result is not None, "analyzer: lone surrogate in the trajectory", lost=int(result is None))
    except Exception as exc:  # noqa: BLE001
        d.check(False, f"analyzer: lone surrogate in the trajectory raised {type(exc).__name__}", lost=1)
    step.observation = "You see a key."
    try:
        result = analyzer("surrogate").analyze(trajectory)
        texts = [result.episode_summary, result.episode_skill, *result.step_skills.values()] if result else []
        clean = all(t == t.encode("utf-8", "replace").decode("utf-8") for t in texts)
        d.check(result is not None and clean, "analyzer: lone surrogate in the reply", lost=int(result is None))
    except Exception as exc:  # noqa: BLE001
        d.check(False, f"analyzer: lone surrogate raised {type(exc).__name__}", lost=1)
    leftovers = [p for p in cache_dir.rglob("*") if p.is_file() and (p.suffix != ".json" or p.stat().st_size == 0)]
    d.check(not leftovers, f"analyzer cache: {len(leftovers)} temp or empty file(s) left", lost=len(leftovers))

    # a real training run against the endpoint: half its replies are bad
    run_dir = work / "opid-run"
    proc = run(train_cmd(run_dir, "--algo", "opid", "--updates", "1", "--analyzer.backend", "openai",
                         "--analyzer.base-url", url, "--analyzer.model", "rotating", "--analyzer.api-key-env",
                         "OPID_DRILL_KEY", "--analyzer.max-retries", "1", "--analyzer.backoff-s", "0.01",
                         "--analyzer.timeout-s", "5", "--analyzer.cache-dir", str(work / "run-analyses")), cache)
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()] if (
        run_dir / "metrics.jsonl").exists() else []
    ok = proc.returncode == 0 and rows and "opid/failed_trajectories" in rows[0] and (run_dir / "final").exists()
    d.check(bool(ok), f"opid-train against the bad endpoint: exit {proc.returncode} "
                      f"{proc.stderr.strip().splitlines()[-1:] if proc.returncode else ''}", lost=0 if ok else 1)
    server.shutdown()
    server.server_close()


# -- 2. hostile actions and responses, every registered env ------------------------------------------
def hostile_actions(n: int) -> dict[str, str]:
    rng = random.Random(0)
    return {
        "open <search>": "<search>" * (n // 8), "open <answer>": "<answer>" * (n // 8),
        "open <action>": "<action>" * (n // 8), "open <think>": "<think>" * (n // 7),
        "closings then openings": "</search>" * (n // 18) + "<search>" * (n // 18),
        "</action> then <action>": "</action>" * (n // 18) + "<action>" * (n // 18),
        "crossed tags": "<search></answer>" * (n // 17), "click[": "click[" * (n // 6),
        "search[": "search[" + "x" * n + "]", "<": "<" * n, "letters": "a" * n, "spaces": " " * n + "x",
        "one huge search": "<search>" + "q " * (n // 2) + "</search>",
        "one huge action": "<action>" + "go " * (n // 3) + "</action>",
        "tag soup": "".join(rng.choice(["<search>", "</search>", "<answer>", "</answer>", "<action>", "</action>",
                                        "<think>", "</think>", "x", "[", "]", " "]) for _ in range(n // 6)),
        "surrogates": "<action>\ud800" * (n // 9),
        "NULs": "\x00" * n,
    }


def hostile_responses(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    pieces = ["<action>", "</action>", "<search>", "</search>", "<answer>", "</answer>", "<think>", "</think>",
              "go to desk 1", "take key", "search[blue shirt]", "click[buy now]", "\ud800", "\udfff", "\x00",
              "\u202e", "🔑", "<ACTION>", "<action/>", "{", "}", "\n", "\t", "   ", "<", ">", "[", "]", "ж", "\\"]
    out = []
    for i in range(count):
        size = rng.choice([1, 3, 10, 100, 2000]) if i % 10 else rng.choice([20_000, 70_000])
        out.append("".join(rng.choice(pieces) for _ in range(size)))
    return out


STEP_DEADLINE_S = 5  # a step still running after this is stopped (a quadratic parser takes minutes per MB)


class StepTimeout(Exception):
    pass


@contextlib.contextmanager
def step_deadline(seconds: int):
    """Interrupt the block after `seconds` (SIGALRM; Python's regex engine checks for signals)."""
    def interrupt(*_):
        raise StepTimeout

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def env_kwargs(env_id: str, suite: Path) -> dict:
    return {"data_dir": str(suite)} if "ALFWorld" in env_id else {}


def drill_actions(d: Drill, work: Path, suite: Path) -> None:
    import gymnasium as gym

    import opid_envs  # noqa: F401
    from wrappers import make_agent_env

    d.lost_unit = "steps"
    for env_id in ("OPID/ALFWorld-v0", "OPID/WebShop-v0", "OPID/SearchQA-v0"):
        for layer in ("env", "agent"):
            env = (make_agent_env if layer == "agent" else gym.make)(env_id, **env_kwargs(env_id, suite))
            cases = [(f"{k} 1 MB", v) for k, v in hostile_actions(1 << 20).items()]
            cases += [(f"{k} 64 KB", v) for k, v in hostile_actions(65_000).items()]
            cases += [(f"random response {i}", r) for i, r in enumerate(hostile_responses(100))]
            env.reset(seed=0)
            for name, action in cases:
                t0 = time.perf_counter()
                try:
                    with step_deadline(STEP_DEADLINE_S):
                        obs, reward, terminated, truncated, info = env.step(action)
                    took = time.perf_counter() - t0
                    obs.encode("utf-8")
                    reason = layer == "agent" or "ALFWorld" in env_id or info["action_valid"] or "Invalid action:" in obs
                    d.check(took < 1.0 and reason, f"{env_id} {layer}: {name} ({took:.2f} s)")
                    if terminated or truncated:
                        env.reset(seed=0)
                except StepTimeout:
                    d.check(False, f"{env_id} {layer}: {name} still running after {STEP_DEADLINE_S} s", lost=1)
                    env.reset(seed=0)
                except Exception as exc:  # noqa: BLE001
                    d.check(False, f"{env_id} {layer}: {name} raised {type(exc).__name__}: {exc}"[:160], lost=1)
                    env.reset(seed=0)
            env.close()


# -- 3. recording with lone surrogates -----------------------------------------------------------------
def drill_recording(d: Drill, work: Path, suite: Path) -> None:
    from wrappers import make_agent_env, read_records

    d.lost_unit = "steps"
    for env_id in ("OPID/ALFWorld-v0", "OPID/WebShop-v0", "OPID/SearchQA-v0"):
        path = work / f"{env_id.replace('/', '_')}.jsonl"
        env = make_agent_env(env_id, record_to=str(path), **env_kwargs(env_id, suite))
        env.reset(seed=0)
        tag = "answer" if "Search" in env_id else "action"
        sent, raised = [], 0
        for i, response in enumerate([f"<{tag}>go to \ud800</{tag}>", "\udcff no block", *hostile_responses(30, 1)]):
            sent.append(response)
            try:
                _, _, terminated, truncated, _ = env.step(response)
                if terminated or truncated:
                    env.reset(seed=0)
            except Exception:  # noqa: BLE001
                raised += 1
                with contextlib.suppress(Exception):
                    env.reset(seed=0)
        try:
            recorded = [r.response for r in read_records(path)]
        except Exception:  # noqa: BLE001
            recorded = []
        # a high and a low surrogate side by side are one character in JSON (and UTF-16): compare so
        utf16 = lambda t: t.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")  # noqa: E731
        missing = sum(1 for a, b in zip(sent, recorded + [None] * len(sent)) if b is None or utf16(a) != utf16(b))
        d.cases += len(sent) - 1
        d.check(raised == 0 and missing == 0, f"{env_id}: {raised} steps raised, {missing} of {len(sent)} "
                                              "not recorded exactly", lost=missing)


# -- 4. the retrieval server ------------------------------------------------------------------------------
def drill_server(d: Drill, work: Path, cache: Path, clients: int, requests: int) -> None:
    from bench_retrieval_server import exchange, free_port, load, malformed_requests, one_line_4xx

    from opid_envs.searchqa.datasets import load_dataset

    d.lost_unit = "requests"
    port = free_port()
    log_path = work / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "opid_envs.searchqa.server", "--port", str(port)], cwd=ROOT,
                                env=environ(cache), stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        line = proc.stdout.readline()
        if not d.check("serving" in line, f"server did not start: {line!r}"):
            return
        queries = [it.question for it in load_dataset("synthetic").split("test")]
        for keep_alive in (False, True):
            r = load(port, clients, requests, keep_alive, queries)
            d.cases += clients * requests - 1
            d.check(r["lost"] == 0, f"{clients} clients x {requests} ({'keep-alive' if keep_alive else 'a connection each'})"
                                    f": {r['lost']} lost {r['lost_kinds']}", lost=r["lost"])
        for name, data in malformed_requests().items():
            status, body = exchange("127.0.0.1", port, data)
            d.check(one_line_4xx(status, body), f"malformed: {name} -> {status} {body[:60]!r}",
                    lost=int(status is None))
        for i in range(50):  # hang up mid-body, and reset before the answer
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"POST /retrieve HTTP/1.1\r\nHost: x\r\nContent-Length: 900\r\n\r\n{\"query\": \"Pou")
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            body = json.dumps({"queries": ["Pouva Observatory"] * 64, "topk": 100}).encode()
            sock.sendall(b"POST /retrieve HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            sock.close()
            d.cases += 2
        alive = load(port, 1, 3, True, queries)["lost"] == 0
        d.check(alive, "the server answers after all of it")
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        proc.kill()
    text = log_path.read_text()
    d.check("Traceback" not in text, f"server log: {text.count('Traceback')} tracebacks in {len(text.splitlines())} lines")


# -- 5. resume -----------------------------------------------------------------------------------------------
def drill_resume(d: Drill, work: Path, cache: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from opid_train.learner import KEEP_CHECKPOINTS

    d.lost_unit = "lines/ckpts"
    args = ["--updates", "2", "--lr", "1e-2"]
    straight, killed = work / "straight", work / "killed"
    uninterrupted = subprocess.Popen(train_cmd(straight, *args), cwd=ROOT, env=environ(cache),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen(train_cmd(killed, *args), cwd=ROOT, env=environ(cache),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (killed / "checkpoints" / "latest").exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    resumed = run(train_cmd(killed, *args, "--resume"), cache)
    _, err = uninterrupted.communicate(timeout=300)
    final = lambda r: r / "checkpoints" / "update_00002" / "model" / "model.safetensors"  # noqa: E731
    same = False
    if resumed.returncode == 0 and uninterrupted.returncode == 0 and final(straight).exists() and final(killed).exists():
        a, b = load_file(str(final(straight))), load_file(str(final(killed)))
        same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    d.check(same, f"kill -9 + --resume is bit-identical (resume exit {resumed.returncode}, straight "
                  f"{uninterrupted.returncode})", lost=int(not same))

    def lines(run_dir):
        path = run_dir / "metrics.jsonl"
        return len(path.read_text().splitlines()) if path.exists() else 0

    def ckpts(run_dir):
        return sorted(p.name for p in (run_dir / "checkpoints").glob("update_*"))

    def case(name, prepare, extra, want_exit_zero=True, want_message=""):
        run_dir = work / name.replace(" ", "-")
        shutil.copytree(straight, run_dir)
        prepare(run_dir)
        before_lines, before = lines(run_dir), ckpts(run_dir)
        proc = run(train_cmd(run_dir, *extra), cache, timeout=240)
        after = ckpts(run_dir)
        # a checkpoint gone while fewer than KEEP_CHECKPOINTS newer ones stand is lost; one rotated out
        # behind that many newer ones is the run's normal bookkeeping
        rotated = {name for name in set(before) - set(after)
                   if sum(other > name for other in after) >= KEEP_CHECKPOINTS}
        lost = max(before_lines - lines(run_dir), 0) + len(set(before) - set(after) - rotated)
        ok = (proc.returncode == 0) == want_exit_zero and "Traceback" not in proc.stderr
        ok = ok and (not want_message or want_message in (proc.stdout + proc.stderr).lower())
        last = (proc.stderr.strip().splitlines() or [""])[-1][:100]
        d.check(ok and lost == 0, f"{name}: exit {proc.returncode}, lost {lost}; {last}", lost=lost)

    def truncate_latest(run_dir):
        pointer = run_dir / "checkpoints" / "latest"
        model = run_dir / "checkpoints" / pointer.read_text().strip() / "model" / "model.safetensors"
        model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])

    if not (straight / "checkpoints" / "latest").exists():
        d.check(False, f"the uninterrupted run failed: {err.strip().splitlines()[-1:]}")
        return
    with ThreadPoolExecutor(3) as pool:  # each is a training process; together they take the time of one
        for f in [pool.submit(case, "truncated latest checkpoint", truncate_latest, ["--resume", "--updates", "3"],
                              want_message="update_00001"),
                  pool.submit(case, "latest names a missing folder",
                              lambda r: (r / "checkpoints" / "latest").write_text("update_99999"),
                              ["--resume", "--updates", "3"]),
                  pool.submit(case, "a new run in a used folder", lambda r: None, ["--updates", "1"],
                              want_exit_zero=False)]:
            f.result()


# -- 6. killed suite generation ------------------------------------------------------------------------------
def drill_generation(d: Drill, work: Path, cache: Path, kills: int = 3) -> None:
    from opid_envs.alfworld import generate

    d.lost_unit = "MB left"
    root = generate.suite_root("medium", 0, cache)
    temps = lambda: sorted(root.parent.glob(f".{root.name}.tmp-*"))  # noqa: E731
    writer = [sys.executable, "-m", "opid_envs.alfworld.generate", "--level", "medium"]
    for k in range(kills):
        before = set(temps())
        proc = subprocess.Popen(writer, cwd=ROOT, env=environ(cache), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not any((t / "json_2.1.1" / "valid_seen").exists() for t in set(temps()) - before) \
                and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if k == kills - 1 and proc.poll() is None:  # a live writer: a cleaner must leave its folder alone
            live = [t for t in temps() if t not in before]
            with contextlib.suppress(AttributeError):
                generate.clean_stale_temp(root)
            d.check(live and all(t.exists() for t in live), "a live writer's folder survives a cleaning")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    left_mb = sum(folder_mb(t) for t in temps())
    d.cases += kills - 1
    d.check(bool(temps()), f"kill -9 leaves temp folders ({len(temps())}, {left_mb:.0f} MB) before the next run")
    proc = run([*writer, "--train", "2", "--valid-seen", "1", "--valid-unseen", "1"], cache, timeout=300)
    left = temps()
    left_mb = sum(folder_mb(t) for t in left)
    d.check(proc.returncode == 0 and not left, f"the next generation left {len(left)} temp folders ({left_mb:.0f} MB)",
            lost=round(left_mb))


# -- 7. bad configurations -------------------------------------------------------------------------------------
CONFIG_TIMEOUT_S = 120  # a bad option must be refused before any work (an interpreter start); past this it was not


def drill_configs(d: Drill, work: Path, cache: Path) -> None:
    d.lost_unit = "folders"
    good = work / "good"
    proc = run(train_cmd(good, "--updates", "1"), cache)
    if not d.check(proc.returncode == 0, f"a good run to evaluate: {proc.stderr.strip().splitlines()[-1:]}"):
        return
    corrupt = work / "corrupt-model"
    shutil.copytree(good / "final", corrupt)
    (corrupt / "model.safetensors").write_bytes(b"\x00" * 100)
    train_cases = {
        "--algo ppo": ["--algo", "ppo"],
        "--analyzer.backend gpt": ["--algo", "opid", "--analyzer.backend", "gpt"],
        "--updates -3": ["--updates", "-3"],
        "--group-size 0": ["--group-size", "0"],
        "--tasks-per-update 0": ["--tasks-per-update", "0"],
        "--max-new-tokens 0": ["--max-new-tokens", "0"],
        "--lr -1": ["--lr", "-1"],
        "--temperature -1": ["--temperature", "-1"],
        "--env NoSuch/Env-v0": ["--env", "NoSuch/Env-v0"],
        "--env-kwargs {bad": ["--env-kwargs", "{bad"],
        "--policy nonsense": ["--policy", "nonsense"],
        "--opid.routing nope": ["--algo", "opid", "--opid.routing", "nope"],
        "--eval.splits nosuch": ["--eval.splits", "nosuch"],
    }
    def train_case(name, extra):
        run_dir = work / "bad" / name.replace(" ", "_").replace("/", "_").strip("-")
        t0 = time.monotonic()
        proc = run(train_cmd(run_dir, *extra), cache, timeout=CONFIG_TIMEOUT_S)
        took = time.monotonic() - t0
        written = [p.name for p in (run_dir / "initial", run_dir / "final", run_dir / "checkpoints") if p.exists()]
        lines = proc.stderr.strip().splitlines()
        ok = proc.returncode == 2 and "Traceback" not in proc.stderr and len(lines) <= 3 and not written
        d.check(ok, f"opid-train {name}: exit {proc.returncode}, {len(lines)} stderr lines, {took:.0f} s, "
                    f"wrote {written or 'nothing'}; {lines[-1][:90] if lines else ''}", lost=len(written))

    eval_base = [sys.executable, "-m", "opid_train.cli.eval", "--env", TOY, "--env-kwargs", '{"max_steps": 6}',
                 "--episodes", "1", "--no-progress"]
    eval_cases = {
        "missing checkpoint": ["--checkpoint", str(work / "no-such-run"), "--split", "test"],
        "unknown split": ["--checkpoint", str(good / "final"), "--split", "nosuch"],
        "corrupt safetensors": ["--checkpoint", str(corrupt), "--split", "test"],
    }
    def eval_case(name, extra):
        proc = run([*eval_base, *extra], cache, timeout=CONFIG_TIMEOUT_S)
        lines = proc.stderr.strip().splitlines()
        named = name != "corrupt safetensors" or "corrupt-model" in proc.stderr
        ok = proc.returncode == 2 and "Traceback" not in proc.stderr and len(lines) <= 3 and named
        d.check(ok, f"opid-eval {name}: exit {proc.returncode}, {len(lines)} stderr lines; "
                    f"{lines[-1][:90] if lines else ''}")

    with ThreadPoolExecutor(4) as pool:  # a rejected option costs an interpreter start; a late one, CONFIG_TIMEOUT_S
        futures = [pool.submit(train_case, n, e) for n, e in train_cases.items()]
        futures += [pool.submit(eval_case, n, e) for n, e in eval_cases.items()]
        for f in futures:
            f.result()


# -- the table ------------------------------------------------------------------------------------------------------
CLASSES = {
    "analyzer": ("1 analyzer replies", drill_analyzer),
    "actions": ("2 hostile actions", drill_actions),
    "recording": ("3 recording", drill_recording),
    "server": ("4 retrieval server", drill_server),
    "resume": ("5 resume", drill_resume),
    "generation": ("6 suite generation", drill_generation),
    "configs": ("7 bad configs", drill_configs),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=sorted(CLASSES), help="run these classes only")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients of the server class")
    parser.add_argument("--requests", type=int, default=100, help="requests per server client and mode")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--verbose", action="store_true", help="list every failed case")
    args = parser.parse_args()

    import logging

    logging.disable(logging.WARNING)  # the faults are deliberate: their warnings would bury the table
    work = Path(tempfile.mkdtemp(prefix="opid-fault-drill-"))
    cache = work / "cache"
    os.environ["OPID_CACHE"] = str(cache)
    drills = []
    suite = None
    started = time.monotonic()
    try:
        for key in args.only or CLASSES:
            title, fn = CLASSES[key]
            d = Drill(title)
            folder = work / key
            folder.mkdir()
            t0 = time.monotonic()
            print(f"running {title} ...", file=sys.stderr, flush=True)
            try:
                if key in ("actions", "recording"):
                    if suite is None:
                        from opid_envs.alfworld import generate

                        suite = generate.generate_suite("easy", work / "easy", sizes={"train": 3, "valid_seen": 1,
                                                                                       "valid_unseen": 1}, progress=False)
                    fn(d, folder, suite)
                elif key == "server":
                    fn(d, folder, cache, args.clients, args.requests)
                else:
                    fn(d, folder, cache)
            except Exception as exc:  # noqa: BLE001  (a drill that breaks is itself a failure)
                d.check(False, f"the drill itself raised {type(exc).__name__}: {exc}")
                traceback.print_exc()
            d.seconds = time.monotonic() - t0
            drills.append(d)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\nfault drill (issue #20), {time.monotonic() - started:.0f} s on {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; traffic to 127.0.0.1 only" + (f"; kept {work}" if args.keep else ""))
    print(f"{'class':22} {'cases tried':>11} {'failures':>9} {'data lost':>16} {'seconds':>8}")
    for d in drills:
        print(f"{d.name:22} {d.cases:11d} {len(d.failures):9d} {f'{d.lost} {d.lost_unit}':>16} {d.seconds:8.0f}")
    for d in drills:
        shown = d.failures if args.verbose else d.failures[:6]
        for what in shown:
            print(f"  {d.name}: {what}")
        if len(d.failures) > len(shown):
            print(f"  {d.name}: ... {len(d.failures) - len(shown)} more (--verbose)")
    return 1 if any(d.failures for d in drills) else 0


if __name__ == "__main__":
    sys.exit(main())

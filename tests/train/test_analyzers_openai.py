"""The OpenAI-compatible analyzer against a real HTTP server on 127.0.0.1 that answers well, badly,
slowly and with 500s (the model name picks the behaviour)."""

import json
import logging
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytest.importorskip("openai")

from opid_train.algorithms.config import AnalyzerConfig  # noqa: E402
from opid_train.analyzers import make_analyzer  # noqa: E402
from opid_train.analyzers.llm_api import OpenAIAnalyzer  # noqa: E402
from tests.train.test_opid_advantages import make_trajectory  # noqa: E402

GOOD = '```json\n{"episode_summary": "won", "episode_skill": "go right", "step_skills": {"1": "open it", "9": "x"}}\n```'
KEY = "sk-test-secret-123"
# 200 replies that are no chat completion: (body, content type)
MALFORMED = {
    "not-json": ("{\"choices\": [{\"mess", "application/json"),
    "not-json-once": ("{\"choices\": [{\"mess", "application/json"),
    "html": ("<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html"),
    "array": ("[1, 2, 3]", "application/json"),
    "choices-empty": ('{"choices": []}', "application/json"),
    "choices-null": ('{"choices": null}', "application/json"),
    "choices-garbage": ('{"choices": [7]}', "application/json"),
    "content-list": ('{"choices": [{"message": {"content": [1]}}]}', "application/json"),
    "deep": ("[" * 50_000 + "]" * 50_000, "application/json"),
    "empty-body": ("", "application/json"),
}
RETRY = {"retry-after-1": "1", "retry-after-hour": "3600"}


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.calls = defaultdict(int)
        self.bodies = defaultdict(list)
        self.times = defaultdict(list)
        self.auth = set()
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()

    def handle_error(self, request, client_address):
        pass  # the "slow" reply's client has hung up after its timeout: expected


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, code, payload, content_type="application/json", headers=()):
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        s, model = self.server, body["model"]
        with s.lock:
            s.calls[model] += 1
            s.times[model].append(time.monotonic())
            n = s.calls[model]
            s.bodies[model].append(body)
            s.auth.add(self.headers.get("Authorization"))
            s.in_flight += 1
            s.max_in_flight = max(s.max_in_flight, s.in_flight)
        reply = GOOD
        try:
            if model == "slow" and n == 1:
                time.sleep(1.5)  # past the client's timeout: retried
            if model == "parallel":
                time.sleep(0.3)
                steps = body["messages"][1]["content"].count("Step ")  # tells the replies apart: order is checkable
                reply = GOOD.replace('"go right"', f'"steps {steps}"')
            if model == "flaky-500" and n <= 2 or model == "always-500":
                return self._send(500, {"error": {"message": "overloaded", "type": "server_error"}})
            if model == "bad-request":
                return self._send(400, {"error": {"message": "no such model", "type": "invalid_request_error"}})
            if model in MALFORMED and (n == 1 or not model.endswith("-once")):
                return self._send(200, *MALFORMED[model])
            if model == "retry-after-1" and n == 1 or model == "retry-after-hour":
                return self._send(429, {"error": {"message": "slow down"}}, headers=[("Retry-After", RETRY[model])])
            if model == "surrogate":
                reply = GOOD.replace("go right", "go \ud800 right")  # a lone surrogate once JSON-decoded
            if model == "garbage" or (model == "bad-then-good" and n == 1):
                reply = "I think the agent did fine, no JSON today."
            self._send(200, {"id": "c", "object": "chat.completion", "created": 0, "model": model,
                             "choices": [{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": reply}}],
                             "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
        finally:
            with s.lock:
                s.in_flight -= 1


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("OPID_TEST_KEY", KEY)
    srv = Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def analyzer(server, model, **kw):
    kw = {"backoff_s": 0.01, "timeout_s": 0.5, "cache": False} | kw
    cfg = AnalyzerConfig(backend="openai", model=model, base_url=f"http://127.0.0.1:{server.server_port}/v1",
                         api_key_env="OPID_TEST_KEY", **kw)
    return OpenAIAnalyzer(cfg)


def test_good_reply_out_of_range_steps_dropped_and_key_sent_never_logged(server, caplog):
    caplog.set_level(logging.DEBUG)
    a = analyzer(server, "good").analyze(make_trajectory(0, 0, 3, True))
    assert (a.episode_skill, a.step_skills) == ("go right", {1: "open it"})
    assert server.auth == {f"Bearer {KEY}"}
    messages = server.bodies["good"][0]["messages"]
    assert messages[0]["role"] == "system" and "Outcome: SUCCESS" in messages[1]["content"]
    assert KEY not in caplog.text


def test_parse_error_is_fed_back_and_retried(server):
    a = analyzer(server, "bad-then-good").analyze(make_trajectory(0, 0, 3, True))
    assert a is not None and server.calls["bad-then-good"] == 2
    retry = server.bodies["bad-then-good"][1]["messages"]
    assert retry[-2] == {"role": "assistant", "content": "I think the agent did fine, no JSON today."}
    assert "no JSON object" in retry[-1]["content"]


def test_unparseable_replies_give_no_analysis_after_two_parse_retries(server):
    an = analyzer(server, "garbage")
    assert an.analyze(make_trajectory(0, 0, 3, True)) is None
    assert server.calls["garbage"] == 3 and an.failures == 1


def test_500s_and_timeouts_are_retried_with_backoff(server):
    assert analyzer(server, "flaky-500").analyze(make_trajectory(0, 0, 3, True)) is not None
    assert server.calls["flaky-500"] == 3
    assert analyzer(server, "slow").analyze(make_trajectory(0, 0, 3, True)) is not None
    assert server.calls["slow"] == 2


def test_persistent_failures_give_none_and_training_goes_on(server):
    an = analyzer(server, "always-500", max_retries=2)
    assert an.analyze_many([make_trajectory(i, 0, 2, False) for i in range(2)]) == [None, None]
    assert server.calls["always-500"] == 2 * 3
    assert analyzer(server, "bad-request").analyze(make_trajectory(0, 0, 2, False)) is None
    assert server.calls["bad-request"] == 1  # a 4xx is not transient: no retry


def test_requests_run_concurrently_and_results_keep_their_order(server):
    trajs = [make_trajectory(i, 0, 2 + i, True) for i in range(4)]
    # a generous timeout: on a loaded machine a 0.3 s reply can pass 0.5 s and be retried
    results = analyzer(server, "parallel", concurrency=4, timeout_s=30).analyze_many(trajs)
    # the server counts requests in flight at once (each holds 0.3 s): no wall-clock bound, which a loaded machine breaks
    assert server.max_in_flight >= 2
    prompts = [b["messages"][1]["content"] for b in server.bodies["parallel"]]
    assert sorted(p.count("Step ") for p in prompts) == [2, 3, 4, 5]  # each trajectory asked once
    assert [r.episode_skill for r in results] == ["steps 2", "steps 3", "steps 4", "steps 5"]


def test_cache_means_a_rerun_never_pays_twice(server, tmp_path):
    cfg = AnalyzerConfig(backend="openai", model="good", base_url=f"http://127.0.0.1:{server.server_port}/v1",
                         api_key_env="OPID_TEST_KEY", cache_dir=str(tmp_path))
    trajs = [make_trajectory(i, 0, 2 + i, i == 0) for i in range(3)]
    first = make_analyzer(cfg).analyze_many(trajs)
    again = make_analyzer(cfg).analyze_many(trajs)  # a new run, same cache folder
    assert first == again and server.calls["good"] == 3
    assert len(list(tmp_path.rglob("*.json"))) == 3


@pytest.mark.parametrize("model", sorted(m for m in MALFORMED if not m.endswith("-once")))
def test_a_reply_of_any_shape_is_a_counted_failure_not_an_exception(server, model):
    an = analyzer(server, model, max_retries=1)
    assert an.analyze_many([make_trajectory(i, 0, 2, False) for i in range(2)]) == [None, None]
    assert an.failures == 2 and server.calls[model] == 2 * 2  # retried like a transient error, then given up


def test_one_malformed_body_is_retried_and_nothing_is_lost(server):
    a = analyzer(server, "not-json-once").analyze(make_trajectory(0, 0, 3, True))
    assert a is not None and a.episode_skill == "go right" and server.calls["not-json-once"] == 2


def test_lone_surrogates_are_replaced_before_the_cache_and_the_cache_write_leaves_no_temp_file(server, tmp_path):
    cfg = AnalyzerConfig(backend="openai", model="surrogate", base_url=f"http://127.0.0.1:{server.server_port}/v1",
                         api_key_env="OPID_TEST_KEY", cache_dir=str(tmp_path), backoff_s=0.01)
    traj = make_trajectory(0, 0, 3, True)
    traj.steps[0].observation += "\udfff"  # an env that echoed a hostile action: the cache key must not raise
    first = make_analyzer(cfg).analyze(traj)
    assert first.episode_skill == "go \ufffd right"
    for text in (first.episode_summary, first.episode_skill, *first.step_skills.values()):
        text.encode("utf-8")  # what a tokenizer and a file writer need
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert [p.suffix for p in files] == [".json"] and files[0].stat().st_size > 0
    assert make_analyzer(cfg).analyze(traj) == first and server.calls["surrogate"] == 1  # read back from the cache


def test_a_failed_cache_write_costs_the_entry_not_the_run(server, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")  # the cache folder cannot be created under a file
    cfg = AnalyzerConfig(backend="openai", model="good", base_url=f"http://127.0.0.1:{server.server_port}/v1",
                         api_key_env="OPID_TEST_KEY", cache_dir=str(blocker / "cache"))
    assert make_analyzer(cfg).analyze(make_trajectory(0, 0, 3, True)).episode_skill == "go right"


def test_retry_after_is_honoured(server):
    a = analyzer(server, "retry-after-1", backoff_s=0.01, timeout_s=30).analyze(make_trajectory(0, 0, 3, True))
    first, second = server.times["retry-after-1"]
    assert a is not None and second - first >= 0.95  # not the 0.01 s backoff


def test_retry_after_is_capped_at_backoff_max(server):
    started = time.monotonic()
    an = analyzer(server, "retry-after-hour", max_retries=2, backoff_max_s=0.05, timeout_s=30)
    assert an.analyze(make_trajectory(0, 0, 3, True)) is None and an.failures == 1
    assert server.calls["retry-after-hour"] == 3 and time.monotonic() - started < 60  # not two hours


def test_retry_after_forms():
    from email.utils import format_datetime
    from datetime import datetime, timedelta, timezone

    from opid_train.analyzers.llm_api import retry_after_s

    assert retry_after_s({"retry-after": "2"}) == 2.0
    assert retry_after_s({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_s({"retry-after": "soon"}) is None and retry_after_s({}) is None
    assert retry_after_s({"retry-after": "nan"}) is None and retry_after_s({"retry-after": "1e999"}) is None
    assert retry_after_s({"retry-after": "-5"}) == 0.0
    date = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    assert 25 <= retry_after_s({"retry-after": date}) <= 31


@pytest.mark.slow
def test_training_goes_on_when_every_reply_is_malformed(server, tmp_path, monkeypatch):
    """`opid-train --algo opid` against an endpoint that only sends HTML pages: counted failures, a finished run."""
    from opid_train.cli.train import main

    monkeypatch.setenv("OPID_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    main(["--env", "tests.train.toy_expert:OPIDTest/KeyDoorExpert-v0", "--env-kwargs", '{"max_steps": 6}',
          "--algo", "opid", "--updates", "1", "--tasks-per-update", "2", "--group-size", "2", "--max-new-tokens", "6",
          "--run-dir", str(run_dir), "--tiny.hidden-size", "32", "--tiny.num-layers", "1", "--tiny.num-heads", "2",
          "--tiny.intermediate-size", "64", "--tiny.vocab-size", "300", "--no-progress", "--no-tensorboard",
          "--warmstart.episodes", "2", "--warmstart.epochs", "1",
          "--analyzer.backend", "openai", "--analyzer.model", "html", "--analyzer.api-key-env", "OPID_TEST_KEY",
          "--analyzer.base-url", f"http://127.0.0.1:{server.server_port}/v1", "--analyzer.max-retries", "1",
          "--analyzer.backoff-s", "0.01"])
    metrics = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert metrics["opid/failed_trajectories"] == 4 and metrics["opid/analysed_trajectories"] == 0
    assert (run_dir / "final").exists() and server.calls["html"] == 4 * 2

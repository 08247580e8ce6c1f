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


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.calls = defaultdict(int)
        self.bodies = defaultdict(list)
        self.auth = set()
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()

    def handle_error(self, request, client_address):
        pass  # the "slow" reply's client has hung up after its timeout: expected


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, code, payload):
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        s, model = self.server, body["model"]
        with s.lock:
            s.calls[model] += 1
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

"""opid-view against a real small run made here (tiny policy, two OPID updates on the toy env, an
evaluation): the data it serves, the export, and the page in headless Chromium driven as a person
would (real mouse clicks and hovers over the DevTools protocol): filter, open a trajectory, read the
analysis, hover a token for its teacher term, compare two runs.

Set OPID_VIEW_SHOTS=docs/view to keep the screenshots (the README shows them)."""

from __future__ import annotations

import base64
import json
import os
import re
import select
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

from opid_train.records import RECORDS_FILE, RecordWriter, read_records
from opid_train.view.app import load_site, serve
from opid_train.view.data import CHUNK, load_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TINY = ["--tiny.hidden-size", "32", "--tiny.num-layers", "1", "--tiny.num-heads", "2", "--tiny.intermediate-size", "64",
        "--tiny.vocab-size", "300", "--no-progress", "--no-tensorboard"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, private_opid_cache):
    """A real OPID run, and a second run of the same tasks whose records differ on one evaluation task."""
    from opid_train.cli.train import main

    root = tmp_path_factory.mktemp("runs")
    main(["--env", "OPIDTest/KeyDoor-v0", "--env-kwargs", '{"max_steps": 3}', "--algo", "opid", "--updates", "2",
          "--tasks-per-update", "2", "--group-size", "2", "--max-new-tokens", "6", "--run-dir", str(root / "opid"),
          "--eval.splits", "test", "--eval.episodes", "3", *TINY])
    # run B: the same run's files with task 1 of the evaluation won, so that the two runs part on one task
    shutil.copytree(root / "opid", root / "other")
    records = read_records(root / "other")
    for r in records:
        if r["phase"] == "eval" and r["task_id"] == 1:
            r["won"], r["score"] = True, 1.0
    (root / "other" / RECORDS_FILE).unlink()
    RecordWriter(root / "other" / RECORDS_FILE).write(records)
    # and run B was resumed once, on another torch
    info = json.loads((root / "other" / "run_info.json").read_text())
    info["resumed"] = [{"argv": [*info["argv"], "--resume"], "started": "2026-12-04T11:00:00Z",
                        "versions": {**info["versions"], "torch": "9.9.9"}}, None]  # a damaged entry is skipped
    (root / "other" / "run_info.json").write_text(json.dumps(info))
    return root / "opid", root / "other"


@pytest.mark.slow
def test_the_data_the_page_reads_and_the_export(runs, tmp_path):
    run = load_run(runs[0])
    assert run.meta["config"]["algo"] == "opid" and [m["update"] for m in run.meta["metrics"]] == [0, 1]
    assert run.meta["run_info"]["versions"]["torch"] and run.meta["evaluations"][0]["name"] == "after RL (eval.json)"
    index = run.index()
    assert len(index) == len(run) == 11 and [s["i"] for s in index] == list(range(11))
    assert {(s["phase"], s["update"], s["label"]) for s in index} == {("train", 0, None), ("train", 1, None),
                                                                      ("eval", None, "final greedy")}
    assert all(s["analysed"] for s in index if s["phase"] == "train")

    site = load_site([str(runs[0]), str(runs[1])])
    assert site.export(tmp_path / "site") == 3 + 1 + 2 * (1 + -(-11 // CHUNK))
    text = (tmp_path / "site" / "data" / "run1-index.js").read_text()
    name, payload = re.fullmatch(r'opidData\("(.+?)", (.*)\);\n', text, re.S).groups()
    assert name == "run1-index" and sum(s["won"] for s in json.loads(payload)) == 1
    assert "<script src=\"app.js\">" in (tmp_path / "site" / "index.html").read_text()
    assert not re.search(r"https?://", (tmp_path / "site" / "app.js").read_text())  # nothing from the network

    from opid_train.view.app import main

    main([str(runs[0]), "--export", str(tmp_path / "cli")])  # the console script's way
    assert sorted(p.name for p in (tmp_path / "cli" / "data").iterdir()) == ["run0-chunk0.js", "run0-index.js", "runs.js"]


@pytest.mark.slow
def test_the_server_listens_on_localhost_and_serves_only_its_files(runs):
    server = serve(load_site([str(runs[0])]), port=0)
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"
        with urllib.request.urlopen(f"http://{host}:{port}/", timeout=10) as resp:
            assert resp.headers["Content-Type"].startswith("text/html") and b"opid-view" in resp.read()
        for bad in ("/../config.yaml", "/data/run9-index.js", "/%2e%2e/records.jsonl.gz"):
            with pytest.raises(urllib.error.HTTPError, match="404"):
                urllib.request.urlopen(f"http://{host}:{port}{bad}", timeout=10)
    finally:
        server.shutdown()


def test_a_missing_run_folder_is_a_clear_error(tmp_path, capsys):
    from opid_train.view.app import main

    with pytest.raises(SystemExit, match="no such run folder"):
        main([str(tmp_path / "nope")])


# -- the page in headless Chromium, over the DevTools protocol on a pipe --------------------------

class Browser:
    """Chromium with --remote-debugging-pipe: commands in on fd 3, replies out on fd 4 (NUL-separated JSON)."""

    def __init__(self, profile: Path, width: int = 1280, height: int = 900):
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()

        def fds():
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
             "--disable-background-networking", "--disable-component-update", "--remote-debugging-pipe",
             f"--user-data-dir={profile}", "about:blank"],
            preexec_fn=fds, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.buffer, self.next_id, self.session = b"", 0, None
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                         "mobile": False})

    def call(self, method: str, params: dict | None = None, timeout: float = 30) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if self.session:
            message["sessionId"] = self.session
        os.write(self.to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self.next_id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply["result"]
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.from_chrome], [], [], left)[0]:
                raise TimeoutError(f"no reply to {method}")
            chunk = os.read(self.from_chrome, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self.buffer += chunk

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait(self, expression: str, timeout: float = 20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"never true: {expression}")

    def goto(self, url: str, view: str):
        self.call("Page.navigate", {"url": url})
        self.wait(f"document.getElementById('main') && document.getElementById('main').dataset.ready === {json.dumps(view)}")

    def center(self, selector: str) -> tuple[float, float]:
        box = self.js(f"(() => {{ const el = document.querySelector({json.dumps(selector)}); el.scrollIntoView({{block: 'nearest'}});"
                      f" const r = el.getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; }})()")
        return box[0], box[1]

    def mouse(self, kind: str, x: float, y: float, **extra):
        self.call("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, **extra})

    def click(self, selector: str):
        x, y = self.center(selector)
        self.mouse("mouseMoved", x, y)
        self.mouse("mousePressed", x, y, button="left", clickCount=1)
        self.mouse("mouseReleased", x, y, button="left", clickCount=1)

    def hover(self, selector: str):
        self.mouse("mouseMoved", *self.center(selector))

    def screenshot(self, path: Path) -> bytes:
        data = base64.b64decode(self.call("Page.captureScreenshot", {"format": "png"})["data"])
        path.write_bytes(data)
        return data

    def close(self):
        self.proc.kill()
        self.proc.wait(timeout=10)
        os.close(self.to_chrome)
        os.close(self.from_chrome)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_a_person_browses_a_run_in_headless_chromium(runs, tmp_path):
    shots = Path(os.environ.get("OPID_VIEW_SHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    opid_records = read_records(runs[0])
    server = serve(load_site([str(runs[0]), str(runs[1])]), port=0)
    url = "http://127.0.0.1:%d/" % server.server_address[1]
    browser = Browser(tmp_path / "profile")
    try:
        # the run: learning curves with a value on hover, the command that made it
        browser.goto(url + "#run", "run")
        assert browser.js("document.querySelectorAll('.chart svg').length") >= 4
        # every y tick label inside its chart and clear of the rotated axis title at x 6-18 (a loss moving
        # by 1e-6 around 0.1 is labelled 1.0000010e-1)
        clipped = browser.js("[...document.querySelectorAll('.chart svg text[text-anchor=end]')]"
                             ".filter(t => t.getBBox().x < 19).map(t => t.textContent)")
        assert clipped == [], clipped
        argv = json.loads((runs[0] / "run_info.json").read_text())["argv"]
        assert browser.js("document.querySelector('pre.command').textContent").startswith(argv[0])
        browser.hover(".chart svg[data-key='loss'] rect.hover")
        tip = browser.wait("!document.getElementById('tip').hidden && document.getElementById('tip').textContent")
        assert re.fullmatch(r"loss at update [12]\nopid: [-\d.e]+\nother: [-\d.e]+", tip), tip
        # run B's card says when it was resumed, with which command, on which other versions
        resumed = browser.js("document.querySelectorAll('.card.run')[1].querySelector('ul.resumed').innerText")
        assert resumed.startswith("started 2026-12-04T11:00:00Z") and f"torch {torch.__version__} → 9.9.9" in resumed
        assert resumed.strip().endswith("--resume") and browser.js("document.querySelectorAll('ul.resumed li').length") == 1
        browser.js("document.querySelector('ul.resumed').scrollIntoView()")
        browser.screenshot(shots / "view-run-resumed.png")
        browser.screenshot(shots / "view-run.png")

        # the evaluation: the final policy's success per split and type, its episodes per task
        browser.goto(url + "#eval", "eval")
        assert "after RL (eval.json)" in browser.js("document.querySelector('table.eval').textContent")
        assert browser.js("document.querySelectorAll('.eps a').length") == 2 * 3

        # the browser: filter to run "opid", training rollouts of update 2, then click the first row
        browser.goto(url + "#browse", "browse")
        assert browser.js("document.getElementById('count').textContent").startswith("22 of 22 trajectories")
        browser.js("(() => { const s = document.querySelector('select[name=run]'); s.value = '0';"
                   " s.dispatchEvent(new Event('change')); })()")
        browser.wait("document.getElementById('main').dataset.ready === 'browse' && location.hash.includes('run=0')")
        browser.js("(() => { const s = document.querySelector('select[name=update]'); s.value = '2';"
                   " s.dispatchEvent(new Event('change')); })()")
        browser.wait("location.hash.includes('update=2') && document.getElementById('main').dataset.ready === 'browse'")
        assert browser.js("document.getElementById('count').textContent").startswith("4 of 22")
        browser.screenshot(shots / "view-browse.png")
        browser.click("#trajectories tr.click")
        browser.wait("document.getElementById('main').dataset.ready === 'traj'")

        # the trajectory as a conversation, OPID's analysis, the response tokens coloured by the teacher term
        record = next(r for r in opid_records if r["phase"] == "train" and r["update"] == 1)
        text = browser.js("document.getElementById('main').innerText")
        assert record["analysis"]["episode_skill"] in text and record["task"] in text
        assert browser.js("document.querySelectorAll('.bubble.agent').length") == len(record["steps"])
        tokens = browser.js("[...document.querySelectorAll('.bubble.agent')[0].querySelectorAll('.tok')].map(t => "
                            "[t.textContent, +t.dataset.v, getComputedStyle(t).backgroundColor])")
        step = record["steps"][0]
        component = next(iter(step["teacher"]))
        assert [t[0] for t in tokens] == step["tokens"] and [t[1] for t in tokens] == step["teacher"][component]
        for _, value, colour in tokens:  # red pushed down, green pushed up
            assert colour.startswith("rgba(22, 163, 74" if value > 0 else "rgba(220, 38, 38" if value < 0 else "rgba(0, 0, 0, 0)")
        strongest = max(range(len(tokens)), key=lambda j: abs(tokens[j][1]))
        browser.hover(f".bubble.agent .tok:nth-of-type({strongest + 1})")
        tip = browser.wait("!document.getElementById('tip').hidden && document.getElementById('tip').textContent")
        assert f"teacher term {tokens[strongest][1]:+g}" in tip
        browser.screenshot(shots / "view-trajectory.png")

        # two runs on the same tasks: the task where they part comes first; a click shows both
        browser.goto(url + "#compare", "compare")
        assert "1 with different outcomes" in browser.js("document.getElementById('summary').textContent").replace("\n", " ")
        first = browser.js("[...document.querySelectorAll('#pairs tr.click')].map(tr => tr.classList.contains('differ'))")
        assert first[0] and not any(first[1:])
        assert browser.js("document.querySelector('#pairs tr.click td:nth-child(3)').textContent") == "1"
        browser.screenshot(shots / "view-compare.png")
        browser.click("#pairs tr.click td:nth-child(2)")
        browser.wait("document.getElementById('main').dataset.ready === 'pair'")
        sides = browser.js("[...document.querySelectorAll('.pair > div h2')].map(h => h.textContent)")
        assert len(sides) == 2 and "lost" in sides[0] and "won" in sides[1]
    finally:
        browser.close()
        server.shutdown()
    data = (shots / "view-trajectory.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"

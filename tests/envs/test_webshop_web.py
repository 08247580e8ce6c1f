"""The human web page: routes through flask's client, and the real page in headless Chromium."""

import shutil
import struct
import subprocess
import threading
import urllib.parse
import urllib.request

import pytest

pytest.importorskip("flask")
pytest.importorskip("bm25s")

from werkzeug.serving import make_server  # noqa: E402

from opid_envs.webshop.web import create_app  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
GOAL = {"split": "test", "task_id": "0"}


@pytest.fixture(scope="module")
def app():
    return create_app({"nouns": "fallback"})


def play_to_the_end(post, get, url):
    """Shop the goal the way the env's expert would, through the page's forms."""
    from opid_envs.webshop.env import WebShopEnv

    expert = WebShopEnv(nouns="fallback")
    expert.reset(options={"split": "test", "task_id": 0})
    pages = {}
    while True:
        action = expert.expert_action()
        _, _, terminated, _, info = expert.step(action)
        if action.startswith("search["):
            post(url, {"query": action[len("search["):-1]})
        else:
            post(url, {"action": action})
        pages[info["page"]] = get(url)
        if terminated:
            return pages


def test_routes_play_a_goal_to_its_score(app):
    client = app.test_client()
    assert b"Start shopping" in client.get("/").data
    start = client.post("/start", data=GOAL)
    assert start.status_code == 303
    url = start.headers["Location"]
    search_page = client.get(url).data.decode()
    assert 'name="query"' in search_page and "Instruction:" in search_page

    client.post(url, data={"action": "click[nowhere]"})
    assert "Invalid action: nothing is clickable on the search page" in client.get(url).data.decode()

    pages = play_to_the_end(lambda u, d: client.post(u, data=d), lambda u: client.get(u).data.decode(), url)
    assert 'id="results-page"' in pages["results"] and 'class="asin"' in pages["results"]
    assert 'id="item-page"' in pages["item"] and "Buy Now" in pages["item"] and 'class="option selected"' in pages["item"]
    assert 'id="score">1.00<' in pages["done"] and "goal achieved" in pages["done"]
    client.post(url, data={"action": "click[buy now]"})  # after the end: ignored, still the score page
    assert 'id="score">1.00<' in client.get(url).data.decode()


def test_bad_requests_are_clear(app):
    client = app.test_client()
    assert client.get("/play/unknown").status_code == 404
    bad = client.post("/start", data={"split": "test", "task_id": "100000"})
    assert bad.status_code == 400 and b"task_id must be an int" in bad.data
    assert client.post("/start", data={"split": "nope"}).status_code == 400


@pytest.fixture(scope="module")
def server(app):
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


def http_post(url, data):
    with urllib.request.urlopen(url, data=urllib.parse.urlencode(data).encode(), timeout=30) as resp:
        return resp.geturl(), resp.read().decode()


def http_get(url):
    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.read().decode()


def chromium(tmp_path, url, *flags):
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", *flags, url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_page_in_headless_chromium(server, tmp_path):
    url, _ = http_post(server + "/start", GOAL)
    dom = chromium(tmp_path, url, "--dump-dom")
    assert '<input type="text" name="query"' in dom and 'id="agent-view"' in dom

    pages = play_to_the_end(lambda u, d: http_post(u, d), lambda u: chromium(tmp_path, u, "--dump-dom"), url)
    assert pages["results"].count('class="result"') == 10
    item = pages["item"]
    assert 'id="item-page"' in item and 'value="click[buy now]"' in item and 'class="option selected"' in item
    assert 'id="score">1.00<' in pages["done"]

    # A screenshot of the finished page: a real PNG of the requested size, with the page's colors.
    shot = tmp_path / "page.png"
    chromium(tmp_path, url, f"--screenshot={shot}", "--window-size=1024,768", "--hide-scrollbars")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (1024, 768)
    pil = pytest.importorskip("PIL.Image")
    image = pil.open(shot).convert("RGB")
    assert image.getpixel((5, 5)) == (0x23, 0x2F, 0x3E)  # the header bar
    assert len(image.resize((256, 192)).getcolors(maxcolors=1 << 16)) > 20  # text and buttons, not a blank page

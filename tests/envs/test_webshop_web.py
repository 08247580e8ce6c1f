"""The human web page: routes through flask's client, and the real page in headless Chromium."""

import os
import re
import shutil
import socket
import sys
from pathlib import Path
import struct
import subprocess
import threading
import time
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
    """Shop the goal the way the env's expert would, through the page's forms (a search is a GET URL)."""
    from opid_envs.webshop.env import WebShopEnv

    expert = WebShopEnv(nouns="fallback")
    expert.reset(options={"split": "test", "task_id": 0})
    pages = {}
    while True:
        action = expert.expert_action()
        _, _, terminated, _, info = expert.step(action)
        if action.startswith("search["):
            pages["search_url"] = url + "/search?" + urllib.parse.urlencode({"q": action[len("search["):-1]})
            pages["results"] = get(pages["search_url"])
            continue
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
    assert 'name="q"' in search_page and "Instruction:" in search_page

    client.post(url, data={"action": "click[nowhere]"})
    assert "Invalid action: nothing is clickable on the search page" in client.get(url).data.decode()

    pages = play_to_the_end(lambda u, d: client.post(u, data=d), lambda u: client.get(u).data.decode(), url)
    assert 'id="results-page"' in pages["results"] and 'class="title-link"' in pages["results"]
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
    assert '<input type="text" name="q"' in dom and 'id="agent-view"' in dom

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


def test_products_open_through_their_titles(app):
    client = app.test_client()
    url = client.post("/start", data=GOAL).headers["Location"]
    page = client.get(url + "/search?q=wireless+earbuds").data.decode()
    buttons = re.findall(r'<button class="title-link" name="action" value="click\[(\w+)\]">([^<]+)</button>', page)
    assert len(buttons) == 10 and all("Wireless Earbuds" in title for _, title in buttons[:3])
    asin, title = buttons[0]
    client.post(url, data={"action": f"click[{asin}]"})
    item = client.get(url).data.decode()
    assert 'id="item-page"' in item and f'<h2 class="title">{title}</h2>' in item


def test_a_search_is_a_bookmarkable_url_and_a_reload_costs_no_step(app):
    client = app.test_client()
    url = client.post("/start", data=GOAL).headers["Location"]
    search_page = client.get(url).data.decode()
    assert re.search(r'<form method="get" action="/play/[\w-]+/search" id="search-form">', search_page)
    bookmark = url + "/search?q=wireless%20earbuds"
    first = client.get(bookmark)
    assert first.status_code == 200 and "results for “wireless earbuds”" in first.data.decode()
    assert "step 1 of" in first.data.decode()
    again = client.get(bookmark).data.decode()
    assert "results for “wireless earbuds”" in again and "step 1 of" in again  # no second search step
    client.post(url, data={"action": "click[back to search]"})
    other = client.get(url + "/search?q=bluetooth+speaker").data.decode()
    assert "results for “bluetooth speaker”" in other and "step 3 of" in other


def test_an_expired_session_is_a_styled_page_with_a_way_home(app):
    client = app.test_client()
    for path in ("/play/expired", "/play/expired/search?q=x"):
        page = client.get(path)
        assert page.status_code == 404
        html = page.data.decode()
        assert "<header>" in html and 'id="expired"' in html and "This shopping session has expired" in html
        assert '<form method="get" action="/"><button class="primary" type="submit">Start a new goal</button>' in html
    assert client.post("/play/expired", data={"action": "click[buy now]"}).status_code == 404


@pytest.mark.slow
def test_the_server_says_what_it_builds_before_serving(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
               OPID_CACHE=str(tmp_path / "cache"))
    proc = subprocess.Popen([sys.executable, "-m", "opid_envs.webshop.web", "--port", str(port), "--num-products", "300"],
                            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith("Building the store from 300 generated products: catalog, search index and shopping goals")
        ready = proc.stdout.readline()
        assert re.match(rf"Store ready in \d+ s: open http://127.0.0.1:{port}/", ready), ready
        for _ in range(50):  # the server is up once flask has bound the port
            try:
                assert "Start shopping" in http_get(f"http://127.0.0.1:{port}/")
                break
            except OSError:
                time.sleep(0.2)
        else:
            raise AssertionError("the server never answered")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_screenshots_of_results_and_expired_pages(server, tmp_path):
    url, _ = http_post(server + "/start", GOAL)
    shots = {}
    for name, page in (("results", url + "/search?q=long+lasting+lipstick"), ("expired", server + "/play/expired")):
        shots[name] = tmp_path / f"{name}.png"
        chromium(tmp_path, page, f"--screenshot={shots[name]}", "--window-size=1024,900", "--hide-scrollbars")
    if os.environ.get("OPID_SCREENSHOTS"):  # to look at them
        for name, shot in shots.items():
            shutil.copy(shot, Path(os.environ["OPID_SCREENSHOTS"]) / shot.name)
    pil = pytest.importorskip("PIL.Image")
    results = pil.open(shots["results"]).convert("RGB")
    colors = {c for _, c in results.getcolors(maxcolors=1 << 20)}
    assert (0x00, 0x71, 0x85) in colors  # title links in the link colour
    assert (0xB1, 0x27, 0x04) in colors  # prices
    expired = pil.open(shots["expired"]).convert("RGB")
    assert expired.getpixel((5, 5)) == (0x23, 0x2F, 0x3E)  # the store's header, not a bare error page
    assert (0xFF, 0xD8, 0x14) in {c for _, c in expired.getcolors(maxcolors=1 << 20)}  # the yellow button home
    dom = chromium(tmp_path, url + "/search?q=long+lasting+lipstick", "--dump-dom")
    titles = re.findall(r'class="title-link"[^>]*>([^<]+)<', dom)
    assert len(titles) == 10 and all("Lipstick" in t for t in titles)  # no hair dryer among the lipsticks
    assert not any(re.search(r"Lipstick.*Fl Oz", t) for t in titles)

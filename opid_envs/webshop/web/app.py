"""The store as a web page for people, driven by the same engine as the env.

Every browser session owns a `WebShopEnv`; a search box or a button sends exactly the action an
agent would send (`search[...]`, `click[...]`) to `env.step`, and the page shows both the HTML
view and the text observation the agent gets. A search is a GET URL (`/play/<sid>/search?q=...`),
so it can be bookmarked or reloaded without spending another step. Served on 127.0.0.1 by default:

    python -m opid_envs.webshop.web [--port 8000] [--num-products 1000]
"""

from __future__ import annotations

import secrets
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from opid_envs.core import require
from opid_envs.webshop.env import WebShopEnv
from opid_envs.webshop.pages import ITEM, RESULTS, SEARCH, SUB_PAGES


def create_app(env_kwargs: dict[str, Any] | None = None, max_sessions: int = 256):
    flask = require("flask", "webshop")
    app = flask.Flask(__name__, template_folder=str(Path(__file__).parent))
    env_kwargs = dict(env_kwargs or {})
    WebShopEnv(**env_kwargs)  # build (or fetch) the shared store now, not on the first visitor
    sessions: OrderedDict[str, dict[str, Any]] = OrderedDict()
    lock = threading.Lock()

    def get_session(sid: str) -> dict[str, Any]:
        with lock:
            if sid not in sessions:
                flask.abort(404, description="This shopping session has expired; start a new one.")
            sessions.move_to_end(sid)
            return sessions[sid]

    @app.get("/")
    def index():
        env = WebShopEnv(**env_kwargs)
        return flask.render_template("index.html", splits=env.splits,
                                     counts={s: env.num_tasks(s) for s in env.splits})

    @app.post("/start")
    def start():
        form = flask.request.form
        env = WebShopEnv(**env_kwargs)
        split = form.get("split") or env.splits[0]
        options: dict[str, Any] = {"split": split}
        task_id = (form.get("task_id") or "").strip()
        try:
            if task_id:
                options["task_id"] = int(task_id)
            obs, info = env.reset(seed=secrets.randbelow(1 << 31), options=options)
        except ValueError as exc:
            return flask.render_template("index.html", splits=env.splits, error=str(exc),
                                         counts={s: env.num_tasks(s) for s in env.splits}), 400
        sid = secrets.token_urlsafe(12)
        with lock:
            sessions[sid] = {"env": env, "observation": obs, "info": info, "reward": 0.0, "done": False}
            while len(sessions) > max_sessions:
                sessions.popitem(last=False)
        return flask.redirect(flask.url_for("play", sid=sid), code=303)

    @app.errorhandler(404)
    def not_found(error):
        return flask.render_template("expired.html", description=error.description), 404

    def render(sid: str, state: dict[str, Any], message: str = ""):
        env: WebShopEnv = state["env"]
        s = env.session
        if not message and not state["info"].get("action_valid", True):
            message = state["observation"].split("\n")[0]
        return flask.render_template(
            "play.html", sid=sid, state=state, session=s, info=state["info"], env=env,
            hits=[env.store.products[i] for i in s.page_hits()] if s.page == RESULTS else [],
            product=s.product if s.page == ITEM or s.page in SUB_PAGES else None, message=message)

    @app.get("/play/<sid>")
    def play(sid: str):
        return render(sid, get_session(sid))

    @app.get("/play/<sid>/search")
    def search(sid: str):
        """A bookmarkable search: steps search[q] from the search page; showing the same results
        again (a reload) costs no step."""
        state = get_session(sid)
        query = " ".join(flask.request.args.get("q", "").split())
        s = state["env"].session
        if not query or state["done"]:
            return flask.redirect(flask.url_for("play", sid=sid), code=303)
        if s.page == RESULTS and s.query == query:
            return render(sid, state)
        if s.page != SEARCH:
            return render(sid, state, "Searching starts from the search page: click Back to Search first.")
        with lock:
            obs, reward, terminated, truncated, info = state["env"].step(f"search[{query}]")
            state.update(observation=obs, info=info, reward=reward, done=terminated or truncated)
        return render(sid, state)

    @app.post("/play/<sid>")
    def act(sid: str):
        state = get_session(sid)
        form = flask.request.form
        action = f"search[{form['query']}]" if "query" in form else form.get("action", "")
        with lock:
            if not state["done"]:
                obs, reward, terminated, truncated, info = state["env"].step(action)
                state.update(observation=obs, info=info, reward=reward, done=terminated or truncated)
        return flask.redirect(flask.url_for("play", sid=sid), code=303)

    return app


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Browse the OPID WebShop store in a web browser.")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: local only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--num-products", type=int, default=1000)
    parser.add_argument("--items-path", help="official items_shuffle*.json (optional)")
    parser.add_argument("--attributes-path", help="official items_ins_v2*.json (optional)")
    args = parser.parse_args(argv)
    source = args.items_path or f"{args.num_products} generated products"
    print(f"Building the store from {source}: catalog, search index and shopping goals "
          "(about 20 s for 1,000 products) ...", flush=True)
    start = time.monotonic()
    app = create_app({"num_products": args.num_products, "items_path": args.items_path,
                      "attributes_path": args.attributes_path})
    print(f"Store ready in {time.monotonic() - start:.0f} s: open http://{args.host}:{args.port}/", flush=True)
    sys.stdout.flush()
    app.run(host=args.host, port=args.port, threaded=True)

"""opid-view: a local page to look inside runs: config and learning curves, evaluation per split
and task type, every recorded trajectory step by step, OPID's analysis and per-token teacher term,
and two runs side by side on the same tasks.

    opid-view runs/alf-grpo runs/alf-opid               # serves http://127.0.0.1:8765
    opid-view runs/alf-opid --export site/               # the same pages as static files

The page is plain HTML, CSS and JavaScript shipped in this package (no CDN: it works offline).
Its data are small scripts (`data/*.js`, each calling `opidData(name, payload)`), served here from
memory and written as files by --export, so the exported folder opens from any static server or
straight from disk (file://).
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Callable

from opid_train.cli import ArgumentParser
from opid_train.view.data import RunData, load_run, run_names

ASSETS = {"index.html": "text/html", "app.js": "text/javascript", "app.css": "text/css"}


def asset(name: str) -> bytes:
    return resources.files("opid_train.view").joinpath(name).read_bytes()


def data_script(name: str, payload) -> bytes:
    """A data file: a script that hands `payload` to the page (works over http and from file://)."""
    return f"opidData({json.dumps(name)}, {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))});\n".encode()


class Site:
    """Every file of the page: the assets, runs.js, and per run its index and its chunks."""

    def __init__(self, runs: list[RunData]):
        self.runs = runs

    def files(self) -> dict[str, Callable[[], bytes]]:
        out: dict[str, Callable[[], bytes]] = {name: (lambda n=name: asset(n)) for name in ASSETS}
        out["data/runs.js"] = lambda: data_script("runs", [r.meta for r in self.runs])
        for k, run in enumerate(self.runs):
            out[f"data/run{k}-index.js"] = lambda r=run, k=k: data_script(f"run{k}-index", r.index())
            for c in range((len(run) + run.meta["chunk_size"] - 1) // run.meta["chunk_size"]):
                out[f"data/run{k}-chunk{c}.js"] = lambda r=run, k=k, c=c: data_script(f"run{k}-chunk{c}", r.chunk(c))
        return out

    def export(self, folder: Path) -> int:
        folder.mkdir(parents=True, exist_ok=True)
        if (folder / "data").is_dir():
            shutil.rmtree(folder / "data")
        (folder / "data").mkdir()
        files = self.files()
        for name, make in files.items():
            (folder / name).write_bytes(make())
        return len(files)


def make_handler(site: Site):
    files = site.files()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the stdlib's name)
            name = self.path.split("?", 1)[0].split("#", 1)[0].lstrip("/") or "index.html"
            if name not in files:
                self.send_error(404, "no such page")
                return
            body = files[name]()
            suffix = name.rsplit(".", 1)[-1]
            self.send_response(200)
            self.send_header("Content-Type", {"html": "text/html", "css": "text/css"}.get(suffix, "text/javascript")
                             + "; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):  # quiet: a page load is dozens of requests
            pass

    return Handler


def serve(site: Site, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """A started server (in a daemon thread); port 0 picks a free one (server.server_address)."""
    server = ThreadingHTTPServer((host, port), make_handler(site))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def load_site(paths: list[str]) -> Site:
    folders = [Path(p) for p in paths]
    return Site([load_run(p, name) for p, name in zip(folders, run_names(folders))])


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="opid-view", description=__doc__)
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (or records files) to show")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8765, help="port to serve on (0: any free port)")
    parser.add_argument("--export", metavar="DIR", help="write the pages as static files to DIR instead of serving")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    try:
        site = load_site(args.runs)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"opid-view: {exc}") from None
    counts = ", ".join(f"{r.name}: {len(r)} trajectories" for r in site.runs)
    print(f"loaded {counts} in {time.monotonic() - t0:.1f} s", flush=True)
    if args.export:
        n = site.export(Path(args.export))
        print(f"wrote {n} files to {args.export} (open {Path(args.export) / 'index.html'})")
        return
    try:
        server = serve(site, args.host, args.port)
    except OSError as exc:
        raise SystemExit(f"opid-view: cannot listen on {args.host}:{args.port} ({exc}); try --port 0") from None
    host, port = server.server_address[:2]
    print(f"opid-view: http://{host}:{port}/  (Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.shutdown()
        sys.exit(0)


if __name__ == "__main__":
    main()

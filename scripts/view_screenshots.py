"""Screenshots of opid-view's main views for the docs, from real runs, in headless Chromium.

    python scripts/view_screenshots.py runs/alf-grpo runs/alf-opid --out docs/view

Writes run.png (curves), eval.png, browse.png, trajectory.png (the first analysed trajectory of the
last run, tokens coloured by the teacher term, one token hovered) and compare.png.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opid_train.cli import ArgumentParser  # noqa: E402
from opid_train.view.app import load_site, serve  # noqa: E402
from tests.test_view import Browser  # noqa: E402  (the DevTools-pipe driver the page's test uses)


def main(argv=None) -> None:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("runs", nargs="+", help="run folders to show (the last one's trajectory is shot)")
    parser.add_argument("--out", default="docs/view", help="folder the PNG files are written to")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    site = load_site(args.runs)
    last = len(site.runs) - 1
    analysed = next((s["i"] for s in site.runs[last].index() if s["analysed"]), 0)
    server = serve(site, port=0)
    url = "http://127.0.0.1:%d/" % server.server_address[1]
    with tempfile.TemporaryDirectory() as profile:
        browser = Browser(Path(profile), width=1280, height=1000)
        try:
            browser.goto(url + "#run", "run")
            browser.hover(".chart svg[data-key='loss'] rect.hover")
            browser.screenshot(out / "run.png")
            browser.goto(url + "#eval", "eval")
            browser.screenshot(out / "eval.png")
            browser.goto(url + "#browse", "browse")
            browser.screenshot(out / "browse.png")
            browser.goto(url + f"#traj?run={last}&i={analysed}", "traj")
            strongest = browser.js("(() => { const t = [...document.querySelectorAll('.bubble.agent')[0].querySelectorAll('.tok')];"
                                   " return 1 + t.reduce((b, el, j) => Math.abs(+el.dataset.v) > Math.abs(+t[b].dataset.v) ? j : b, 0); })()")
            browser.hover(f".bubble.agent .tok:nth-of-type({strongest})")
            browser.screenshot(out / "trajectory.png")
            if len(site.runs) > 1:
                browser.goto(url + "#compare", "compare")
                browser.screenshot(out / "compare.png")
        finally:
            browser.close()
            server.shutdown()
    print(f"screenshots in {out}")


if __name__ == "__main__":
    main()

"""OPID/WebShop-v0: WebShop's text protocol and score in one process (see `env.py`).

catalog.py (products: generator and official-file loader) -> search.py (BM25) -> goals.py
(instructions) -> store.py (one shared catalog + index + goals per process) -> pages.py (the
page state machine) -> reward.py (the WebShop score) -> env.py (the Gymnasium env and its
expert); web/ serves the same engine to people in a browser.
"""

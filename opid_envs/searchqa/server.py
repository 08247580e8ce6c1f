"""A retrieval HTTP server speaking Search-R1's `/retrieve` API, on the standard library.

POST /retrieve  {"queries": [str, ...] | "query": str, "topk": int, "return_scores": bool}
            ->  {"result": [[{"document": {"id": str, "contents": "\\"Title\\"\\ntext"}, "score": float}, ...], ...]}
                (without return_scores each entry is the document itself, as in Search-R1)
GET  /health    {"status": "ok", "backend": ..., "documents": N}

Binds 127.0.0.1 unless told otherwise. Every bad request gets a 4xx with a one-line JSON error:
400 malformed JSON (invalid, nested too deeply, a number too long), fields or Content-Length,
411 no Content-Length, 413 body or batch too large, 404/405 wrong path or method, and the
standard library's own 400/414/431 (and 405 for an unknown method) for a broken request line or headers. A failing search
answers 500 and the server keeps serving. A client that hangs up costs one log line, not a
traceback. The listen backlog (128) holds the connections of many clients opening at once.

    python -m opid_envs.searchqa.server --dataset synthetic --backend bm25 --port 8000
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import socket
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opid_envs.core import clean_text
from opid_envs.searchqa.retrieval import MAX_QUERY_CHARS, Retriever

log = logging.getLogger(__name__)
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() accepts "²", which int() refuses


@dataclass
class ServerLimits:
    max_body_bytes: int = 1 << 20
    max_batch: int = 512
    max_topk: int = 100
    socket_timeout_s: float = 15.0


class _Handler(BaseHTTPRequestHandler):
    server: "RetrievalServer"
    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.0"  # not 0.9: a garbled request line still gets a status line and headers

    def setup(self):
        self.timeout = self.server.limits.socket_timeout_s  # a stalled client cannot hold a thread forever
        super().setup()
        # headers and body leave in separate writes; without this, Nagle's algorithm and delayed
        # ACKs hold every keep-alive answer back ~40 ms
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format, *args):  # quiet: one line per request would swamp benchmarks
        if self.server.verbose:
            super().log_message(format, *args)

    def _send(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, close: bool = False) -> None:
        self.close_connection = self.close_connection or close
        self._send(status, {"error": message})

    def send_error(self, code, message=None, explain=None):
        """The standard library's errors (bad request line, headers) as one-line JSON, like ours."""
        self.close_connection = True
        if code == 501:  # an unknown method is the client's error
            code, message = 405, f"unsupported method {self.command[:20]!r}; use GET or POST"
        try:
            self._send(code, {"error": " ".join(str(message or self.responses.get(code, ("error",))[0]).split())})
        except OSError:
            pass  # the client is gone

    def do_GET(self):
        if self.path == "/health":
            self._send(200, {"status": "ok", "backend": self.server.retriever.name,
                             "documents": len(getattr(self.server.retriever, "corpus", ()))})
        elif self.path == "/retrieve":
            self._error(405, "use POST for /retrieve")
        else:
            self._error(404, f"no such path {self.path[:200]!r}")

    def do_POST(self):
        if self.path != "/retrieve":
            self._error(404, f"no such path {self.path[:200]!r}", close=True)
            return
        limits = self.server.limits
        length = self.headers.get("Content-Length")
        if length is None:
            self._error(411, "a Content-Length header is required", close=True)
            return
        if not _DIGITS.fullmatch(length.strip()):
            self._error(400, f"Content-Length must be a byte count, got {length[:40]!r}", close=True)
            return
        length = int(length) if len(length.strip()) <= 18 else 1 << 62  # int() refuses 4,300+ digits
        if length > limits.max_body_bytes:
            self._drain(length)
            self._error(413, f"request body of {length} bytes exceeds the limit of {limits.max_body_bytes}", close=True)
            return
        try:
            body = self.rfile.read(length)
        except OSError:  # the client hung up or stalled past the socket timeout
            self.close_connection = True
            return
        if len(body) < length:  # the client hung up mid-body: nobody to answer
            self.close_connection = True
            return
        try:
            request = json.loads(body)
        except RecursionError:
            self._error(400, "malformed JSON: nested too deeply")
            return
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, a number over Python's digit limit
            self._error(400, f"malformed JSON: {' '.join(str(exc).split())[:200]}")
            return
        parsed = self._parse(request)
        if isinstance(parsed, tuple) and isinstance(parsed[0], int):
            self._error(*parsed)
            return
        queries, topk, return_scores = parsed
        try:
            rows = self.server.retriever.batch_search(queries, topk)
        except Exception as exc:  # the server must outlive a failing backend
            self._error(500, f"retrieval failed: {type(exc).__name__}: {exc}")
            return
        result = []
        for hits in rows:
            docs = [{"id": str(h.doc_id), "contents": h.document.contents} for h in hits]
            result.append([{"document": d, "score": h.score} for d, h in zip(docs, hits)] if return_scores else docs)
        self._send(200, {"result": result})

    def _parse(self, request):
        limits = self.server.limits
        if not isinstance(request, dict):
            return 400, "the body must be a JSON object"
        if "queries" in request:
            queries = request["queries"]
        elif "query" in request:
            queries = [request["query"]]
        else:
            return 400, "give 'queries' (a list of strings) or 'query' (a string)"
        if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
            return 400, "'queries' must be a list of strings"
        if len(queries) > limits.max_batch:
            return 413, f"{len(queries)} queries exceed the batch limit of {limits.max_batch}"
        topk = request.get("topk", 3)
        if isinstance(topk, bool) or not isinstance(topk, int) or not 1 <= topk <= limits.max_topk:
            return 400, f"'topk' must be an integer in [1, {limits.max_topk}]"
        return_scores = request.get("return_scores", False)
        if not isinstance(return_scores, bool):
            return 400, "'return_scores' must be true or false"
        return [clean_text(q[:MAX_QUERY_CHARS]) for q in queries], topk, return_scores

    def _drain(self, length: int) -> None:
        """Read (and drop) a too-large body, up to a bound, so the client gets to read the 413."""
        remaining = min(length, 8 * self.server.limits.max_body_bytes)
        try:
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 16))
                if not chunk:
                    break
                remaining -= len(chunk)
        except OSError:
            pass


class RetrievalServer(ThreadingHTTPServer):
    """A threaded server around one `Retriever`; `serve_in_background()` for tests and notebooks."""

    daemon_threads = True
    request_queue_size = 128  # the listen backlog: the default 5 reset connections of 32 clients

    def __init__(self, retriever: Retriever, host: str = "127.0.0.1", port: int = 8000,
                 limits: ServerLimits | None = None, verbose: bool = False):
        self.retriever, self.limits, self.verbose = retriever, limits or ServerLimits(), verbose
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/retrieve"

    def handle_error(self, request, client_address):
        """One line per failed connection (a client that hung up is routine); the traceback only when verbose."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            log.debug("client %s: %s", client_address, error)
        else:
            log.error("request from %s failed: %s: %s", client_address, type(error).__name__, error,
                      exc_info=self.verbose)

    def serve_in_background(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="retrieval-server", daemon=True)
        thread.start()
        return thread


def main(argv: list[str] | None = None) -> None:
    from opid_envs.searchqa.corpus import load_jsonl_corpus
    from opid_envs.searchqa.datasets import load_dataset
    from opid_envs.searchqa.retrieval import BACKENDS, make_retriever

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="synthetic", help="whose corpus to serve: synthetic, fanoutqa")
    parser.add_argument("--corpus", help="a wiki-18 style JSONL corpus instead of a dataset's")
    parser.add_argument("--backend", default="bm25", choices=BACKENDS)
    parser.add_argument("--host", default="127.0.0.1", help="127.0.0.1 by default; 0.0.0.0 exposes the server")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-body-bytes", type=int, default=ServerLimits.max_body_bytes)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        corpus = load_jsonl_corpus(args.corpus) if args.corpus else load_dataset(args.dataset).corpus
    except (OSError, ValueError) as exc:  # missing or malformed file, unknown dataset, missing data package
        parser.error(str(exc))
    retriever = make_retriever(args.backend, corpus, progress=True)
    server = RetrievalServer(retriever, args.host, args.port, ServerLimits(max_body_bytes=args.max_body_bytes),
                             verbose=args.verbose)
    print(f"serving {len(corpus)} documents ({args.backend}) at {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()

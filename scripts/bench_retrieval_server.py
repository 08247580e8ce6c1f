"""Our standard-library /retrieve server against the same API on FastAPI + uvicorn (Search-R1's stack).

    python scripts/bench_retrieval_server.py                  # 32 clients x 100 requests per mode
    PYTHONPATH=/path/with/fastapi python scripts/bench_retrieval_server.py --clients 32 --requests 400

Both serve one BM25 index of the synthetic corpus from a subprocess on 127.0.0.1. Three loads:
keep-alive clients (how `HTTPRetriever` talks), a fresh connection per request (how curl and
`requests.post` without a session talk), and the malformed requests of `malformed_requests()`.
Printed: requests/s, median and p99 latency, lost requests (no answer or not a 200), and how
many malformed requests got a 4xx with a one-line JSON reason. FastAPI + uvicorn are not opid
dependencies: without them only the standard-library server is measured.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time


def malformed_requests() -> dict[str, bytes]:
    """Raw HTTP requests that must each get a 4xx with a one-line reason (issue #20's catalogue and more)."""

    def post(body: bytes, length: bytes | None = None, extra: bytes = b"") -> bytes:
        length = str(len(body)).encode() if length is None else length
        return (b"POST /retrieve HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" + extra +
                b"Content-Length: " + length + b"\r\n\r\n" + body)

    return {
        "invalid JSON": post(b"{not json"),
        "invalid UTF-8": post(b"\xff\xfe\x00garbage"),
        "top-level array": post(b"[1, 2]"),
        "no queries": post(b'{"topk": 3}'),
        "queries a string": post(b'{"queries": "a string"}'),
        "queries numbers": post(b'{"queries": [1, 2]}'),
        "topk 0": post(b'{"query": "x", "topk": 0}'),
        "topk true": post(b'{"query": "x", "topk": true}'),
        "topk NaN": post(b'{"queries": ["x"], "topk": NaN}'),
        "topk 5,000 digits": post(b'{"queries": ["x"], "topk": ' + b"9" * 5000 + b"}"),
        "return_scores a string": post(b'{"queries": ["x"], "return_scores": "yes"}'),
        "50k-deep JSON": post(b'{"queries": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"),
        "Content-Length: superscript two": post(b"{}", "²".encode()),
        "Content-Length: -1": post(b"{}", b"-1"),
        "Content-Length: abc": post(b"{}", b"abc"),
        "Content-Length: 5,000 digits": post(b"{}", b"9" * 5000),
        "body over the limit": post(b'{"queries": ["' + b"x" * (2 << 20) + b'"]}'),
        "no Content-Length": b"POST /retrieve HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "wrong path": post(b"{}").replace(b"/retrieve", b"/nope", 1),
        "GET /retrieve": b"GET /retrieve HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "unknown method": b"BREW /retrieve HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "not HTTP": b"\x00\x01garbage\r\n\r\n",
        "request line 70 KB": b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "200 headers": b"GET /health HTTP/1.1\r\n" + b"X-A: b\r\n" * 200 + b"\r\n",
        "batch of 100,000": post(json.dumps({"queries": ["x"] * 100_000}).encode()),
    }


def exchange(host: str, port: int, data: bytes, timeout: float = 20.0) -> tuple[int | None, bytes]:
    """Send raw bytes, read the answer until the server closes: (status or None, body)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server answered (413) and closed before reading all we sent: read its answer
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
    head, _, body = answer.partition(b"\r\n\r\n")
    try:
        return int(head.split()[1]), body
    except (IndexError, ValueError):
        return None, answer


def one_line_4xx(status: int | None, body: bytes) -> bool:
    """A 4xx whose body is JSON holding one line of reason (our "error", FastAPI's "detail")."""
    if status is None or not 400 <= status < 500:
        return False
    try:
        payload = json.loads(body)
    except ValueError:
        return False
    reason = payload.get("error", payload.get("detail")) if isinstance(payload, dict) else None
    text = reason if isinstance(reason, str) else json.dumps(reason)
    return bool(reason) and "\n" not in text and len(text) < 400


# -- the FastAPI + uvicorn server, Search-R1's shape, over the same retriever -----------------------
def serve_fastapi(port: int) -> None:
    import uvicorn
    from fastapi import FastAPI
    from pydantic import BaseModel

    from opid_envs.searchqa.datasets import load_dataset
    from opid_envs.searchqa.retrieval import make_retriever

    retriever = make_retriever("bm25", load_dataset("synthetic").corpus)
    app = FastAPI()

    class QueryRequest(BaseModel):
        queries: list[str]
        topk: int = 3
        return_scores: bool = False

    def retrieve(request):  # a sync endpoint, as Search-R1's: uvicorn runs it in its thread pool
        rows = retriever.batch_search(request.queries, request.topk)
        docs = [[{"id": str(h.doc_id), "contents": h.document.contents} for h in hits] for hits in rows]
        if not request.return_scores:
            return {"result": docs}
        return {"result": [[{"document": d, "score": h.score} for d, h in zip(ds, hits)]
                           for ds, hits in zip(docs, rows)]}

    retrieve.__annotations__["request"] = QueryRequest  # a class, not a string FastAPI would fail to resolve
    app.post("/retrieve")(retrieve)
    print(f"serving at http://127.0.0.1:{port}/retrieve", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(kind: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    if kind == "stdlib":
        code = f"from opid_envs.searchqa.server import main; main(['--port', '{port}'])"
    else:
        code = f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); import bench_retrieval_server as b; b.serve_fastapi({port})"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if "serving" not in line:
        proc.kill()
        raise RuntimeError(f"{kind} server did not start: {line!r} {proc.stderr.read()[-2000:]}")
    for _ in range(100):  # uvicorn prints before it listens
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, port


def load(port: int, clients: int, requests: int, keep_alive: bool, queries: list[str]) -> dict:
    """`clients` threads x `requests` POSTs each; a request is lost when it gets no 200 with its result."""
    latencies, lost = [], []
    lock = threading.Lock()

    def client(index: int):
        conn = None
        for r in range(requests):
            query = queries[(index * requests + r) % len(queries)]
            body = json.dumps({"queries": [query], "topk": 3}).encode()
            t0 = time.perf_counter()
            try:
                conn = conn if keep_alive and conn else http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("POST", "/retrieve", body=body, headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                ok = response.status == 200 and len(json.loads(response.read())["result"]) == 1
            except (OSError, http.client.HTTPException, ValueError) as exc:
                ok, response = False, type(exc).__name__
                conn.close()
                conn = None
            if not keep_alive and conn is not None:
                conn.close()
                conn = None
            with lock:
                latencies.append(time.perf_counter() - t0)
                if not ok:
                    lost.append(getattr(response, "status", response))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {"rate": clients * requests / elapsed, "median_ms": latencies[len(latencies) // 2] * 1e3,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3, "lost": len(lost),
            "lost_kinds": sorted(set(map(str, lost)))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients")
    parser.add_argument("--requests", type=int, default=100, help="requests per client and mode")
    args = parser.parse_args()

    from opid_envs.searchqa.datasets import load_dataset

    dataset = load_dataset("synthetic")
    queries = [it.question for it in dataset.split("test") + dataset.split("train")]
    kinds = ["stdlib"] + (["fastapi+uvicorn"] if importlib.util.find_spec("fastapi") and
                          importlib.util.find_spec("uvicorn") else [])
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, python "
          f"{platform.python_version()}; {args.clients} clients x {args.requests} requests per mode; "
          f"bm25 over {len(dataset.corpus)} documents")
    if len(kinds) == 1:
        print("fastapi/uvicorn not importable: measuring the standard-library server only")
    rows, malformed = {}, malformed_requests()
    for kind in kinds:
        proc, port = start(kind)
        try:
            load(port, 4, 5, True, queries)  # warm-up
            for keep_alive in (True, False):
                rows[kind, keep_alive] = load(port, args.clients, args.requests, keep_alive, queries)
            answers = {name: exchange("127.0.0.1", port, data) for name, data in malformed.items()}
            rows[kind, "bad"] = {name: one_line_4xx(*a) for name, a in answers.items()}
            rows[kind, "bad_status"] = {name: a[0] for name, a in answers.items()}
            rows[kind, "alive"] = load(port, 1, 3, True, queries)["lost"] == 0
        finally:
            proc.terminate()
            try:
                _, err = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            rows[kind, "log_lines"] = len(err.splitlines())
            rows[kind, "tracebacks"] = err.count("Traceback")

    for kind in kinds:
        failed = [f"{n} ({rows[kind, 'bad_status'][n]})" for n, ok in rows[kind, "bad"].items() if not ok]
        print(f"\n{kind}: malformed requests answered with a one-line 4xx: "
              f"{sum(rows[kind, 'bad'].values())}/{len(malformed)}; server alive after them: {rows[kind, 'alive']}; "
              f"server log: {rows[kind, 'log_lines']} lines, {rows[kind, 'tracebacks']} tracebacks")
        if failed:
            print("  not so: " + ", ".join(failed))
    print(f"\n{'server':16} {'connections':12} {'req/s':>8} {'median ms':>10} {'p99 ms':>8} {'lost':>5} "
          f"{'req/s vs stdlib':>16}")
    for keep_alive in (True, False):
        base = rows["stdlib", keep_alive]["rate"]
        for kind in kinds:
            r = rows[kind, keep_alive]
            print(f"{kind:16} {'keep-alive' if keep_alive else 'per request':12} {r['rate']:8.1f} "
                  f"{r['median_ms']:10.2f} {r['p99_ms']:8.2f} {r['lost']:5d} {r['rate'] / base:15.2f}x"
                  + (f"  lost: {r['lost_kinds']}" if r["lost"] else ""))


if __name__ == "__main__":
    main()

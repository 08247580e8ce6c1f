"""The /retrieve server over real HTTP on loopback: Search-R1's API, batches, concurrency, bad requests."""

import http.client
import json
import socket
import threading
import urllib.error
import urllib.request

import pytest

from opid_envs.searchqa.datasets import build_synthetic
from opid_envs.searchqa.env import SearchQAEnv
from opid_envs.searchqa.retrieval import BM25Retriever, HTTPRetriever
from opid_envs.searchqa.server import RetrievalServer, ServerLimits


pytestmark = pytest.mark.usefixtures("private_opid_cache")


@pytest.fixture(scope="module")
def server():
    retriever = BM25Retriever(build_synthetic().corpus, cache=False)
    srv = RetrievalServer(retriever, port=0, limits=ServerLimits(max_body_bytes=64 * 1024, max_batch=64))
    thread = srv.serve_in_background()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def post(url, payload, raw=None):
    body = raw if raw is not None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_binds_loopback_by_default(server):
    assert server.server_address[0] == "127.0.0.1"


def test_single_query_in_search_r1_shape(server):
    status, payload = post(server.url, {"query": "Pouva Observatory", "topk": 2, "return_scores": True})
    assert status == 200 and len(payload["result"]) == 1
    first = payload["result"][0][0]
    assert first["document"]["contents"].startswith('"Pouva Observatory"\n') and first["score"] > 0
    status, payload = post(server.url, {"query": "Pouva Observatory", "topk": 2})
    assert status == 200 and payload["result"][0][0]["contents"].startswith('"Pouva Observatory"')


def test_batched_queries_match_single_ones(server):
    queries = ["Pouva Observatory", "Koupaem Dretuk", "zzqqxx", ""]
    status, payload = post(server.url, {"queries": queries, "topk": 3, "return_scores": True})
    assert status == 200 and len(payload["result"]) == 4
    # always topk, as Search-R1's servers: a query sharing no term gets 3 documents of score 0
    assert [len(row) for row in payload["result"]] == [3, 3, 3, 3]
    assert all(hit["score"] == 0 for row in payload["result"][2:] for hit in row)
    for query, row in zip(queries, payload["result"]):
        assert row == post(server.url, {"query": query, "topk": 3, "return_scores": True})[1]["result"][0]


def test_concurrent_clients_get_their_own_answers(server):
    names = [doc.title for doc in build_synthetic().corpus.documents[:16]]
    failures = []

    def client(name):
        for _ in range(10):
            status, payload = post(server.url, {"queries": [name], "topk": 1})
            if status != 200 or not payload["result"][0][0]["contents"].startswith(f'"{name}"'):
                failures.append((name, status))

    threads = [threading.Thread(target=client, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not failures and not any(t.is_alive() for t in threads)


@pytest.mark.parametrize("raw, status, phrase", [
    (b"{not json", 400, "malformed JSON"),
    (b"\xff\xfe\x00garbage", 400, "malformed JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (b'{"topk": 3}', 400, "queries"),
    (b'{"queries": "a string"}', 400, "list of strings"),
    (b'{"queries": [1, 2]}', 400, "list of strings"),
    (b'{"query": "x", "topk": 0}', 400, "topk"),
    (b'{"query": "x", "topk": true}', 400, "topk"),
    (b'{"query": "x", "return_scores": "yes"}', 400, "return_scores"),
    (json.dumps({"queries": ["x"] * 65}).encode(), 413, "batch limit"),
    (json.dumps({"query": "x" * 70_000}).encode(), 413, "exceeds the limit"),
])
def test_bad_requests_get_4xx_and_the_server_survives(server, raw, status, phrase):
    got, payload = post(server.url, None, raw=raw)
    assert got == status and phrase in payload["error"]
    assert post(server.url, {"query": "Pouva Observatory"})[0] == 200


def test_wrong_paths_methods_and_missing_length(server):
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("GET", "/retrieve")
    assert conn.getresponse().status == 405
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("POST", "/nope", body=b"{}")
    assert conn.getresponse().status == 404
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.putrequest("POST", "/retrieve")
    conn.endheaders()
    assert conn.getresponse().status == 411
    with socket.create_connection((host, port), timeout=10) as sock:  # not HTTP at all
        sock.sendall(b"\x00\x01garbage\r\n\r\n")
        sock.recv(1024)
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("GET", "/health")
    health = json.loads(conn.getresponse().read())
    assert health["status"] == "ok" and health["documents"] == len(build_synthetic().corpus)


def test_env_through_the_server_sees_what_in_process_retrieval_sees(server):
    remote, local = SearchQAEnv(retriever=server.url), SearchQAEnv()
    for env in (remote, local):
        env.reset(seed=0, options={"split": "test", "task_id": 2})
    for _ in range(2):
        action = local.expert_action()
        assert remote.expert_action() == action
        assert remote.step(action)[0] == local.step(action)[0]


def test_client_reports_an_unreachable_server():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(RuntimeError, match="unreachable"):
        HTTPRetriever(f"http://127.0.0.1:{port}", timeout=2).search("x")


def test_client_reconnects_after_the_server_drops_an_idle_connection():
    import time

    retriever = BM25Retriever(build_synthetic().corpus, cache=False)
    srv = RetrievalServer(retriever, port=0, limits=ServerLimits(socket_timeout_s=0.2))
    thread = srv.serve_in_background()
    try:
        client = HTTPRetriever(srv.url)
        first = client.search("Pouva Observatory")
        time.sleep(0.6)  # the server times the kept-alive connection out
        assert client.search("Pouva Observatory") == first
        with pytest.raises(RuntimeError, match="answered 400"):
            client.search("Pouva Observatory", k=0)
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def raw_exchange(server, data: bytes) -> tuple[int, dict]:
    """Send raw bytes, read the whole answer (the server closes after an error): (status, JSON body)."""
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def post_bytes(body: bytes, length: bytes | None = None) -> bytes:
    length = str(len(body)).encode() if length is None else length
    return b"POST /retrieve HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + b"\r\n\r\n" + body


@pytest.mark.parametrize("name, data, status", [
    ("30k-deep JSON", post_bytes(b'{"query": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"), 400),
    ("5,000-digit topk", post_bytes(b'{"query": "x", "topk": ' + b"9" * 5000 + b"}"), 400),
    ("Content-Length: superscript two", post_bytes(b"{}", "²".encode()), 400),
    ("negative Content-Length", post_bytes(b"{}", b"-1"), 400),
    ("5,000-digit Content-Length", post_bytes(b"{}", b"9" * 5000), 413),
    ("lone surrogate query", post_bytes(b'{"query": "\\ud800 Pouva"}'), 200),
    ("not HTTP", b"\x00\x01garbage\r\n\r\n", 400),
    ("request line too long", b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414),
    ("too many headers", b"GET /health HTTP/1.1\r\n" + b"X-A: b\r\n" * 200 + b"\r\n", 431),
    ("unknown method", b"BREW /retrieve HTTP/1.1\r\nHost: x\r\n\r\n", 405),
])
def test_every_malformed_request_gets_a_one_line_answer(server, name, data, status):
    got, payload = raw_exchange(server, data)
    assert got == status, name
    if status != 200:
        assert "\n" not in payload["error"] and 0 < len(payload["error"]) < 300, payload
    assert post(server.url, {"query": "Pouva Observatory"})[0] == 200  # and the server goes on


def test_clients_that_hang_up_cost_no_traceback(server, capfd, caplog):
    host, port = server.server_address[:2]
    for _ in range(20):
        with socket.create_connection((host, port), timeout=10) as sock:  # hangs up mid-body
            sock.sendall(post_bytes(b'{"query": "Pouva')[:-3].replace(b"Content-Length: 15", b"Content-Length: 900"))
        sock = socket.create_connection((host, port), timeout=10)  # asks, then resets before the answer
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.sendall(post_bytes(json.dumps({"queries": ["Pouva Observatory"] * 64, "topk": 100}).encode()))
        sock.close()
    assert post(server.url, {"query": "Pouva Observatory"})[0] == 200
    assert "Traceback" not in capfd.readouterr().err and "Traceback" not in caplog.text


def test_listen_backlog_holds_32_clients_connecting_at_once():
    """Before accepting anything, 32 connections must complete their handshake (a backlog of 5 queued 6)."""
    import select

    srv = RetrievalServer(BM25Retriever(build_synthetic().corpus, cache=False), port=0)  # listening, not serving
    try:
        socks = []
        for _ in range(32):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(srv.server_address[:2])
            socks.append(s)
        _, writable, _ = select.select([], socks, [], 1.0)
        connected = [s for s in writable if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0]
        assert len(connected) == 32
    finally:
        for s in socks:
            s.close()
        srv.server_close()

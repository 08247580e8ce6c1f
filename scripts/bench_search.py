"""Benchmark SearchQA retrieval: queries/s per backend, env steps/s, server requests/s under concurrency.

    python scripts/bench_search.py                       # synthetic corpus, bm25 + dense
    python scripts/bench_search.py --dataset fanoutqa --backends bm25 dense --clients 1 4 16

Every loop is bounded (--queries, --episodes, --requests). The server runs in a subprocess on
127.0.0.1 with an ephemeral port, so clients and server do not share one interpreter lock.
Indexes build (with a progress bar) on first use and are cached under $OPID_CACHE.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import json
import os
import platform
import random
import subprocess
import sys
import threading
import time

from opid_envs.searchqa.datasets import load_dataset
from opid_envs.searchqa.env import SearchQAEnv
from opid_envs.searchqa.retrieval import make_retriever

OPTIONAL_BACKENDS = {"dense": "transformers", "pyserini": "pyserini"}


def bench_backend(backend, dataset, questions, batch_size):
    start = time.perf_counter()
    retriever = make_retriever(backend, dataset.corpus, progress=True)
    ready_s = time.perf_counter() - start
    retriever.search(questions[0])  # warm-up
    start = time.perf_counter()
    for q in questions:
        retriever.search(q, 3)
    single = len(questions) / (time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(0, len(questions), batch_size):
        retriever.batch_search(questions[i:i + batch_size], 3)
    batched = len(questions) / (time.perf_counter() - start)
    return retriever, ready_s, single, batched


def bench_env(dataset, retriever, episodes, policy):
    env = SearchQAEnv(dataset=dataset, retriever=retriever)
    rng, steps, won = random.Random(0), 0, 0
    start = time.perf_counter()
    for episode in range(episodes):
        env.reset(seed=episode)
        done = False
        while not done:
            action = env.expert_action() if policy == "oracle" else env.random_action(rng)
            _, _, terminated, truncated, info = env.step(action)
            steps += 1
            done = terminated or truncated
        won += info["won"]
    return steps / (time.perf_counter() - start), won / episodes


def start_server(dataset_name, backend):
    code = ("import sys; from opid_envs.searchqa.server import main; "
            f"main(['--dataset', {dataset_name!r}, '--backend', {backend!r}, '--port', '0'])")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if "serving" not in line:
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    return proc, line.rsplit(" ", 1)[-1].strip()


def bench_server(url, questions, clients, requests_per_client, batch):
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    errors, latencies = [], []

    def client(index):
        conn = http.client.HTTPConnection(host, int(port), timeout=30)  # keep-alive, like a real client
        for r in range(requests_per_client):
            start = (index * requests_per_client + r) * batch
            queries = [questions[(start + j) % len(questions)] for j in range(batch)]
            body = json.dumps({"queries": queries, "topk": 3, "return_scores": True})
            t0 = time.perf_counter()
            conn.request("POST", "/retrieve", body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            payload = response.read()
            latencies.append(time.perf_counter() - t0)
            if response.status != 200 or len(json.loads(payload)["result"]) != batch:
                errors.append(response.status)
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    latencies.sort()
    return clients * requests_per_client / elapsed, latencies[len(latencies) // 2] * 1e3, len(errors)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dataset", default="synthetic", help="QA dataset (opid_envs.searchqa.datasets.DATASETS)")
    parser.add_argument("--backends", nargs="+", default=["bm25", "dense"], help="retrieval backends to compare")
    parser.add_argument("--queries", type=int, default=200, help="queries timed per backend")
    parser.add_argument("--batch-size", type=int, default=32, help="queries per batched search call")
    parser.add_argument("--episodes", type=int, default=200, help="env episodes timed per backend")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16], help="concurrent clients of the retrieval server")
    parser.add_argument("--requests", type=int, default=50, help="requests per client")
    parser.add_argument("--server-batch", type=int, default=1, help="queries per server request")
    args = parser.parse_args()

    dataset = load_dataset(args.dataset)
    items = dataset.split("test") + dataset.split("train")
    questions = [it.question for it in items][: args.queries]
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}, python {platform.python_version()}; "
          f"dataset {args.dataset}: {len(dataset.corpus)} documents, {len(questions)} queries")

    print("\n== retrieval (top-3) ==")
    print(f"{'backend':10} {'ready s':>8} {'single q/s':>11} {'batch q/s':>10} {'vs bm25 single':>15}")
    retrievers, base = {}, None
    for backend in args.backends:
        module = OPTIONAL_BACKENDS.get(backend)
        if module and importlib.util.find_spec(module) is None:
            print(f"{backend:10} skipped: {module} is not installed")
            continue
        retriever, ready_s, single, batched = bench_backend(backend, dataset, questions, args.batch_size)
        retrievers[backend] = retriever
        base = base or (single if backend == "bm25" else None)
        ratio = f"{single / base:.2f}x" if base else "-"
        print(f"{backend:10} {ready_s:8.2f} {single:11.1f} {batched:10.1f} {ratio:>15}")
        if backend == "dense":  # torch's default threads oversubscribe a busy CPU; show one thread too
            import torch

            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            _, ready_s, single, batched = bench_backend(backend, dataset, questions, args.batch_size)
            torch.set_num_threads(threads)
            ratio = f"{single / base:.2f}x" if base else "-"
            print(f"{'dense/1thr':10} {ready_s:8.2f} {single:11.1f} {batched:10.1f} {ratio:>15}")

    print("\n== env steps (in process) ==")
    print(f"{'backend':10} {'policy':8} {'steps/s':>9} {'success':>8}")
    for backend, retriever in retrievers.items():
        for policy in ("oracle", "random"):
            steps_s, success = bench_env(dataset, retriever, args.episodes, policy)
            print(f"{backend:10} {policy:8} {steps_s:9.1f} {success:8.2f}")

    print(f"\n== /retrieve server on loopback (bm25 subprocess, {args.server_batch} query/request) ==")
    proc, url = start_server(args.dataset, "bm25")
    try:
        remote_steps, _ = bench_env(dataset, url, args.episodes, "oracle")
        local_steps, _ = bench_env(dataset, retrievers.get("bm25") or "bm25", args.episodes, "oracle")
        print(f"env oracle steps/s: in-process {local_steps:.1f}, through server {remote_steps:.1f} "
              f"(ratio {remote_steps / local_steps:.2f})")
        print(f"{'clients':>8} {'req/s':>9} {'median ms':>10} {'errors':>7} {'vs 1 client':>12}")
        one = None
        for clients in args.clients:
            rate, median_ms, errors = bench_server(url, questions, clients, args.requests, args.server_batch)
            one = one or rate
            print(f"{clients:8d} {rate:9.1f} {median_ms:10.2f} {errors:7d} {rate / one:11.2f}x")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()

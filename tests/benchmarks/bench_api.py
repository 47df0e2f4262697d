"""Benchmark of the HTTP API against a real uvicorn server on loopback.

The server is a child process running :func:`service.api.app.create_app` with the embedded
SQLite store and the **fake (no-op) submitter** of ``tests/fakes.py`` (no Ray: this measures
the service, not the cluster), background reconciler and scheduler running, data checks off
(``check_data=False``: a submission is validated, path-checked, stored and handed to the
submitter, but the score files are not opened).

Goals:
    (a) 50 concurrent submissions (50 threads, one POST each) are all stored: 50 distinct
        job ids answered, 50 jobs listed, each submitted to the cluster port exactly once;
    (b) job-status reads (``GET /v1/jobs/{id}``) paced at 100 requests/s for a fixed count
        (default 1000, 10 s), spread over the stored jobs: p99 latency < 50 ms.

Usage::

    python tests/benchmarks/bench_api.py [--reads 1000] [--rate 100]

Bounded: fixed request counts and timeouts; it stops the server and exits by itself, non-zero
when a goal fails.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

TOKEN = "bench-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SUBMISSIONS = 50
P99_GOAL_MS = 50.0
READ_THREADS = 4


def serve(port: int, root: str) -> None:
    """Child process: the app on the fake submitter, served by uvicorn until SIGTERM."""
    import logging

    import uvicorn

    from service.api.app import create_app
    from service.server.settings import Settings
    from service.store.repo import Store
    from tests.fakes import FakeSubmitter

    logging.basicConfig(level=logging.WARNING)
    settings = Settings(data_dir=os.path.join(root, "svc"), tokens=frozenset({TOKEN}),
                        data_roots=(os.path.join(root, "data"),), output_roots=(os.path.join(root, "out"),),
                        check_data=False, reconcile_interval_s=1.0, scheduler_tick_s=1.0).resolved()
    submitter = FakeSubmitter()
    app = create_app(settings, Store(settings.db_url), submitter)

    @app.get("/bench/submitted", include_in_schema=False)
    def submitted() -> dict[str, list[str]]:
        return {"ids": [s[0] for s in submitter.submitted]}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _spec(root: str, i: int) -> dict[str, object]:
    d = os.path.join(root, "data", "set")
    return {"name": f"bench-{i:03d}",
            "data": {"scores": f"{d}/scores", "ground_truth": f"{d}/ground_truth.tsv"},
            "strategies": [{"name": "manual"}, {"name": "exact"}, {"name": "random", "budget": 20}]}


def _percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s)) - 1))]


def submit_concurrently(url: str, root: str) -> list[str]:
    """Goal (a): 50 threads POST one job each at the same moment; returns the answered ids."""
    barrier = threading.Barrier(SUBMISSIONS)

    def one(i: int) -> tuple[int, str]:
        barrier.wait(timeout=30)
        r = requests.post(f"{url}/v1/jobs", json=_spec(root, i), headers=AUTH, timeout=60)
        return r.status_code, r.json().get("id", r.text)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(SUBMISSIONS) as pool:
        answers = list(pool.map(one, range(SUBMISSIONS)))
    wall = time.perf_counter() - t0
    bad = [a for a in answers if a[0] != 201]
    print(f"submissions: {SUBMISSIONS} concurrent POST /v1/jobs in {wall:.2f} s, "
          f"{len(bad)} not 201 {bad[:3]}")
    return [a[1] for a in answers if a[0] == 201]


def paced_reads(url: str, ids: list[str], n: int, rate: float) -> tuple[list[float], int, float]:
    """Goal (b): ``n`` GETs of job status sent on a fixed schedule at ``rate``/s (open loop).

    A few client threads, each with one keep-alive connection (``http.client``: the client's
    own overhead stays small next to the server's).

    Returns:
        Latencies (ms, send to full response), errors, achieved rate (requests/s).
    """
    host, port = url.removeprefix("http://").split(":")
    conns = threading.local()
    lat: list[float] = []
    errors = 0
    lock = threading.Lock()
    t_start = time.perf_counter() + 0.2

    def one(k: int) -> None:
        nonlocal errors
        conn = getattr(conns, "c", None)
        if conn is None:
            conn = conns.c = http.client.HTTPConnection(host, int(port), timeout=5)
        job_id = ids[k % len(ids)]
        delay = t_start + k / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        t0 = time.perf_counter()
        try:
            conn.request("GET", f"/v1/jobs/{job_id}", headers=AUTH)
            resp = conn.getresponse()
            body = resp.read()
            ms = 1000 * (time.perf_counter() - t0)
            ok = resp.status == 200 and json.loads(body)["id"] == job_id
        except (OSError, http.client.HTTPException, ValueError):
            ms = 1000 * (time.perf_counter() - t0)
            ok = False
            conns.c = None
        with lock:
            lat.append(ms)
            errors += not ok

    with ThreadPoolExecutor(READ_THREADS) as pool:
        list(pool.map(one, range(n)))
    achieved = n / (time.perf_counter() - t_start)
    return lat, errors, achieved


def main() -> int:
    """Run both goals; exit non-zero on a failed goal."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reads", type=int, default=1000, help="status reads (default 1000)")
    ap.add_argument("--rate", type=float, default=100.0, help="reads per second (default 100)")
    ap.add_argument("--serve", nargs=2, metavar=("PORT", "ROOT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(int(args.serve[0]), args.serve[1])
        return 0
    root = tempfile.mkdtemp(prefix="sdt-bench-api-")
    os.makedirs(os.path.join(root, "data", "set"))
    from tests.ports import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port), root], cwd=ROOT,
                            start_new_session=True)
    ok = True
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                print("bench_api: the server did not start")
                return 1
            time.sleep(0.2)
        print("server: uvicorn on loopback, SQLite store, fake (no-op) submitter, data checks off")

        ids = submit_concurrently(url, root)
        stored = requests.get(f"{url}/v1/jobs", params={"limit": 1000}, headers=AUTH,
                              timeout=30).json()["jobs"]
        sent = requests.get(f"{url}/bench/submitted", headers=AUTH, timeout=30).json()["ids"]
        stored_ids = [j["id"] for j in stored]
        good_a = (len(ids) == SUBMISSIONS and len(set(ids)) == SUBMISSIONS
                  and sorted(stored_ids) == sorted(ids)
                  and sorted(sent) == sorted(ids) and len({j["name"] for j in stored}) == SUBMISSIONS)
        print(f"(a) stored {len(stored_ids)} jobs ({len(set(stored_ids))} distinct), "
              f"answered {len(set(ids))} "
              f"distinct ids, submitted to the cluster port {len(sent)} times ({len(set(sent))} distinct): "
              f"{'OK' if good_a else 'FAIL'} (goal: {SUBMISSIONS}, none lost, none duplicated)")
        ok &= good_a

        lat, errors, achieved = paced_reads(url, ids, args.reads, args.rate)
        p50, p99 = _percentile(lat, 50), _percentile(lat, 99)
        good_b = p99 < P99_GOAL_MS and errors == 0
        print(f"(b) {len(lat)} GET /v1/jobs/{{id}} at {achieved:.1f} req/s (target {args.rate:g}): "
              f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(lat):.1f} ms, "
              f"mean {statistics.mean(lat):.1f} ms, "
              f"{errors} errors: {'OK' if good_b else 'FAIL'} (goal: p99 < {P99_GOAL_MS:g} ms)")
        ok &= good_b
        print(json.dumps({"submissions": SUBMISSIONS, "stored": len(stored_ids), "p50_ms": round(p50, 2),
                          "p99_ms": round(p99, 2), "rate": round(achieved, 1), "errors": errors}))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

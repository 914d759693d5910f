"""Load on `soraflow serve` (localhost only, bounded, stops by itself) against a single-process loop.

A tiny random model (48x32, 1 s, 1 sampler step: the server's overhead is what shows), ``--jobs`` jobs
shared by ``--clients`` concurrent clients. Each client submits a job, polls it every 0.5 s (the
Python client's default) until it is finished, downloads the MP4 and checks it, then takes the next
job. Counted: lost jobs (accepted but not completed with a playable file), 5xx answers, 429s (retried
after Retry-After), submit latency and throughput. The baseline generates the same jobs (same
prompts, seeds, settings, MP4 written) in one process, one after the other, with the model loaded once.

    python benchmarks/bench_serve.py                       # 50 clients, 200 jobs, servers with 1 and 2 workers
    python benchmarks/bench_serve.py --clients 10 --jobs 40 --workers 1

All clients come from 127.0.0.1, so the server runs with --rate-limit 0 (one address plays 50 users).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from serve_helpers import Server, make_random_model  # noqa: E402

PROMPT = "a red ball bouncing on grass, job {i}"
DEADLINE_S = 900.0  # the whole load run stops here, whatever is left


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


def sorted_after(latencies: list[float], submitted: list[float], burst: int) -> list[float]:
    """The latencies of all but the first ``burst`` submissions (by submission time)."""
    order = sorted(range(len(latencies)), key=lambda i: submitted[i])
    return [latencies[i] for i in order[burst:]] or latencies


def baseline(model: Path, jobs: int, out: Path) -> float:
    """Jobs a minute of a plain loop: the model loaded once, then generate + write each MP4."""
    import torch

    from soraflow import SoraPipeline

    torch.set_num_threads(1)
    pipe = SoraPipeline.from_pretrained(model)
    pipe.stream("warm-up", seed=0, progress=False).save(out / "warm.mp4")
    start = time.perf_counter()
    for i in range(jobs):
        pipe.stream(PROMPT.format(i=i), seed=i, progress=False).save(out / f"{i}.mp4")
    return jobs / (time.perf_counter() - start) * 60


async def load(url: str, headers: dict, clients: int, jobs: int) -> dict:
    todo = list(range(jobs))
    latencies, submitted, statuses, lost, done = [], [], [], [], []
    too_many, broken = [0], [0]  # 429 answers; requests that got no answer (connection dropped)
    stop_at = time.monotonic() + DEADLINE_S
    start = time.perf_counter()

    async def get(http: httpx.AsyncClient, path: str) -> httpx.Response:
        for _ in range(3):  # a GET may be repeated; a dropped one is counted, not fatal
            try:
                response = await http.get(path)
                statuses.append(response.status_code)
                return response
            except httpx.TransportError:
                broken[0] += 1
        raise RuntimeError(f"GET {path}: no answer three times")

    async def client(http: httpx.AsyncClient) -> None:
        while todo and time.monotonic() < stop_at:
            i = todo.pop()
            while True:
                tick = time.perf_counter()
                try:
                    response = await http.post("/v1/videos", json={"prompt": PROMPT.format(i=i), "seed": i})
                except httpx.TransportError as err:  # not repeated: the job may exist; it counts as lost
                    broken[0] += 1
                    response = httpx.Response(599, text=repr(err))
                statuses.append(response.status_code)
                if response.status_code != 429:
                    break
                too_many[0] += 1
                await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
            if response.status_code != 200:
                lost.append((i, response.status_code, response.text[:200]))
                continue
            latencies.append(time.perf_counter() - tick)
            submitted.append(tick - start)
            video_id = response.json()["id"]
            while time.monotonic() < stop_at:
                await asyncio.sleep(0.5)
                state = await get(http, f"/v1/videos/{video_id}")
                if state.status_code == 200 and state.json()["status"] in ("completed", "failed", "cancelled"):
                    break
            content = await get(http, f"/v1/videos/{video_id}/content")
            if state.json()["status"] == "completed" and content.status_code == 200 and content.content[4:8] == b"ftyp":
                done.append(video_id)
            else:
                lost.append((i, state.json()["status"], state.json().get("error")))

    limits = httpx.Limits(max_connections=clients + 10)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    wall = time.perf_counter() - start
    return {
        "jobs": jobs, "completed": len(done), "lost": jobs - len(done), "lost_detail": lost[:5],
        "http_5xx": sum(500 <= s < 599 for s in statuses), "http_429": too_many[0], "requests": len(statuses),
        "no_answer": broken[0],
        "submit_p50_ms": 1000 * statistics.median(latencies) if latencies else None,
        "submit_p99_ms": 1000 * percentile(latencies, 99) if latencies else None,
        # the first `clients` submissions arrive at once; after that the load is steady
        "steady_p99_ms": 1000 * percentile(sorted_after(latencies, submitted, clients), 99) if latencies else None,
        "wall_s": wall, "jobs_per_min": len(done) / wall * 60,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="server worker counts to run")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        tmp = Path(tmp)
        model = make_random_model(tmp / "model")
        load_before = os.getloadavg()
        results = {"machine": machine(), "clients": args.clients, "jobs": args.jobs, "load_before": load_before}
        (tmp / "loop").mkdir()
        results["loop_jobs_per_min"] = baseline(model, args.jobs, tmp / "loop")
        print(f"single-process loop: {results['loop_jobs_per_min']:.0f} jobs/min", flush=True)
        for workers in args.workers:
            server = Server(model, tmp / f"data-{workers}", tmp / f"server-{workers}.log", api_key=None,
                            args=["--workers", str(workers), "--rate-limit", "0", "--max-queue", str(args.jobs)])
            try:
                server.start()
                run = asyncio.run(load(server.url, {}, args.clients, args.jobs))
            finally:
                server.stop()
            results[f"server_{workers}"] = run
            print(f"server, {workers} worker(s): {json.dumps(run)}", flush=True)
        results["load_after"] = os.getloadavg()

    print(f"\nmachine: {results['machine']}; load average before {load_before[0]:.1f}, "
          f"after {results['load_after'][0]:.1f}")
    print(f"{args.clients} clients, {args.jobs} jobs (48x32, 9 frames, 1 step)\n")
    print("| run | jobs/min | vs loop | lost | 5xx | 429 | no answer | submit p50 | submit p99 | p99 after the first burst |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    loop = results["loop_jobs_per_min"]
    print(f"| single-process loop | {loop:.0f} | 1.00x | - | - | - | - | - | - | - |")
    for workers in args.workers:
        r = results[f"server_{workers}"]
        print(f"| server, {workers} worker{'s' if workers > 1 else ''} | {r['jobs_per_min']:.0f} | "
              f"{r['jobs_per_min'] / loop:.2f}x | {r['lost']} | {r['http_5xx']} | {r['http_429']} | {r['no_answer']} | "
              f"{r['submit_p50_ms']:.1f} ms | {r['submit_p99_ms']:.1f} ms | {r['steady_p99_ms']:.1f} ms |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    failed = any(results[f"server_{w}"]["lost"] or results[f"server_{w}"]["http_5xx"] or results[f"server_{w}"]["no_answer"]
                 for w in args.workers)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

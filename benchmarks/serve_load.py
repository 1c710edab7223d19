#!/usr/bin/env python
"""`s2t-hf serve` under load, on loopback: throughput and latency, bad uploads, memory.

Starts `s2t-hf serve MODEL` in its own process (127.0.0.1, a free port), with dynamic batching
(`--max-batch 16`) and two batch workers (the default), with one worker, and without batching
(`--max-batch 1`, two workers), and drives it with httpx from this process:

- closed loop: 1, 8 and 32 clients, each sending its next clip as soon as the last is answered
  (`--requests` in all per level): clips/s and p50/p95/p99 latency;
- open loop: one request every 100 ms (10 requests/s) for `--open-seconds`: latency;
- a flood of bad uploads (empty, text, a cut WAV header, silence, NaN, too long) mixed one to one
  with good ones from 8 clients: every status, which must hold no 5xx, and whether every good
  upload got the answer it gets alone;
- memory: the server's RSS and peak RSS (VmHWM) after warm-up, then after `--rss-requests` more.

The clips are the quickstart's test clips (`data/quickstart/manifest-test.tsv`, unseen voices),
read as uploaded WAV files. Client and server share the machine's cores, as they would on a
one-box deployment; the load average is recorded.

    python benchmarks/serve_load.py outputs/quickstart               # ~40 minutes on 2 cores (17 of them the memory run)
    python benchmarks/serve_load.py outputs/quickstart --quick       # fewer requests, 500 for memory
    python benchmarks/serve_load.py outputs/quickstart --quantize int8 --default-only   # int8, batching and 2 workers only
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import soundfile

from s2t_hf.serving.server import free_port
from s2t_hf.training.precision import noted_cpu_flags


def read_clips(manifest: Path, count: int, seed: int = 0) -> list[tuple[str, bytes, str]]:
    with open(manifest, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    rows = random.Random(seed).sample(rows, min(count, len(rows)))
    return [(Path(row["path"]).name, (manifest.parent / row["path"]).read_bytes(), row["text"]) for row in rows]


def wav(audio: np.ndarray, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, 16_000, subtype=subtype, format="WAV")
    return buffer.getvalue()


def bad_uploads() -> dict[str, bytes]:
    noise = (0.1 * np.random.default_rng(0).standard_normal(16_000)).astype(np.float32)
    with_nan = noise.copy()
    with_nan[10] = np.nan
    return {
        "empty": b"",
        "text": b"not audio at all\n" * 50,
        "cut header": wav(noise)[:30],
        "silence": wav(np.zeros(16_000, np.float32)),
        "NaN": wav(with_nan, "FLOAT"),
        "too long": wav(np.tile(noise, 40)),  # 40 s, over the 30-s default
    }


class Server:
    def __init__(self, model: str, max_batch: int, extra: list[str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "s2t_hf.cli", "serve", model, "--port", str(self.port), "--max-batch", str(max_batch), *extra]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def wait(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.process.stderr.read()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError("the server did not start")

    def memory(self) -> dict:
        fields = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = round(int(value.split()[0]) / 1024, 1)  # MiB
        return {"rss_mib": fields["VmRSS"], "peak_rss_mib": fields["VmHWM"]}

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


async def post(client: httpx.AsyncClient, name: str, data: bytes) -> tuple[int, dict, float]:
    started = time.perf_counter()
    response = await client.post("/v1/recognize", files={"audio": (name, data)})
    return response.status_code, response.json(), time.perf_counter() - started


def percentiles(latencies: list[float]) -> dict:
    ms = sorted(1000 * value for value in latencies)

    def pick(q: float) -> float:
        return round(ms[min(len(ms) - 1, int(q * len(ms)))], 1)

    return {"p50_ms": pick(0.50), "p95_ms": pick(0.95), "p99_ms": pick(0.99), "mean_ms": round(statistics.fmean(ms), 1)}


async def closed_loop(url: str, clips, clients: int, requests: int) -> dict:
    queue = list(range(requests))
    latencies, correct, statuses = [], 0, {}

    async def worker(client):
        nonlocal correct
        while queue:
            index = queue.pop()
            name, data, text = clips[index % len(clips)]
            status, body, seconds = await post(client, name, data)
            statuses[status] = statuses.get(status, 0) + 1
            latencies.append(seconds)
            correct += status == 200 and body["candidates"][0]["name"] == text

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=clients)) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        wall = time.perf_counter() - started
    return {"clients": clients, "requests": requests, "clips_per_s": round(requests / wall, 2), **percentiles(latencies),
            "top1": round(correct / requests, 4), "statuses": statuses}


async def open_loop(url: str, clips, rate: float, seconds: float) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=256)) as client:
        tasks, started = [], time.perf_counter()
        for index in range(int(rate * seconds)):
            delay = started + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            name, data, _ = clips[index % len(clips)]
            tasks.append(asyncio.create_task(post(client, name, data)))
        results = await asyncio.gather(*tasks)
    statuses = {}
    for status, _, _ in results:
        statuses[status] = statuses.get(status, 0) + 1
    return {"rate_per_s": rate, "requests": len(results), **percentiles([seconds for _, _, seconds in results]), "statuses": statuses}


async def bad_flood(url: str, clips, alone: dict[str, str], rounds: int) -> dict:
    bad = bad_uploads()
    jobs = [(f"bad-{kind}.wav", data, kind) for kind, data in bad.items()] * rounds
    jobs += [(name, data, None) for name, data, _ in clips[: len(jobs)]]
    random.Random(1).shuffle(jobs)
    statuses: dict[str, dict[int, int]] = {}
    wrong = 0
    semaphore = asyncio.Semaphore(8)

    async def one(client, name, data, kind):
        nonlocal wrong
        async with semaphore:
            status, body, _ = await post(client, name, data)
        group = statuses.setdefault(kind or "good", {})
        group[status] = group.get(status, 0) + 1
        if kind is None:
            wrong += status != 200 or body["candidates"][0]["name"] != alone[name]

    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        await asyncio.gather(*(one(client, *job) for job in jobs))
    five_xx = sum(count for group in statuses.values() for status, count in group.items() if status >= 500)
    return {"requests": len(jobs), "statuses": statuses, "5xx": five_xx, "good_answered_differently": wrong}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a model folder (the quickstart's: outputs/quickstart)")
    parser.add_argument("--manifest", default="data/quickstart/manifest-test.tsv")
    parser.add_argument("--clips", type=int, default=200, help="distinct clips to send (default 200)")
    parser.add_argument("--requests", type=int, default=400, help="requests per closed-loop level (default 400)")
    parser.add_argument("--open-seconds", type=float, default=30.0)
    parser.add_argument("--rss-requests", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="100 requests a level, 10-s open loop, 500 for memory")
    parser.add_argument("--quantize", default=None, choices=["int8"], help="serve the model int8-quantized (s2t-hf serve --quantize)")
    parser.add_argument("--default-only", action="store_true", help="only the default configuration (batching, 2 workers)")
    parser.add_argument("--output", default="benchmarks/results/serve_load.json")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.open_seconds, args.rss_requests = 100, 10.0, 500
    clips = read_clips(Path(args.manifest), args.clips)
    results = {"model": args.model, "quantize": args.quantize, "cpu_flags": noted_cpu_flags(), "clips": len(clips),
               "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
               "clip_seconds_mean": round(statistics.fmean(soundfile.info(io.BytesIO(data)).duration for _, data, _ in clips), 2),
               "runs": {}}
    configurations = [
        ("batching (max 16 clips, 10 ms), 2 workers", 16, ["--workers", "2"]),
        ("batching (max 16 clips, 10 ms), 1 worker", 16, ["--workers", "1"]),
        ("no batching, 2 workers", 1, ["--workers", "2"]),
    ][: 1 if args.default_only else None]
    quantize = ["--quantize", args.quantize] if args.quantize else []
    for index, (label, max_batch, extra) in enumerate(configurations):
        server = Server(args.model, max_batch, extra + quantize)
        try:
            server.wait()
            run = {"memory_after_warm_up": server.memory()}
            run["closed_loop"] = [asyncio.run(closed_loop(server.url, clips, clients, args.requests)) for clients in (1, 8, 32)]
            run["open_loop_10_per_s"] = asyncio.run(open_loop(server.url, clips, 10.0, args.open_seconds))
            if index == 0:  # the default configuration: bad uploads and memory
                alone = {}
                for name, data, _ in clips:
                    answer = httpx.post(f"{server.url}/v1/recognize", files={"audio": (name, data)}, timeout=60).json()
                    alone[name] = answer["candidates"][0]["name"]
                run["bad_flood"] = asyncio.run(bad_flood(server.url, clips, alone, rounds=max(1, len(clips) // 6)))
                before = server.memory()
                started, sent, readings = time.perf_counter(), 0, []
                while sent < args.rss_requests:  # a reading every 2,000: pools filled early vs steady growth
                    chunk = min(2_000, args.rss_requests - sent)
                    asyncio.run(closed_loop(server.url, clips, 32, chunk))
                    sent += chunk
                    readings.append({"requests": sent, **server.memory()})
                run["memory"] = {"requests": args.rss_requests, "before": before, "after": server.memory(), "readings": readings,
                                 "minutes": round((time.perf_counter() - started) / 60, 1)}
            run["health"] = httpx.get(f"{server.url}/healthz").json()
        finally:
            server.stop()
        results["runs"][label] = run
        print(f"\n{label}")
        print("| clients | clips/s | p50 ms | p95 ms | p99 ms | top-1 |")
        print("|---:|---:|---:|---:|---:|---:|")
        for level in run["closed_loop"]:
            print(f"| {level['clients']} | {level['clips_per_s']} | {level['p50_ms']} | {level['p95_ms']} | {level['p99_ms']} | {100 * level['top1']:.1f}% |")
        open_run = run["open_loop_10_per_s"]
        print(f"10 requests/s for {args.open_seconds:g} s: p50 {open_run['p50_ms']} ms, p95 {open_run['p95_ms']} ms, p99 {open_run['p99_ms']} ms, statuses {open_run['statuses']}")
        if "bad_flood" in run:
            print(f"bad-upload flood: {run['bad_flood']}")
            print(f"memory: {run['memory']}")
    results["load_average"] = os.getloadavg()
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {args.output}")


if __name__ == "__main__":
    main()

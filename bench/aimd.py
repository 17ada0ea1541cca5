"""Adaptive concurrency (AIMD) against an endpoint with a hidden capacity, beside fixed concurrency.

A loopback OpenAI-compatible server (`testkit/servers/capacity_server.py`, in its own process) serves
at most C requests at once (latency rising from the base to twice the base as in-flight approaches
C) and refuses the rest with 429. For a fixed time, as many requests as the ceiling allows go through the production `LLMClient` (its retry loop,
backoff and circuit breaker as configured by default) with the adaptive limit (ceiling 2C) and with
a fixed concurrency of C/2, C and 2C. Each mode prints:

- goodput / capacity: successful requests per second (slow start included) over the best any fixed concurrency can get
  from that server (computed from its latency curve; goal >= 0.90 for AIMD);
- rejected share: 429 answers over all requests the server saw (goal <= 5 % for AIMD);
- failed calls (retries used up), and AIMD's final and mean level;
- AIMD's goodput over the best fixed concurrency measured in the same run (which knew C).

On a loaded machine the client's own CPU time keeps every mode below the ideal; the last ratio is
the one the machine's load does not move.

    python -m bench.aimd --capacity 16 --base-latency 0.1 --seconds 15
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _stats(port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as response:
        return dict(json.loads(response.read()))


async def _drive(base_url: str, seconds: float, ceiling: int, adaptive: bool) -> dict[str, Any]:
    from schemas.config import LLMEndpointConfig
    from schemas.errors import GroundgenError
    from synthesis.llm_client import LLMClient

    client = LLMClient(
        LLMEndpointConfig(
            base_url=base_url, model="capacity", max_concurrency=ceiling, adaptive_concurrency=adaptive
        )
    )
    succeeded = failed = 0

    async def worker(index: int) -> None:  # one row in flight, as a stage keeps `ceiling` rows going
        nonlocal succeeded, failed
        serial = 0
        while True:
            serial += 1
            try:
                await client.chat([{"role": "user", "content": f"hi {index} {serial}"}], use_cache=False)
                succeeded += 1
            except GroundgenError:
                failed += 1

    workers = [asyncio.create_task(worker(i)) for i in range(ceiling)]
    await asyncio.sleep(seconds)
    levels = client.concurrency_summary()
    for task in workers:
        task.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    await client.aclose()
    return {"succeeded": succeeded, "failed": failed, "levels": levels}


def run_mode(port: int, seconds: float, ceiling: int, adaptive: bool) -> dict[str, Any]:
    from synthesis.adaptive_concurrency import reset_limits
    from synthesis.circuit_breaker import reset_breakers

    reset_limits()  # each mode learns from scratch
    reset_breakers()
    before = _stats(port)
    outcome = asyncio.run(_drive(f"http://127.0.0.1:{port}/v1", seconds, ceiling, adaptive))
    after = _stats(port)
    outcome.update({key: after[key] - before[key] for key in ("served", "rejected")})
    return outcome


def main(argv: list[str] | None = None) -> None:
    from testkit.servers.capacity_server import best_throughput

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--capacity", type=int, default=16, help="the server's hidden capacity C")
    parser.add_argument("--base-latency", type=float, default=0.1, help="seconds per request below C/2")
    parser.add_argument("--seconds", type=float, default=15.0, help="how long each mode offers load")
    args = parser.parse_args(argv)
    capacity = args.capacity
    ideal = best_throughput(capacity, args.base_latency)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "testkit.servers.capacity_server",
            "--capacity",
            str(capacity),
            "--base-latency",
            str(args.base_latency),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # connections the bench drops at its deadline end in broken pipes
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        print(
            f"hidden capacity {capacity}, base latency {args.base_latency:.3f} s, {args.seconds:.0f} s of load "
            f"per mode; ideal goodput {ideal:.1f} req/s"
        )
        modes = [
            ("AIMD (ceiling 2x)", 2 * capacity, True),
            ("fixed 0.5x", max(1, capacity // 2), False),
            ("fixed 1x", capacity, False),
            ("fixed 2x", 2 * capacity, False),
        ]
        goodputs: dict[str, float] = {}
        for label, ceiling, adaptive in modes:
            outcome = run_mode(port, args.seconds, ceiling, adaptive)
            goodput = outcome["succeeded"] / args.seconds
            goodputs[label] = goodput
            seen = outcome["served"] + outcome["rejected"]
            rejected = outcome["rejected"] / seen if seen else 0.0
            line = (
                f"{label:18s} goodput/capacity {goodput / ideal:.3f}  rejected share {rejected:.3f}  "
                f"calls ok {outcome['succeeded']} failed {outcome['failed']}"
            )
            if outcome["levels"]:
                levels = outcome["levels"]
                line += (
                    f"  level final {levels['concurrency_level']:.0f} mean {levels['concurrency_mean']:.1f} "
                    f"backoffs {levels['backoffs']:.0f}"
                )
            if adaptive:
                line += "  (goals: goodput >= 0.90, rejected <= 0.05)"
            print(line, flush=True)
        best_fixed = max(value for label, value in goodputs.items() if label.startswith("fixed"))
        aimd = goodputs[modes[0][0]]
        print(f"AIMD goodput / best fixed concurrency in this run: {aimd / best_fixed:.3f}")
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()

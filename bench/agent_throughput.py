"""Teacher-loop throughput against loopback servers with fixed latencies.

A scripted OpenAI-compatible server (300 ms per model call) and a search/browse server (100 ms per
tool call) run in a separate process. N LLM-teacher trajectories of 3 tool rounds each (search,
browse, image_search, then the answer: 4 model calls + 3 tool calls = 1.5 s of latency) run at
concurrency C through `LLMTeacher` (real openai SDK, real HTTP, shared protocol and toolbox).

Prints efficiency = ideal wall time (N x 1.5 s / C) / measured wall time (target >= 0.85 on 2 cores),
the CPU seconds the client and the server processes used (and the machine's load average: on a
2-core machine shared with other work the CPU, not the client, sets the ceiling), then single-turn
requests/s at the same concurrency against the same server through our `LLMClient`, a plain
`AsyncOpenAI` loop (the floor any wrapper pays) and distilabel's `OpenAILLM.agenerate` (the issue's
named peer; a benchmark-only dependency: `pip install distilabel`, skipped with the reason if absent).

    python -m bench.agent_throughput --trajectories 1000 --concurrency 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODEL_LATENCY_S = 0.3
TOOL_LATENCY_S = 0.1


def _agent_reply(request: Any) -> str:
    """The scripted teacher: search, browse, image_search, answer (by number of assistant turns)."""
    messages = request.messages
    turns = sum(1 for m in messages if m.get("role") == "assistant")
    task = next(m["content"] for m in messages if m.get("role") == "user")
    subject = re.sub(r"\W+", " ", str(task))[:60].strip()
    if turns == 0:
        body = {"name": "search", "arguments": {"queries": [subject], "top_k": 3}}
    elif turns == 1:
        body = {"name": "browse", "arguments": {"url": "http://search.bench/page/1", "query": subject}}
    elif turns == 2:
        body = {"name": "image_search", "arguments": {"query": subject, "top_k": 2}}
    else:
        answer = {
            "gen_prompt": f"{subject}, as in the first reference image.",
            "reference_images": [{"img_id": "IMG_001", "note": "subject"}],
        }
        return f"<think>Enough.</think>\n<answer>{json.dumps(answer)}</answer>"
    return f"<think>Step {turns + 1}.</think>\n<tool_call>{json.dumps(body)}</tool_call>"


class _SearchHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        time.sleep(TOOL_LATENCY_S)
        parsed = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(parsed.query).get("q", [""])[0]
        if parsed.path == "/search":
            body: Any = [
                {
                    "title": f"{query} article",
                    "url": "http://search.bench/page/1",
                    "snippet": f"{query} facts.",
                }
            ]
        elif parsed.path == "/images":
            body = [
                {"url": f"http://search.bench/img/{i}.png", "title": f"{query} photo {i}"} for i in range(2)
            ]
        else:
            body = {"title": "Page", "text": f"{query} was built in 1889.\nIt is 330 metres tall."}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _SearchServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


def _serve(ports: Any) -> None:
    from tests.servers.openai_server import ScriptedOpenAIServer

    model = ScriptedOpenAIServer(_agent_reply, latency_s=MODEL_LATENCY_S, record=False).start()
    search = _SearchServer(("127.0.0.1", 0), _SearchHandler)
    threading.Thread(target=search.serve_forever, daemon=True).start()
    ports.put((model.port, search.server_address[1]))
    threading.Event().wait()


class _HTTPTools:
    """search / image_search / browse over the loopback search server; images from memory."""

    def __init__(self, base: str, blobs: Any):
        try:
            import httpx2 as httpx  # the openai SDK's HTTP library: a faster connection pool
        except ImportError:
            import httpx

        self.base = base
        from synthesis.http_pool import pooled_transport

        limits = httpx.Limits(max_connections=256)
        # the search provider's client gets the same cheap-pool transport as the LLM client
        self.http = httpx.AsyncClient(timeout=10.0, limits=limits, transport=pooled_transport(limits))
        self.blobs = blobs

    async def _get(self, path: str, query: str) -> Any:
        response = await self.http.get(f"{self.base}{path}", params={"q": query}, timeout=10.0)
        return response.json()

    async def search(self, query: str, top_k: int) -> Any:
        from schemas.protocols import SearchHit

        return [SearchHit(**hit) for hit in await self._get("/search", query)][:top_k]

    async def image_search(self, query: str, top_k: int) -> Any:
        from schemas.protocols import ImageHit

        return [ImageHit(**hit) for hit in await self._get("/images", query)][:top_k]

    async def browse(self, url: str, query: str) -> Any:
        from schemas.protocols import Page

        page = await self._get("/page", query)
        return Page(url=url, final_url=url, status=200, title=page["title"], text=page["text"])

    async def download(self, url: str) -> Any:
        from schemas.protocols import DownloadedImage
        from tests.synthesis_fakes import png_for

        digest = self.blobs.put(png_for(url))
        return DownloadedImage(
            sha256=digest, width=48, height=48, format="PNG", phash="0" * 16, source_url=url
        )


async def _run_trajectories(
    model_url: str, search_url: str, count: int, concurrency: int
) -> tuple[float, dict[str, int]]:
    from schemas.config import LLMEndpointConfig, TeacherConfig
    from schemas.protocols import Tools
    from schemas.rows import Prompt
    from synthesis.llm_teacher import LLMTeacher
    from tests.synthesis_fakes import MemoryBlobs

    blobs = MemoryBlobs()
    backend = _HTTPTools(search_url, blobs)
    tools = Tools(search=backend, browser=backend, images=backend)
    endpoint = LLMEndpointConfig(
        base_url=model_url, model="bench", max_concurrency=concurrency, max_retries=2
    )
    teacher = LLMTeacher(endpoint, TeacherConfig(kind="llm"), fingerprint="bench", blobs=blobs)
    endings: dict[str, int] = {}
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        prompt = Prompt(
            id=f"p{index}", topic_ids=["t"], category="history", difficulty="easy", writer="w",
            prompt=f"Draw landmark number {index} with its height and opening year written below it.",
        )  # fmt: skip
        async with gate:
            result = await teacher.run(prompt, tools)
        endings[result.trajectory.ending] = endings.get(result.trajectory.ending, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    elapsed = time.perf_counter() - started
    await backend.http.aclose()
    return elapsed, endings


async def _single_turn_rates(
    model_url: str, count: int, concurrency: int
) -> tuple[float, float, float | str]:
    import openai

    from schemas.config import LLMEndpointConfig
    from synthesis.llm_client import LLMClient

    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hi."}]
    ours = LLMClient(LLMEndpointConfig(base_url=model_url, model="bench", max_concurrency=concurrency))
    bare = openai.AsyncOpenAI(base_url=model_url, api_key="not-needed", max_retries=0, timeout=30)
    gate = asyncio.Semaphore(concurrency)

    async def timed(call: Any) -> float:
        async def one(i: int) -> None:
            async with gate:
                await call([{**messages[0]}, {"role": "user", "content": f"Say hi {i}."}])

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(count)))
        return count / (time.perf_counter() - started)

    ours_rate = await timed(lambda m: ours.chat(m))
    bare_rate = await timed(lambda m: bare.chat.completions.create(model="bench", messages=m))
    try:
        distilabel = _distilabel_llm(model_url)
    except Exception as error:  # not installed, or incompatible with the installed openai SDK
        return ours_rate, bare_rate, f"{type(error).__name__}: {error}"[:200]
    distilabel_rate = await timed(lambda m: distilabel.agenerate(input=m, max_new_tokens=16))
    return ours_rate, bare_rate, distilabel_rate


def _distilabel_llm(model_url: str) -> Any:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from distilabel.models.llms import OpenAILLM

    llm = OpenAILLM(model="bench", base_url=model_url, api_key="not-needed", max_retries=0, timeout=30)
    llm.load()
    return llm


def _process_cpu_s(pid: int | None = None) -> float:
    """User + system CPU seconds of a process (Linux /proc; this process by default)."""
    if pid is None:
        return time.process_time()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trajectories", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--single-turn-requests", type=int, default=640)
    args = parser.parse_args(argv)

    ports: Any = multiprocessing.Queue()
    server = multiprocessing.Process(target=_serve, args=(ports,), daemon=True)
    server.start()
    model_port, search_port = ports.get(timeout=30)
    model_url, search_url = f"http://127.0.0.1:{model_port}/v1", f"http://127.0.0.1:{search_port}"
    try:
        client_cpu, server_cpu = _process_cpu_s(), _process_cpu_s(server.pid)
        elapsed, endings = asyncio.run(
            _run_trajectories(model_url, search_url, args.trajectories, args.concurrency)
        )
        client_cpu, server_cpu = _process_cpu_s() - client_cpu, _process_cpu_s(server.pid) - server_cpu
        load = os.getloadavg()[0]
        per_trajectory = 4 * MODEL_LATENCY_S + 3 * TOOL_LATENCY_S
        ideal = args.trajectories * per_trajectory / args.concurrency
        print(f"trajectories: {args.trajectories} at concurrency {args.concurrency}; endings {endings}")
        print(
            f"ideal wall time: {ideal:.2f} s; measured: {elapsed:.2f} s; efficiency: {ideal / elapsed:.3f} (target >= 0.85)"
        )
        print(
            f"CPU: client {client_cpu:.1f} s ({client_cpu / args.trajectories * 1000:.1f} ms/trajectory), "
            f"servers {server_cpu:.1f} s; {os.cpu_count()} cores x {elapsed:.1f} s = {elapsed * (os.cpu_count() or 1):.1f} core-s; "
            f"load average {load:.1f}"
        )
        ours, bare, peer = asyncio.run(
            _single_turn_rates(model_url, args.single_turn_requests, args.concurrency)
        )
        line = f"single-turn requests/s at concurrency {args.concurrency}: LLMClient {ours:.1f}, plain AsyncOpenAI {bare:.1f}"
        if isinstance(peer, str):
            line += f"; distilabel OpenAILLM not run ({peer}); ratio vs bare SDK {ours / bare:.3f}"
        else:
            line += f", distilabel OpenAILLM {peer:.1f}; peer ratio (ours / distilabel) {ours / peer:.3f}"
        print(line)
    finally:
        server.terminate()
        server.join(5)


if __name__ == "__main__":
    main()

"""Teacher-loop throughput against loopback servers with fixed latencies, through the production path.

A scripted OpenAI-compatible server (300 ms per model call) and a tool server speaking Serper's API
(100 ms per search) that also serves the pages it links to (100 ms per page) and two reference images
run in a separate process. N LLM-teacher trajectories of 3 tool rounds each (search, browse,
image_search, then the answer: 4 model calls + 3 tool calls = 1.5 s of latency) run at concurrency C
through `LLMTeacher` (real openai SDK, real HTTP, adaptive concurrency as configured by default) with
the production tools: `SerperSearch`, `SafeFetcher` + `PageBrowser` + the page cache for browse, and
`ReferenceImageDownloader` with the image cache and the blob store (`production_tools`).

Prints efficiency = ideal wall time (answered trajectories x 1.5 s / C) / measured wall time (only
trajectories that ended with an answer count; target >= 0.90),
the CPU seconds the client and the server processes used (and the machine's load average: on a
2-core machine shared with other work the CPU, not the client, sets the ceiling), then single-turn
requests/s at the same concurrency against the same server through our `LLMClient`, a plain
`AsyncOpenAI` loop (the floor any wrapper pays) and distilabel's `OpenAILLM.agenerate` (the issue's
named peer, installed by the `bench` extra; if it cannot be imported the line says why).

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
import tempfile
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODEL_LATENCY_S = 0.3
TOOL_LATENCY_S = 0.1
SERPER_KEY_ENV = "GROUNDGEN_BENCH_SERPER_KEY"
SERPER_KEY = "bench-serper-key"


def _agent_reply(request: Any) -> str:
    """The scripted teacher: search, browse, image_search, answer (by number of assistant turns)."""
    messages = request.messages
    turns = sum(1 for m in messages if m.get("role") == "assistant")
    task = next(m["content"] for m in messages if m.get("role") == "user")
    subject = re.sub(r"\W+", " ", str(task))[:60].strip()
    if turns == 0:
        body = {"name": "search", "arguments": {"queries": [subject], "top_k": 3}}
    elif turns == 1:
        url = re.search(r"(http://127\.0\.0\.1:\d+/page/\d+)", json.dumps(messages))  # from the search
        body = {"name": "browse", "arguments": {"url": url.group(1) if url else "", "query": subject}}
    elif turns == 2:
        body = {"name": "image_search", "arguments": {"query": subject, "top_k": 2}}
    else:
        answer = {
            "gen_prompt": f"{subject}, as in the first reference image.",
            "reference_images": [{"img_id": "IMG_001", "note": "subject"}],
        }
        return f"<think>Enough.</think>\n<answer>{json.dumps(answer)}</answer>"
    return f"<think>Step {turns + 1}.</think>\n<tool_call>{json.dumps(body)}</tool_call>"


class _ToolHandler(BaseHTTPRequestHandler):
    """Serper's API (`POST /search`, `POST /images`, key in `X-API-KEY`) and the pages and images it
    links to (`GET /page/<n>`, `GET /img/<n>.png`), each search and page after TOOL_LATENCY_S."""

    protocol_version = "HTTP/1.1"
    images: dict[str, bytes] = {}
    server: _ToolServer
    disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms delayed-ACK stall on kept-alive connections

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        if self.headers.get("X-API-KEY") != SERPER_KEY:
            self._send(403, b'{"message":"Unauthorized."}', "application/json")
            return
        time.sleep(TOOL_LATENCY_S)
        query, base = str(request.get("q", "")), f"http://127.0.0.1:{self.server.server_port}"
        number = re.sub(r"\D", "", query)[:8] or "0"
        if self.path == "/search":
            body: Any = {
                "searchParameters": {"q": query, "type": "search"},
                "organic": [
                    {
                        "title": f"{query} article",
                        "link": f"{base}/page/{number}",
                        "snippet": f"{query}.",
                        "position": 1,
                    }
                ],
            }
        else:
            body = {
                "searchParameters": {"q": query, "type": "images"},
                "images": [
                    {"title": f"{query} photo {i}", "imageUrl": f"{base}/img/{i}.png", "link": f"{base}/page/{number}",
                     "imageWidth": 48, "imageHeight": 48, "position": i + 1}
                    for i in range(2)
                ],
            }  # fmt: skip
        self._send(200, json.dumps(body).encode(), "application/json")

    def do_GET(self) -> None:
        if self.path.startswith("/img/"):
            self._send(200, self.images[self.path], "image/png")
            return
        time.sleep(TOOL_LATENCY_S)
        number = self.path.rsplit("/", 1)[-1]
        html = (
            f"<html><head><title>Landmark {number}</title></head><body><article><h1>Landmark {number}</h1>"
            f"<p>Landmark number {number} was built in 1889 and opened the same year.</p>"
            f"<p>Its height is 330 metres; the opening year is written on a plaque below it.</p>"
            "</article></body></html>"
        )
        self._send(200, html.encode(), "text/html; charset=utf-8")


class _ToolServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


def _serve(ports: Any) -> None:
    from testkit.servers.openai_server import ScriptedOpenAIServer
    from testkit.synthesis_fakes import png_for

    _ToolHandler.images = {f"/img/{i}.png": png_for(f"bench image {i}", 64) for i in range(2)}
    model = ScriptedOpenAIServer(_agent_reply, latency_s=MODEL_LATENCY_S, record=False).start()
    tools = _ToolServer(("127.0.0.1", 0), _ToolHandler)
    threading.Thread(target=tools.serve_forever, daemon=True).start()
    ports.put((model.port, tools.server_address[1]))
    threading.Event().wait()


@asynccontextmanager
async def production_tools(tool_url: str, workdir: Path, concurrency: int) -> AsyncIterator[Any]:
    """The teacher's tools as `flows.resources.Resources.tools` builds them for a Serper config:
    `SerperSearch`, `SafeFetcher` + `PageBrowser` + `CachingBrowser` (page cache) for browse, and
    `ReferenceImageDownloader` with the image cache and the blob store, against the loopback server.
    All pages live on one host here, so the per-host politeness limit is raised to the concurrency
    (on the web they are spread over many hosts)."""
    from extractors.browse import PageBrowser
    from extractors.fetcher import SafeFetcher
    from extractors.image_cache import ImageCache
    from extractors.images import ReferenceImageDownloader
    from extractors.page_cache import FULL_TEXT_CHARS, CachingBrowser, PageCache
    from extractors.serper import SerperSearch
    from schemas.config import FetchConfig, SearchConfig
    from schemas.protocols import Tools
    from warehouse.blobs import BlobStore

    os.environ[SERPER_KEY_ENV] = SERPER_KEY
    port = urllib.parse.urlsplit(tool_url).port
    fetch = FetchConfig(per_host_concurrency=concurrency, allow_hosts=[f"127.0.0.1:{port}"])
    search = SerperSearch.from_config(
        SearchConfig(provider="serper", base_url=tool_url, api_key_env=SERPER_KEY_ENV)
    )
    async with SafeFetcher(fetch) as fetcher:
        try:
            yield Tools(
                search=search,
                browser=CachingBrowser(
                    PageBrowser(fetcher, max_chars=FULL_TEXT_CHARS), PageCache(workdir / "pages.sqlite")
                ),
                images=ReferenceImageDownloader(
                    fetcher, BlobStore(workdir / "blobs"), cache=ImageCache(workdir / "images.sqlite")
                ),
            )
        finally:
            await search.aclose()


async def _run_trajectories(
    model_url: str, tool_url: str, count: int, concurrency: int, adaptive: bool = True
) -> tuple[float, dict[str, int]]:
    from schemas.config import LLMEndpointConfig, TeacherConfig
    from schemas.rows import Prompt
    from synthesis.llm_teacher import LLMTeacher
    from warehouse.blobs import BlobStore

    endpoint = LLMEndpointConfig(
        base_url=model_url,
        model="bench",
        max_concurrency=concurrency,
        max_retries=2,
        adaptive_concurrency=adaptive,
    )
    endings: dict[str, int] = {}
    gate = asyncio.Semaphore(concurrency)  # the stage's rows in flight, as flows.tasks bounds them
    with tempfile.TemporaryDirectory(prefix="agent-bench-") as folder:
        workdir = Path(folder)
        teacher = LLMTeacher(
            endpoint, TeacherConfig(kind="llm"), fingerprint="bench", blobs=BlobStore(workdir / "blobs")
        )
        async with production_tools(tool_url, workdir, concurrency) as tools:

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
            endings["pages fetched"] = tools.browser.fetches  # each trajectory browses its own page
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
    parser.add_argument(
        "--fixed",
        action="store_true",
        help="the teacher at a fixed concurrency (adaptive_concurrency = false)",
    )
    args = parser.parse_args(argv)

    ports: Any = multiprocessing.Queue()
    server = multiprocessing.Process(target=_serve, args=(ports,), daemon=True)
    server.start()
    model_port, tool_port = ports.get(timeout=30)
    model_url, tool_url = f"http://127.0.0.1:{model_port}/v1", f"http://127.0.0.1:{tool_port}"
    try:
        client_cpu, server_cpu = _process_cpu_s(), _process_cpu_s(server.pid)
        elapsed, endings = asyncio.run(
            _run_trajectories(model_url, tool_url, args.trajectories, args.concurrency, not args.fixed)
        )
        client_cpu, server_cpu = _process_cpu_s() - client_cpu, _process_cpu_s(server.pid) - server_cpu
        load = os.getloadavg()[0]
        per_trajectory = 4 * MODEL_LATENCY_S + 3 * TOOL_LATENCY_S
        answered = endings.get("answer", 0)
        ideal = answered * per_trajectory / args.concurrency
        mode = "fixed" if args.fixed else "adaptive (AIMD)"
        print(
            f"trajectories: {args.trajectories} at concurrency {args.concurrency} ({mode} model concurrency, "
            f"production tools); endings {endings}"
        )
        print(
            f"ideal wall time for the {answered} answered: {ideal:.2f} s; measured: {elapsed:.2f} s; "
            f"efficiency: {ideal / elapsed:.3f} (target >= 0.90)"
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

"""Adaptive concurrency wired into the LLM client and the HTTP painter, against a loopback server with
a hidden capacity (429 above it): the level drops, requests still succeed, the run records the level,
and `adaptive_concurrency = false` restores a fixed concurrency."""

from __future__ import annotations

import asyncio
import random

import pytest

from flows.batches import add_usage
from schemas.config import Config, LLMEndpointConfig, PainterConfig
from synthesis.adaptive_concurrency import limit_for, reset_limits
from synthesis.llm_client import LLMClient, UsageMeter
from testkit.servers.capacity_server import CapacityServer, best_throughput, latency_factor

MESSAGES = [{"role": "user", "content": "Say hi."}]


@pytest.fixture(autouse=True)
def fresh_limits():
    reset_limits()
    yield
    reset_limits()


async def no_sleep(delay: float) -> None:
    await asyncio.sleep(0)


def client_for(server: CapacityServer, **overrides) -> LLMClient:
    values = dict(base_url=server.base_url, model="capacity", max_concurrency=12, max_retries=8)
    values.update(overrides)
    return LLMClient(LLMEndpointConfig(**values), sleep=no_sleep, rng=random.Random(0))


async def call_many(client: LLMClient, count: int) -> list[str]:
    results = await asyncio.gather(*(client.chat(MESSAGES, use_cache=False) for _ in range(count)))
    return [result.content for result in results]


def test_the_level_drops_under_refusals_and_every_request_succeeds():
    with CapacityServer(capacity=3, base_latency_s=0.03) as server:
        client = client_for(server)
        assert client.adaptive_limit is not None and client.adaptive_limit.ceiling == 12
        with UsageMeter() as meter:
            answers = asyncio.run(call_many(client, 60))
        stats = server.stats()
    assert answers == ["ok"] * 60
    assert stats["served"] == 60 and stats["rejected"] >= 1
    limit = client.adaptive_limit
    assert limit.decreases >= 1
    assert limit.level < 12
    assert min(level for _, level in limit.levels) <= 4  # backed off from 6 (half the ceiling) towards 3
    usage = meter.by_role({"teacher": client})["teacher"]
    assert usage["calls"] == 60
    assert usage["concurrency_level"] == limit.level
    assert usage["backoffs"] == limit.decreases


def test_clients_of_one_endpoint_share_one_limit():
    with CapacityServer(capacity=4, base_latency_s=0.01) as server:
        first, second = client_for(server), client_for(server)
        other_ceiling = client_for(server, max_concurrency=5)
    assert first.adaptive_limit is second.adaptive_limit
    assert first.adaptive_limit is limit_for(first.endpoint, 12)
    assert other_ceiling.adaptive_limit is not first.adaptive_limit


def test_disabled_means_fixed_concurrency_and_no_recorded_level():
    with CapacityServer(capacity=50, base_latency_s=0.05) as server:
        client = client_for(server, max_concurrency=8, adaptive_concurrency=False)
        with UsageMeter() as meter:
            asyncio.run(call_many(client, 24))
        stats = server.stats()
    assert client.adaptive_limit is None
    assert stats["peak_in_flight"] == 8  # all eight places used from the first request on
    usage = meter.by_role({"writer": client})["writer"]
    assert "concurrency_level" not in usage and usage["calls"] == 24


def test_adaptive_starts_low_and_never_passes_the_ceiling():
    with CapacityServer(capacity=50, base_latency_s=0.1) as server:
        client = client_for(server, max_concurrency=8)
        asyncio.run(call_many(client, 40))
        stats = server.stats()
    assert stats["rejected"] == 0
    assert stats["peak_in_flight"] <= 8
    assert client.adaptive_limit is not None
    assert client.adaptive_limit.levels[0][1] == 4  # slow start from the initial level
    assert max(level for _, level in client.adaptive_limit.levels) == 8  # grew to the ceiling


def test_the_switch_is_left_out_of_dumps_at_its_default():
    endpoint = LLMEndpointConfig(base_url="http://127.0.0.1:1/v1", model="m")
    assert "adaptive_concurrency" not in endpoint.model_dump()
    assert (
        LLMEndpointConfig(
            base_url="http://127.0.0.1:1/v1", model="m", adaptive_concurrency=False
        ).model_dump()["adaptive_concurrency"]
        is False
    )
    assert "adaptive_concurrency" not in PainterConfig().model_dump()
    painter_off = Config(
        painter=PainterConfig(
            kind="http", base_url="http://127.0.0.1:1/v1", model="m", adaptive_concurrency=False
        )
    )
    assert (
        painter_off.painter_fingerprint()
        == Config(
            painter=PainterConfig(kind="http", base_url="http://127.0.0.1:1/v1", model="m")
        ).painter_fingerprint()
    )


def test_run_usage_keeps_the_latest_level_and_the_most_backoffs():
    total: dict[str, dict[str, float]] = {}
    add_usage(
        total, {"teacher": {"calls": 3, "concurrency_level": 8, "concurrency_mean": 6.5, "backoffs": 1}}
    )
    add_usage(
        total, {"teacher": {"calls": 2, "concurrency_level": 5, "concurrency_mean": 6.0, "backoffs": 2}}
    )
    assert total == {"teacher": {"calls": 5, "concurrency_level": 5, "concurrency_mean": 6.0, "backoffs": 2}}


def paint_request(index: int):
    from schemas.protocols import PaintRequest
    from schemas.rows import Prompt, Trajectory

    prompt = Prompt(id="p", topic_ids=["t"], category="art", difficulty="easy", prompt="a poster", writer="w")
    trajectory = Trajectory(
        id=f"trajectory-{index}", prompt_id="p", teacher="t", messages=[], ending="answer",
        gen_prompt=f"a museum poster number {index}",
    )  # fmt: skip
    return PaintRequest(trajectory=trajectory, prompt=prompt, reference_sha256=[])


@pytest.mark.parametrize("adaptive", [True, False])
def test_http_painter_backs_off_on_refusals_and_paints_every_row(adaptive):
    from synthesis.http_painter import HTTPPainter
    from synthesis.painter import painter_fingerprint
    from testkit.servers.images_server import ImagesServer, Status
    from testkit.synthesis_fakes import MemoryBlobs

    async def sleep(seconds: float) -> None:
        await asyncio.sleep(0)

    with ImagesServer() as server:
        server.reply(Status(429), Status(503), Status(429))
        config = PainterConfig(
            kind="http", model="m", base_url=server.base_url, max_concurrency=8, adaptive_concurrency=adaptive
        )
        painter = HTTPPainter(config, MemoryBlobs(), fingerprint=painter_fingerprint(config), sleep=sleep)
        images, errors = painter.paint([paint_request(i) for i in range(12)])
    assert errors == [] and len(images) == 12
    if adaptive:
        assert painter.adaptive_limit is not None and painter.adaptive_limit.decreases >= 1
        summary = painter.concurrency_summary()
        assert summary["backoffs"] >= 1 and summary["concurrency_level"] < 8
    else:
        assert painter.adaptive_limit is None and painter.concurrency_summary() == {}


def test_capacity_server_ideal():
    assert latency_factor(4, 16) == 1.0 and latency_factor(16, 16) == 1.5
    assert best_throughput(16, 0.1) == pytest.approx(
        max(n / (0.1 * latency_factor(n, 16)) for n in range(1, 17))
    )


def test_the_paint_task_records_the_painter_level_in_its_usage(tmp_path):
    from flows.batches import BatchResult
    from flows.tasks import paint_images
    from testkit.servers.images_server import ImagesServer, Status

    with ImagesServer() as server:
        server.reply(Status(429))
        config = Config(
            workdir=str(tmp_path / "work"),
            painter=PainterConfig(kind="http", model="m", base_url=server.base_url, max_concurrency=6),
        )
        result = paint_images.fn(config.model_dump(mode="json"), [paint_request(i) for i in range(5)])
    assert isinstance(result, BatchResult) and len(result.rows) == 5
    levels = result.usage["painter"]
    assert levels["backoffs"] >= 1 and 1 <= levels["concurrency_level"] <= 6  # the 429 (and maybe latency)
    assert set(levels) == {"concurrency_level", "concurrency_mean", "backoffs"}

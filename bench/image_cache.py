"""Reference images: the image cache's own share, per download, against the code without it.

Runs the production reference-image path — `SafeFetcher` (pinned to the corpus server as
`flows/resources.py` builds it), `ReferenceImageDownloader` (`extractors/images.py`), the blob store
and `ImageCache` (`extractors/image_cache.py`) — over `--downloads` downloads drawn (seeded, with
repeats) from `--distinct` images of the offline catalog (scikit-image's photographs, 0.1-1 MB each),
served by the offline corpus server (`extractors/corpus_server.py`) on 127.0.0.1 in a process of its own,
so serving is not counted. The downloads run in batches of `--batch`, each batch's concurrently through
a new fetcher and downloader, as the trajectories stage's tools are built per batch. Two modes:

- shared cache (production): one `ImageCache` in a fresh work directory shared by every batch, so
  each distinct image is fetched and normalised once;
- no cache (the code before the cache): `cache=None`, so every download is fetched, validated,
  re-encoded and hashed again.

Each mode runs `--reps` times, alternating which goes first, each rep in fresh folders, after one
untimed warm-up download (imports, decoder plugins). Prints per-download CPU (the whole process:
the event loop and the worker threads) and wall time, medians over the reps, the ratios no cache /
shared cache, and whether both modes returned the same images (sha256, size, pHash) for every URL.

    python -m bench.image_cache                                # 400 downloads of 20 images, 3 reps
    python -m bench.image_cache --downloads 40 --distinct 5 --reps 1
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import statistics
import tempfile
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path

from extractors.fetcher import SafeFetcher
from extractors.image_cache import ImageCache, image_cache_path
from extractors.image_catalog import load_catalog
from extractors.images import ReferenceImageDownloader
from extractors.offline import CORPUS_ALLOW_HOSTS, connect_to_map
from schemas.config import FetchConfig
from schemas.protocols import DownloadedImage
from warehouse.blobs import BlobStore

MODES = ("shared cache (production)", "no cache (before the cache)")


def serve(distinct: int, ports: Queue, stop: Event) -> None:
    """The corpus server with the first `distinct` catalog images, until `stop` is set (child process)."""
    from extractors.corpus_server import CorpusServer
    from extractors.offline import OfflineCorpus

    with CorpusServer(OfflineCorpus([], load_catalog()[:distinct])) as server:
        ports.put(server.port)
        stop.wait()


def draw_urls(downloads: int, distinct: int, seed: int = 0) -> list[str]:
    """`downloads` catalog URLs drawn with repeats from the first `distinct` images, each at least once."""
    urls = [image.url for image in load_catalog()[:distinct]]
    rng = random.Random(seed)
    drawn = urls[: min(downloads, len(urls))] + [rng.choice(urls) for _ in range(downloads - len(urls))]
    rng.shuffle(drawn)
    return drawn


async def download_all(
    urls: list[str], port: int, folder: Path, batch: int, shared_cache: bool
) -> tuple[list[DownloadedImage], int, int]:
    """Every URL through the production downloader, batch by batch: (images, fetches, normalisations)."""
    config = FetchConfig(allow_hosts=[*CORPUS_ALLOW_HOSTS, f"127.0.0.1:{port}"])
    blobs = BlobStore(folder / "blobs")
    cache = ImageCache(image_cache_path(folder)) if shared_cache else None
    images: list[DownloadedImage] = []
    fetches = normalizations = 0
    try:
        for start in range(0, len(urls), batch):
            async with SafeFetcher(config, connect_to=connect_to_map(port)) as fetcher:
                downloader = ReferenceImageDownloader(fetcher, blobs, cache=cache)
                images += await asyncio.gather(
                    *(downloader.download(url) for url in urls[start : start + batch])
                )
            fetches += downloader.fetches
            normalizations += downloader.normalizations
    finally:
        if cache is not None:
            cache.close()
    return images, fetches, normalizations


def timed(urls: list[str], port: int, batch: int, shared_cache: bool) -> tuple[float, float, list, int, int]:
    with tempfile.TemporaryDirectory(prefix="groundgen-image-cache-") as temp:
        cpu, wall = time.process_time(), time.perf_counter()
        images, fetches, normalizations = asyncio.run(
            download_all(urls, port, Path(temp), batch, shared_cache)
        )
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return cpu, wall, images, fetches, normalizations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--downloads", type=int, default=400, help="downloads in all (default 400)")
    parser.add_argument("--distinct", type=int, default=20, help="distinct images, at most the catalog's 20")
    parser.add_argument("--batch", type=int, default=16, help="downloads per batch (one downloader each)")
    parser.add_argument("--reps", type=int, default=3, help="reps of each mode, alternating the order")
    args = parser.parse_args()
    distinct = min(args.distinct, len(load_catalog()))
    urls = draw_urls(args.downloads, distinct)
    context = multiprocessing.get_context("spawn")
    ports, stop = context.Queue(), context.Event()
    server = context.Process(target=serve, args=(distinct, ports, stop), daemon=True)
    server.start()
    try:
        port = ports.get(timeout=60)
        timed(urls[:1], port, args.batch, shared_cache=False)  # warm-up: imports and decoder plugins
        print(
            f"reference images: {len(urls)} downloads of {distinct} distinct catalog images, batches of "
            f"{args.batch}, corpus server on 127.0.0.1:{port} in its own process, {args.reps} reps"
        )
        results: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
        counts: dict[str, tuple[int, int]] = {}
        seen: dict[str, list] = {}
        for rep in range(args.reps):
            for mode in MODES if rep % 2 == 0 else MODES[::-1]:
                cpu, wall, images, fetches, normalizations = timed(urls, port, args.batch, mode == MODES[0])
                results[mode].append((cpu, wall))
                counts[mode] = (fetches, normalizations)
                seen[mode] = [(i.source_url, i.sha256, i.width, i.height, i.format, i.phash) for i in images]
    finally:
        stop.set()
        server.join(timeout=10)
    print(f"{'mode':<30}{'fetches':>9}{'normalised':>12}{'CPU ms/download':>17}{'wall ms/download':>18}")
    per_download = {}
    for mode in MODES:
        cpu = statistics.median(c for c, _ in results[mode]) / len(urls) * 1000
        wall = statistics.median(w for _, w in results[mode]) / len(urls) * 1000
        per_download[mode] = (cpu, wall)
        print(f"{mode:<30}{counts[mode][0]:>9}{counts[mode][1]:>12}{cpu:>17.2f}{wall:>18.2f}")
    (shared_cpu, shared_wall), (cold_cpu, cold_wall) = per_download[MODES[0]], per_download[MODES[1]]
    print(
        f"per-download ratio no cache / shared cache: CPU {cold_cpu / shared_cpu:.2f}x, "
        f"wall {cold_wall / shared_wall:.2f}x"
    )
    print(f"same images from both modes: {seen[MODES[0]] == seen[MODES[1]]}")


if __name__ == "__main__":
    main()

"""Thumbnails for the report: small web images linked as they are, others as JPEGs, made once
(blobs never change) on a few threads; a missing or corrupt blob becomes a problem, not a crash."""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from warehouse.blobs import BlobStore

THUMB_SIDE = 192

WEB_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "GIF": ".gif", "WEBP": ".webp"}
LINK_MAX_BYTES = 24_000  # a small web image is used as it is (hard link or copy), not re-encoded


@dataclass
class Thumbnails:
    names: dict[str, str] = field(default_factory=dict)  # sha256 -> file name in the thumbs folder
    problems: dict[str, str] = field(default_factory=dict)  # sha256 -> "missing" or "unreadable (...)"


def _link_or_copy(source: Path, target: Path) -> None:
    temp = target.with_name(target.name + ".tmp")
    temp.unlink(missing_ok=True)
    try:
        os.link(source, temp)
    except OSError:  # another file system, or links not allowed
        shutil.copyfile(source, temp)
    os.replace(temp, target)


def make_thumbnail(source: Path, folder: Path, sha: str, side: int = THUMB_SIDE) -> tuple[str, str]:
    """Make the thumbnail of blob `sha` in `folder`: (file name, "") or ("", why it could not be).

    An image already small enough in a web format is decoded (to check it) and linked as it is;
    anything else becomes a JPEG at most `side` pixels wide and high."""
    if not source.exists():
        return "", "missing"
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source) as image:
            extension = WEB_FORMATS.get(image.format or "")
            if extension and max(image.size) <= side and source.stat().st_size <= LINK_MAX_BYTES:
                if image.format == "PNG":
                    image.verify()  # chunk checksums: a truncated or corrupt PNG fails here, not in the page
                else:
                    image.load()
                _link_or_copy(source, folder / f"{sha}{extension}")
                return f"{sha}{extension}", ""
            if image.format == "JPEG":
                image.draft("RGB", (side, side))  # decode at a reduced scale: much less work
            image.thumbnail((side, side), reducing_gap=2.0)
            rgb = image.convert("RGB")
        temp = folder / f"{sha}.jpg.tmp"
        rgb.save(temp, format="JPEG", quality=82)
        os.replace(temp, folder / f"{sha}.jpg")
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        SyntaxError,
    ) as error:  # Pillow: SyntaxError = broken PNG
        return "", f"unreadable ({error.__class__.__name__})"
    return f"{sha}.jpg", ""


def make_thumbnails(blobs: BlobStore, shas: set[str], folder: Path) -> Thumbnails:
    """Thumbnails for every sha256, reusing those an earlier report left in `folder` (blobs never
    change). New ones are made on a few threads, each over its own share of the images."""
    folder.mkdir(parents=True, exist_ok=True)
    result = Thumbnails()
    present = {name.split(".", 1)[0]: name for name in os.listdir(folder) if not name.endswith(".tmp")}
    todo = []
    for sha in sorted(sha for sha in shas if sha):
        if sha in present:
            result.names[sha] = present[sha]
            continue
        try:
            todo.append((sha, blobs.path(sha)))
        except ValueError:
            result.problems[sha] = "unreadable (not a sha256)"

    def work(share: list[tuple[str, Path]]) -> list[tuple[str, str, str]]:
        return [(sha, *make_thumbnail(source, folder, sha)) for sha, source in share]

    workers = max(1, min(4, os.cpu_count() or 1, len(todo)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done in pool.map(work, [todo[i::workers] for i in range(workers)]):
            for sha, name, problem in done:
                if name:
                    result.names[sha] = name
                else:
                    result.problems[sha] = problem
    return result


def thumbnail_src(sha: str, thumbs: Thumbnails, base: str) -> tuple[str, str]:
    """(path of the thumbnail relative to the page, "") or ("", what is wrong with the image)."""
    if not sha:
        return "", "no image"
    if sha in thumbs.names:
        return f"{base}/thumbs/{thumbs.names[sha]}", ""
    problem = thumbs.problems.get(sha, "missing")
    if problem == "missing":
        return "", f"image missing: blob {sha[:12]}… is not in the store"
    return "", f"image {problem}: blob {sha[:12]}…"

"""Dataset versions: export the curated samples of one curator as `exports/<version>/` in Hub layout.

```
exports/v2/
  data/sft-00000-of-00001.parquet   images embedded as the `Image` feature
  data/rl-00000-of-00001.parquet
  README.md                         dataset card (YAML configs + features, funnel, categories, sources)
  manifest.json                     version, parent, counts, ids added/removed, fingerprints, file hashes
```

The version folder is written under a temporary name and renamed when complete, then the `versions`
row is recorded. The same warehouse and config give byte-identical files.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from schemas.config import Config, ExportConfig
from schemas.errors import GroundgenError
from schemas.rows import Version, utc_now
from warehouse.blobs import BlobStore
from warehouse.card import card_facts, render_card, write_funnel_figure
from warehouse.manifest import (
    ShardFile,
    build_manifest,
    dumps_manifest,
    file_sha256,
    loads_manifest,
    manifest_ids,
)
from warehouse.parquet_shards import RL, SFT, duckdb_memory_limit, ordered_rows, write_shards
from warehouse.store import Warehouse

_COUNTER = re.compile(r"^v(\d+)$")
_SEMVER = re.compile(r"^v?\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$")


class ExportError(GroundgenError):
    """An export cannot be made as asked (version exists, bad version name)."""


def version_folder(workdir: Path | str, version: Version) -> Path:
    """Where version `version` lies: `Version.path` is relative to the work directory (the folder of
    `warehouse.duckdb`), so a copied or moved work directory finds its own exports."""
    path = Path(version.path)
    return path if path.is_absolute() else Path(workdir) / path


def _stored_path(folder: Path, workdir: Path) -> str:
    """`folder` relative to the work directory when it lies inside it (always, for `groundgen export`)."""
    try:
        return folder.resolve().relative_to(workdir.resolve()).as_posix()
    except ValueError:
        return str(folder.resolve())


def latest_version(warehouse: Warehouse) -> Version | None:
    """The newest exported version (by creation time), or None before the first export."""
    versions = warehouse.rows(Version, order_by="created_at, id")
    return versions[-1] if versions else None


def next_version_name(existing: list[str], export: ExportConfig) -> str:
    """`v1`, `v2`, … after the highest counter version; or the configured semantic version."""
    if export.version_scheme == "semver":
        if not export.semver or not _SEMVER.match(export.semver):
            raise ExportError(f"export.semver must be a semantic version like 1.2.0, got {export.semver!r}")
        return export.semver
    counters = [int(match.group(1)) for name in existing if (match := _COUNTER.match(name))]
    return f"v{max(counters, default=0) + 1}"


def _same_data(manifest: dict, parent: Version | None) -> bool:
    if parent is None or not parent.manifest_json:
        return False
    old = loads_manifest(parent.manifest_json)
    data = {f["path"]: f["sha256"] for f in manifest["files"] if f["config"]}
    old_data = {f["path"]: f["sha256"] for f in old["files"] if f["config"]}
    # the data files decide: a rerun with other sizes or another work dir has nothing new to publish
    return data == old_data and old.get("curator") == manifest.get("curator")


def export_version(
    warehouse: Warehouse,
    blobs: BlobStore,
    out_root: Path | str,
    config: Config,
    *,
    curator: str,
    code_version: str,
    version: str | None = None,
    skip_unchanged: bool = True,
    repo_hint: str = "",
) -> Version:
    """Export the kept samples of curator `curator` as a new version under `out_root/<version>/`.

    With `skip_unchanged` (the default) and no explicit `version`, an export whose data files are
    identical to the previous version's is discarded and the previous `Version` is returned, so a
    rerun does no new work. Raises `ExportError` when `version` already exists.
    """
    out_root = Path(out_root)
    parent = latest_version(warehouse)
    existing = sorted(warehouse.ids(Version))
    name = version or next_version_name(existing, config.export)
    # export.semver names the version: a re-export of unchanged data gives that version back
    same_semver = version is None and config.export.version_scheme == "semver" and name in existing
    if name in existing and not same_semver:
        raise ExportError(f"version {name} already exists; export a new version instead")
    if "/" in name or name.startswith("."):
        raise ExportError(f"invalid version name {name!r}")

    out_root.mkdir(parents=True, exist_ok=True)
    temp = out_root / f".tmp-{name}"
    shutil.rmtree(temp, ignore_errors=True)
    data_dir = temp / "data"
    try:
        written = {}
        with duckdb_memory_limit(warehouse.connection):  # memory stays bounded whatever the row count
            for spec in (SFT, RL):
                rows = ordered_rows(warehouse.connection, spec, [curator])
                written[spec.name] = write_shards(rows, spec, blobs, data_dir, config.export.max_shard_bytes)

        facts = card_facts(
            warehouse,
            version=name,
            parent=parent.id if parent else "",
            curator=curator,
            config_fingerprint=config.fingerprint(),
            code_version=code_version,
            sft_rows=len(written["sft"].ids),
            rl_rows=len(written["rl"].ids),
            sft_bytes=sum(shard.size for shard in written["sft"].shards),
            rl_bytes=sum(shard.size for shard in written["rl"].shards),
            repo_hint=repo_hint or config.hub.repo,
        )
        card_path = temp / "README.md"
        card_path.write_text(render_card(facts), encoding="utf-8")
        card_file = ShardFile("README.md", "", 0, card_path.stat().st_size, file_sha256(card_path))
        funnel_path = write_funnel_figure(facts, temp)
        funnel_file = ShardFile(funnel_path.name, "", 0, funnel_path.stat().st_size, file_sha256(funnel_path))

        manifest = build_manifest(
            version=name,
            parent=parent.id if parent else "",
            curator=curator,
            config_fingerprint=config.fingerprint(),
            code_version=code_version,
            ids={key: value.ids for key, value in written.items()},
            parent_ids=manifest_ids(parent.manifest_json if parent else ""),
            files=[*written["sft"].shards, *written["rl"].shards, card_file, funnel_file],
        )
        if same_semver:
            shutil.rmtree(temp)
            (named,) = warehouse.rows(Version, "id = ?", [name])
            if _same_data(manifest, named):
                return named
            raise ExportError(
                f"version {name} already exists with other data; set export.semver to a new version"
            )
        if skip_unchanged and version is None and parent is not None and _same_data(manifest, parent):
            shutil.rmtree(temp)
            return parent
        manifest_text = dumps_manifest(manifest)
        (temp / "manifest.json").write_text(manifest_text, encoding="utf-8")
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise

    final = out_root / name
    if final.exists():  # left by an export that crashed after its rename, before recording its row
        shutil.rmtree(final)
    temp.rename(final)
    row = Version(
        id=name,
        parent=parent.id if parent else "",
        created_at=utc_now(),
        sft_rows=len(written["sft"].ids),
        rl_rows=len(written["rl"].ids),
        config_fingerprint=config.fingerprint(),
        code_version=code_version,
        path=_stored_path(final, warehouse.path.parent),
        manifest_json=manifest_text,
    )
    warehouse.insert([row])
    return row

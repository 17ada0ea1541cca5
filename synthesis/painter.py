"""Ground-truth painter on diffusers: grounded prompt (+ reference images) -> PNG in the blob store.

The pipeline loads through the ordinary `DiffusionPipeline.from_pretrained` path a real model uses
(the offline default is the tiny pipeline of `synthesis.tiny_pipeline`). Each row gets its own
`torch.Generator` seeded from (config seed, trajectory id). With `exact=True` (the default) each row
is its own pipeline call, so its PNG is byte-identical whichever rows shared its batch (a flow's
batches change on resume); `exact=False` batches rows by `config.batch_size` (faster on GPUs): the
noise is still per row, but floating-point kernels differ by batch size, so pixels may differ by one
level (the perceptual hash stays the same).

Rows with references, by `painter.pipeline`:
- "auto" (default): if the loaded pipeline itself takes `image` (an edit pipeline such as
  QwenImageEditPlusPipeline or FluxKontextPipeline), as "edit"; otherwise the image-to-image variant
  of the same weights when diffusers has one (first reference as the init image), else text-to-image;
- "text2img": references are ignored;
- "img2img": the image-to-image variant, first reference as the init image (a configuration error when
  the pipeline has none);
- "edit": the loaded pipeline is called with `image=[every chosen reference, up to max_references]`
  (PIL images, aspect kept, fitted into width x height), one row per call; only the arguments its
  `__call__` accepts are passed. A row without references (the teacher found no image of its
  subject) is painted text-to-image from its gen_prompt, as the Gen-Searcher RL loop does, by the
  text-to-image variant of the same weights (`AutoPipelineForText2Image.from_pipe`); a row error only
  when the pipeline has none.

Long prompts: CLIP-style text encoders keep `model_max_length` tokens (77) and drop the rest. Each
row's `Image.prompt_tokens_truncated` counts the tokens of its gen_prompt that no text encoder of the
pipeline sees (the loaded pipeline's own tokenizers; the smallest count when there are several, as
in SDXL/SD3/Flux). The painter warns once per run, not per image: the pipelines' own per-call
"truncated because CLIP can only handle ..." log lines are filtered out.
The `Image.model` of each row is the model id, with `@revision` when the revision is known (the
configured one, or the commit a Hub id resolved to in the local Hugging Face cache).
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from schemas.config import PAINTER_RUNTIME_FIELDS, PainterConfig
from schemas.dependencies import DIFFUSERS_PAINTER
from schemas.errors import ConfigurationError, PainterError, RowError
from schemas.ids import content_id, fingerprint
from schemas.protocols import PaintRequest
from schemas.rows import Image

TINY_MODEL_NAME = "groundgen-tiny-sd"
IMG2IMG_STRENGTH = 0.75
TOKENIZER_NAMES = ("tokenizer", "tokenizer_2", "tokenizer_3")
NO_LIMIT = 1_000_000  # transformers' "no max length" sentinel is larger than this

logger = logging.getLogger(__name__)


class _DropTruncationNotices(logging.Filter):
    """Drops diffusers' per-call "The following part of your input was truncated because CLIP can only
    handle sequences up to 77 tokens" lines; the painter counts truncations per row and warns once."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("was truncated because" in message and "can only handle sequences up to" in message)


_DROP_TRUNCATION_NOTICES = _DropTruncationNotices()


def silence_truncation_notices(pipeline: Any) -> None:
    """Install the filter on the logger of the module that defines the pipeline's class (where
    diffusers logs the notice)."""
    for cls in type(pipeline).__mro__:
        module = getattr(cls, "__module__", "")
        if module.startswith("diffusers."):
            target = logging.getLogger(module)
            if _DROP_TRUNCATION_NOTICES not in target.filters:
                target.addFilter(_DROP_TRUNCATION_NOTICES)


def truncated_tokens(pipeline: Any, prompt: str) -> int:
    """Tokens of `prompt` that no text encoder of the pipeline sees (0 without a length-limited
    tokenizer, e.g. an HTTP API or a pipeline stand-in)."""
    counts = []
    for name in TOKENIZER_NAMES:
        tokenizer = getattr(pipeline, name, None)
        if tokenizer is None or not callable(tokenizer):
            continue
        limit = getattr(tokenizer, "model_max_length", None)
        pipeline_limit = getattr(pipeline, "tokenizer_max_length", None) if name == "tokenizer" else None
        if isinstance(pipeline_limit, int) and isinstance(limit, int) and 0 < pipeline_limit < limit:
            limit = pipeline_limit
        if not isinstance(limit, int) or not 0 < limit < NO_LIMIT:
            continue
        ids = tokenizer(prompt, truncation=False, verbose=False)["input_ids"]
        counts.append(max(0, len(ids) - limit))
    return min(counts) if counts else 0


def painter_fingerprint(config: PainterConfig) -> str:
    """What a painted image depends on (the same fields as `Config.painter_fingerprint`)."""
    return fingerprint(config.model_dump(exclude=set(PAINTER_RUNTIME_FIELDS)))


def model_label(model: str, revision: str = "") -> str:
    """What an `Image` row's `model` says: the model id, with `@revision` when the revision is known."""
    return f"{model}@{revision}" if model and revision else model


def row_seed(config_seed: int, trajectory_id: str) -> int:
    """A 32-bit seed per row: stable across machines, batches and reruns."""
    return int(content_id(config_seed, trajectory_id)[:8], 16)


def cpu_threads() -> int:
    """CPUs this process may use (affinity-aware), the painter's default torch thread count on CPU."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def resolved_revision(model_path: str, revision: str = "") -> str:
    """The revision a model was loaded at: the configured one, or for a Hub id the commit its cached
    snapshot belongs to (read from the local cache only); '' for a local folder or when unknown."""
    if revision or not model_path or Path(model_path).exists():
        return revision
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model_path, "model_index.json")
    except (ImportError, ValueError):  # ValueError: not a valid repo id
        return ""
    if not isinstance(cached, str):
        return ""
    parts = Path(cached).parts
    return parts[-2] if len(parts) >= 3 and parts[-3] == "snapshots" else ""


def accepts(function: Any, name: str, *, any_keyword: bool = True) -> bool:
    """Whether a callable takes a keyword argument `name` (by name, or through **kwargs when
    `any_keyword`)."""
    import inspect

    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
    if name in parameters:
        return True
    return any_keyword and any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def takes_images(pipeline: Any) -> bool:
    """Whether a pipeline is itself reference-conditioned: its `__call__` names an `image` argument."""
    return accepts(pipeline.__call__, "image", any_keyword=False)


_TORCH_THREADS_LOCK = threading.Lock()


@contextmanager
def torch_threads(torch: Any, count: int | None) -> Iterator[None]:
    """Run the block with `count` torch intra-op threads, then restore the caller's count (None: leave
    it). torch's count is process-wide, so blocks of every painter in the process take turns under one
    lock; torch work of other code running meanwhile in another thread sees `count` too."""
    if count is None:
        yield
        return
    with _TORCH_THREADS_LOCK:
        previous = torch.get_num_threads()
        torch.set_num_threads(count)
        try:
            yield
        finally:
            torch.set_num_threads(previous)


def _import_torch_diffusers() -> tuple[Any, Any]:
    """torch and diffusers (the `local` extra), or a `MissingDependencyError` saying to install it."""
    torch, diffusers, _transformers = DIFFUSERS_PAINTER.require()
    return torch, diffusers


def png_bytes(image: Any) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, format="PNG")
    return out.getvalue()


def perceptual_hash(image: Any) -> str:
    import imagehash

    return str(imagehash.phash(image.convert("RGB")))  # 64 bits: 16 hex characters


class DiffusersPainter:
    """`Painter` backend for any diffusers text-to-image pipeline (tiny offline one, or a real model)."""

    def __init__(
        self,
        config: PainterConfig,
        model_path: Path | str | None = None,
        *,
        blobs: Any,
        fingerprint: str | None = None,
        local_files_only: bool | None = None,
        num_threads: int | None = None,
        exact: bool = True,
        pipeline: Any = None,
        text_pipeline: Any = None,
    ):
        """`pipeline`: an already loaded diffusers pipeline (or any callable with the same call
        convention) to use instead of loading `model_path`; `text_pipeline`: likewise, the
        text-to-image pipeline for rows without references when `pipeline` is an edit pipeline;
        `num_threads`: torch threads of its own pipeline calls on CPU (default: every CPU this process
        may use), set for each call and restored after it (`torch_threads`)."""
        self.config = config
        self.model_path = str(model_path or config.model)
        if not self.model_path and pipeline is None:
            raise ConfigurationError(
                "no painter model: pass the path of a pipeline (build the offline one with "
                "synthesis.tiny_pipeline.build_tiny_pipeline) or set painter.model"
            )
        self.blobs = blobs
        self.fingerprint = fingerprint or painter_fingerprint(config)
        self.model_name = model_label(
            config.model or TINY_MODEL_NAME, resolved_revision(config.model, config.revision)
        )
        self.local_files_only = (
            Path(self.model_path).is_dir() if local_files_only is None else local_files_only
        )
        self.num_threads = num_threads
        self.exact = exact
        self._pipeline: Any = pipeline
        self._img2img: Any = None
        self._text2img: Any = text_pipeline
        self._lock = threading.Lock()
        self._truncation_warned = False

    # --- loading ---------------------------------------------------------------------------------

    def _load(self) -> Any:
        with self._lock:
            if self._pipeline is not None:
                return self._pipeline
            torch, diffusers = _import_torch_diffusers()
            dtype = getattr(torch, self.config.dtype)
            with warnings.catch_warnings():  # newer diffusers renamed torch_dtype to dtype
                warnings.simplefilter("ignore", FutureWarning)
                pipeline = diffusers.DiffusionPipeline.from_pretrained(
                    self.model_path,
                    torch_dtype=dtype,
                    revision=self.config.revision or None,
                    local_files_only=self.local_files_only,
                )
            if hasattr(pipeline, "set_progress_bar_config"):
                pipeline.set_progress_bar_config(disable=True)
            silence_truncation_notices(pipeline)
            if self.config.attention_slicing and hasattr(pipeline, "enable_attention_slicing"):
                pipeline.enable_attention_slicing()
            if (
                self.config.cpu_offload
                and self.config.device != "cpu"
                and hasattr(pipeline, "enable_model_cpu_offload")
            ):
                pipeline.enable_model_cpu_offload(device=self.config.device)
            else:
                pipeline = pipeline.to(self.config.device)
            self._pipeline = pipeline
            return pipeline

    def _image_to_image(self) -> Any | None:
        """The reference-conditioned variant sharing the loaded weights, or None when there is none."""
        pipeline = self._load()
        with self._lock:
            if self._img2img is None:
                from diffusers import AutoPipelineForImage2Image

                try:
                    self._img2img = AutoPipelineForImage2Image.from_pipe(pipeline)
                    self._img2img.set_progress_bar_config(disable=True)
                    silence_truncation_notices(self._img2img)
                except (ValueError, KeyError, TypeError, AttributeError):
                    self._img2img = False
            return self._img2img or None

    def _text_to_image(self) -> Any | None:
        """The pipeline for rows painted from text alone: the loaded one, or for an edit pipeline its
        text-to-image variant sharing the weights (None when diffusers has none)."""
        pipeline = self._load()
        if not takes_images(pipeline):
            return pipeline
        with self._lock:
            if self._text2img is None:
                from diffusers import AutoPipelineForText2Image

                try:
                    self._text2img = AutoPipelineForText2Image.from_pipe(pipeline)
                    self._text2img.set_progress_bar_config(disable=True)
                    silence_truncation_notices(self._text2img)
                except (ValueError, KeyError, TypeError, AttributeError):
                    self._text2img = False
            return self._text2img or None

    def reference_mode(self) -> str:
        """How rows with references are painted: 'text2img', 'img2img' or 'edit' (see the module doc)."""
        mode = self.config.pipeline
        if mode == "auto":
            if takes_images(self._load()):
                return "edit"
            return "img2img" if self._image_to_image() is not None else "text2img"
        if mode == "img2img" and self._image_to_image() is None:
            raise ConfigurationError(
                f"painter.pipeline = 'img2img' but {self.model_path} has no image-to-image variant"
            )
        if mode == "edit" and not takes_images(self._load()):
            raise ConfigurationError(
                f"painter.pipeline = 'edit' but {type(self._load()).__name__} does not take image=[...]"
            )
        return mode

    # --- painting --------------------------------------------------------------------------------

    def _references(self, request: PaintRequest, mode: str) -> list[Any]:
        if mode == "text2img" or not request.reference_sha256 or self.config.max_references == 0:
            return []
        from PIL import Image as PILImage

        wanted = request.reference_sha256[: 1 if mode == "img2img" else self.config.max_references]
        references = []
        for sha256 in wanted:
            try:
                data = self.blobs.read(sha256)
            except (FileNotFoundError, KeyError) as error:
                raise PainterError(f"reference image {sha256} is not in the blob store") from error
            with PILImage.open(io.BytesIO(data)) as image:
                rgb = image.convert("RGB")
            box = (self.config.width, self.config.height)
            if mode == "img2img":  # the init image: exactly the output size
                references.append(rgb.resize(box, PILImage.Resampling.LANCZOS))
            else:  # edit pipelines resize references themselves: keep the aspect, bound the size
                rgb.thumbnail(box, PILImage.Resampling.LANCZOS)
                references.append(rgb)
        return references

    def concurrency_summary(self) -> dict[str, float]:
        """`Painter`: a local pipeline has no endpoint concurrency level to record."""
        return {}

    def paint(self, requests: list[PaintRequest]) -> tuple[list[Image], list[RowError]]:
        images: list[Image] = []
        errors: list[RowError] = []
        mode = self.reference_mode()
        text_rows: list[tuple[PaintRequest, list[Any]]] = []
        reference_rows: list[tuple[PaintRequest, list[Any]]] = []
        for request in requests:
            try:
                if not request.trajectory.gen_prompt.strip():
                    raise PainterError(
                        f"trajectory {request.trajectory.id} has no gen_prompt (ending {request.trajectory.ending})"
                    )
                references = self._references(request, mode)
                if not references and self._text_to_image() is None:
                    raise PainterError(
                        f"trajectory {request.trajectory.id} has no reference image and "
                        f"{type(self._load()).__name__} has no text-to-image variant"
                    )
            except (PainterError, OSError) as error:  # OSError: an undecodable reference
                errors.append(RowError.from_exception(request.trajectory.id, error))
                continue
            (reference_rows if references else text_rows).append((request, references))
        size = 1 if self.exact else self.config.batch_size
        for rows, row_mode in ((text_rows, "text2img"), (reference_rows, mode)):
            step = 1 if row_mode == "edit" else size  # an edit call's image list belongs to one prompt
            for start in range(0, len(rows), step):
                images.extend(self._paint_batch(rows[start : start + step], row_mode))
        order = {request.trajectory.id: index for index, request in enumerate(requests)}
        images.sort(key=lambda image: order[image.trajectory_id])
        self._warn_truncation(images)
        return images, errors

    def _warn_truncation(self, images: list[Image]) -> None:
        """One warning per painter (per run), when some gen_prompt was cut by the text encoder."""
        truncated = [image.prompt_tokens_truncated for image in images if image.prompt_tokens_truncated]
        if not truncated or self._truncation_warned:
            return
        self._truncation_warned = True
        logger.warning(
            "%d of %d gen_prompts in this batch are longer than the painter's text encoder takes (up to %d "
            "tokens cut); the text beyond the limit is not painted. Counted per image in "
            "images.prompt_tokens_truncated; this warning is shown once per run.",
            len(truncated),
            len(images),
            max(truncated),
        )

    def _paint_batch(self, rows: list[tuple[PaintRequest, list[Any]]], mode: str) -> list[Image]:
        torch, _ = _import_torch_diffusers()
        config = self.config
        seeds = [row_seed(config.seed, request.trajectory.id) for request, _ in rows]
        generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in seeds]
        arguments: dict[str, Any] = {
            "prompt": [request.trajectory.gen_prompt for request, _ in rows],
            "num_inference_steps": config.steps,
            "guidance_scale": config.guidance,
            "generator": generators,
        }
        started = time.perf_counter()
        if mode == "img2img":
            pipeline = self._image_to_image()
            arguments.update(image=[references[0] for _, references in rows], strength=IMG2IMG_STRENGTH)
        elif mode == "edit":
            pipeline = self._load()
            arguments.update(image=rows[0][1], height=config.height, width=config.width)
            call = pipeline.__call__
            arguments = {key: value for key, value in arguments.items() if accepts(call, key)}
        else:
            pipeline = self._text_to_image()
            arguments.update(height=config.height, width=config.width)
        assert pipeline is not None
        truncated = [truncated_tokens(pipeline, request.trajectory.gen_prompt) for request, _ in rows]
        threads = (self.num_threads or cpu_threads()) if config.device == "cpu" else None
        with torch_threads(torch, threads), torch.inference_mode():
            pictures = pipeline(**arguments).images
        elapsed = (time.perf_counter() - started) / len(rows)
        results = []
        for (request, _), seed, picture, cut in zip(rows, seeds, pictures, truncated, strict=True):
            data = png_bytes(picture)
            sha256 = self.blobs.put(data)
            results.append(
                Image(
                    id=content_id(request.trajectory.id, self.fingerprint),
                    kind="ground_truth",
                    sha256=sha256,
                    width=picture.width,
                    height=picture.height,
                    format="PNG",
                    phash=perceptual_hash(picture),
                    trajectory_id=request.trajectory.id,
                    painter=self.fingerprint,
                    model=self.model_name,
                    seed=seed,
                    steps=config.steps,
                    guidance=config.guidance,
                    elapsed_s=round(elapsed, 4),
                    prompt_tokens_truncated=cut,
                )
            )
        return results

"""The built-in semantic embedder: a sentence model run inside this process by fastembed (ONNX Runtime).

The default, sentence-transformers/all-MiniLM-L6-v2 (384 dimensions, mean pooling, L2-normalised,
256-token truncation, about 90 MB), is read from one of two places:
- `embedding_model_path`: a directory holding the model's ONNX file and tokenizer (air-gapped
  installs, CI). Nothing is ever downloaded for it;
- the model cache `<data_dir>/models` (the Hugging Face hub's cache layout), filled by
  `mindscape model pull` or, in the background, on first use.

One model per process and source, shared by every embedder, server and tenant that uses it
(a test session starts hundreds of servers; HTTP workers are processes and load one each).
It runs in a worker thread of its own: ONNX Runtime and the tokenizer release the GIL, so the
event loop keeps serving while texts are embedded. Requests wait in a bounded queue (full: the
request fails at once, like a provider outage: memories are stored pending). The worker embeds
at most BATCH_TEXTS texts at a time, taken from the waiting requests with the fewest texts left
first, so concurrent requests share a batch and a large request (an import) delays a query by
one batch at most.

When the model is missing every request fails at once with ModelUnavailable: memories are
stored pending and recall matches words. The problem is logged once, in one line with the fix,
and the model is downloaded in the background (never for embedding_model_path or with
HF_HUB_OFFLINE=1), at most once every DOWNLOAD_RETRY_S. A hub that cannot be reached fails
within HUB_TIMEOUT_S. Once the model is there the next request loads it, and the server's
backfill embeds what is pending.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from mindscape.config.models import LOCAL_DEFAULT_MODEL
from mindscape.embeddings.base import EmbeddingError, ModelSpec, ModelUnavailable

if TYPE_CHECKING:
    from fastembed import TextEmbedding

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_MODEL = LOCAL_DEFAULT_MODEL
# Known without loading fastembed (2 s to import), so settings can default the dimensions.

BATCH_TEXTS = 32  # texts per ONNX run: a query waits behind at most this many
QUEUE_REQUESTS = 1024  # requests waiting for the worker; more fail at once
HUB_TIMEOUT_S = 5.0  # per request to the hub; the metadata request is also bounded by wall clock
DOWNLOAD_RETRY_S = 300.0  # a failed background download is tried again after this long

FIX = "run `uv run mindscape model pull` or set MINDSCAPE_EMBEDDING_MODEL_PATH to a directory holding the model"
# What fastembed reads besides the model file; special_tokens_map.json is optional.
_TOKENIZER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
_REQUIRED_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json")


@dataclass(frozen=True)
class ModelSource:
    """Where a local model comes from; one loaded model per source and process."""

    name: str
    path: Path | None  # embedding_model_path: load from here, never download
    cache_dir: Path  # <data_dir>/models
    threads: int | None  # ONNX Runtime intra-op threads; None: its default (all cores)

    @property
    def where(self) -> Path:
        return self.path if self.path is not None else self.cache_dir


@dataclass(frozen=True)
class ModelDescription:
    """fastembed's catalogue entry for a model: its size and where the hub has it."""

    name: str
    dimensions: int
    repo: str | None
    model_file: str
    files: tuple[str, ...]  # everything to fetch, model file included


# fastembed's entry for the default model, so that finding it needs no fastembed import (2 s or
# more); test_local_model checks it against fastembed's catalogue.
DEFAULT_DESCRIPTION = ModelDescription(
    name=DEFAULT_MODEL,
    dimensions=384,
    repo="Qdrant/all-MiniLM-L6-v2-onnx",
    model_file="model.onnx",
    files=("model.onnx", *_TOKENIZER_FILES),
)


def describe_model(name: str) -> ModelDescription:
    """fastembed's entry for `name`; ModelUnavailable if fastembed has no such text model."""
    if name == DEFAULT_MODEL:
        return DEFAULT_DESCRIPTION
    return catalogue_entry(name)


def catalogue_entry(name: str) -> ModelDescription:
    """`name` as fastembed's catalogue describes it."""
    from fastembed import TextEmbedding

    for entry in TextEmbedding.list_supported_models():
        if str(entry["model"]).lower() != name.lower():
            continue
        sources = cast("dict[str, Any]", entry.get("sources") or {})
        model_file = str(entry["model_file"])
        extra = [str(f) for f in cast("list[Any]", entry.get("additional_files") or [])]
        hf = sources.get("hf")
        return ModelDescription(
            name=str(entry["model"]),
            dimensions=int(entry["dim"]),
            repo=str(hf) if hf else None,
            model_file=model_file,
            files=(model_file, *extra, *_TOKENIZER_FILES),
        )
    raise ModelUnavailable(
        f"{name!r} is not a text model fastembed knows; set embedding_model to one of its models, e.g. {DEFAULT_MODEL}"
    )


def is_complete(directory: Path, model_file: str = "model.onnx") -> bool:
    """Whether `directory` holds everything fastembed needs to load a model from it."""
    return all((directory / name).is_file() for name in (model_file, *_REQUIRED_FILES))


def _repo_folder(repo: str) -> str:
    return "models--" + repo.replace("/", "--")  # the hub cache's layout


def cached_model(description: ModelDescription, cache_dir: Path) -> Path | None:
    """The newest complete snapshot of the model in the cache, if any."""
    if description.repo is None:
        return None
    snapshots = cache_dir / _repo_folder(description.repo) / "snapshots"
    try:
        found = [d for d in snapshots.iterdir() if d.is_dir() and is_complete(d, description.model_file)]
    except OSError:
        return None
    return max(found, key=lambda d: d.stat().st_mtime, default=None)


def find_model(source: ModelSource, description: ModelDescription | None = None) -> Path | None:
    """The directory to load the model from, or None when it is not there (nothing is downloaded)."""
    if source.path is not None:
        model_file = description.model_file if description else "model.onnx"
        return source.path if is_complete(source.path, model_file) else None
    return cached_model(description or describe_model(source.name), source.cache_dir)


def directory_size(directory: Path) -> int:
    """Bytes of the files under `directory` (following the hub cache's symlinks into its blobs)."""
    total = 0
    for path in directory.rglob("*"):
        try:
            if path.is_file():
                total += path.stat().st_size
        except OSError:
            continue
    return total


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "TRUE", "YES", "ON"}


def download(
    name: str,
    cache_dir: Path,
    *,
    progress: Callable[[int, int], None] | None = None,
    starting: Callable[[int], None] | None = None,
    timeout_s: float = HUB_TIMEOUT_S,
) -> Path:
    """Fetch the model from the hub into `cache_dir`; the directory to load it from.

    `starting(total bytes)` hears that the hub answered and the transfer begins; `progress(done,
    total)` hears bytes on disk about five times a second. Raises ModelUnavailable with a one-line
    reason (offline, hub unreachable within about `timeout_s`, a failed transfer) and no fix: the
    caller knows which fix applies.
    """
    description = describe_model(name)
    if description.repo is None:
        raise ModelUnavailable(f"fastembed has no hub source for {name}")
    if hub_offline():
        raise ModelUnavailable(f"{name} is not in {cache_dir} and HF_HUB_OFFLINE is set")
    from huggingface_hub import HfApi, snapshot_download  # pyright: ignore[reportUnknownVariableType]
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()  # ours, or one log line, instead of tqdm's
    repo = description.repo
    endpoint = os.environ.get("HF_ENDPOINT") or None
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelUnavailable(f"cannot create the model cache {cache_dir} ({exc.strerror})") from None
    api = HfApi(endpoint=endpoint)
    try:
        # The client's own timeout does not cover name resolution: the wall clock does.
        info = _bounded(lambda: api.model_info(repo, files_metadata=True, timeout=timeout_s), timeout_s + 1)
    except Exception as exc:
        raise ModelUnavailable(f"cannot reach the model hub for {name} ({_reason(exc)})") from None
    sizes = {s.rfilename: s.size or 0 for s in info.siblings or [] if s.rfilename in description.files}
    if description.model_file not in sizes or info.sha is None:
        raise ModelUnavailable(f"the hub repository {repo} has no {description.model_file}")
    total = sum(sizes.values())
    if starting is not None:
        starting(total)
    done: list[str] = []
    failed: list[BaseException] = []

    def fetch() -> None:
        try:
            # A commit hash as revision: no second metadata request (that one has no timeout).
            done.append(
                snapshot_download(
                    repo,
                    revision=info.sha,
                    cache_dir=cache_dir,
                    allow_patterns=list(sizes),
                    etag_timeout=timeout_s,
                    endpoint=endpoint,
                )
            )
        except BaseException as exc:  # reported below, in the caller's thread
            failed.append(exc)

    worker = threading.Thread(target=fetch, name="mindscape-model-download", daemon=True)
    worker.start()
    blobs = cache_dir / _repo_folder(repo) / "blobs"
    while worker.is_alive():
        worker.join(0.2)
        if progress is not None:
            progress(min(directory_size(blobs), total), total)
    if failed or not done:
        reason = _reason(failed[0]) if failed else "no snapshot"
        raise ModelUnavailable(f"downloading {name} from {repo} failed ({reason})")
    found = Path(done[0])
    if not is_complete(found, description.model_file):
        raise ModelUnavailable(f"the download of {name} into {found} is incomplete")
    if progress is not None:
        progress(total, total)
    return found


def _bounded(run: Callable[[], T], seconds: float) -> T:
    """`run()` in a daemon thread, given up on (left behind) after `seconds`."""
    results: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            results.append(run())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="mindscape-hub-request", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {seconds:.0f} s")
    if errors:
        raise errors[0]
    return results[0]


def _reason(exc: BaseException) -> str:
    """One short line: library errors can span paragraphs."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, OSError | ValueError) and cause is not None and str(cause):
        text = " ".join(str(cause).split())  # e.g. the DNS failure behind the hub's "cannot find the files"
    return text if len(text) <= 160 else text[:159] + "…"


@dataclass(eq=False)
class _Job:
    """One request. Its texts are embedded shortest first: a batch is padded to its longest text, so
    texts of similar length share a batch (on LoCoMo turns this doubled the texts per CPU second;
    benchmarks/README.md). The vectors go back in the request's order."""

    texts: list[str]
    future: concurrent.futures.Future[list[list[float]]] | None  # None: a warm-up (load the model)
    vectors: list[list[float]] = field(default_factory=lambda: [])
    order: list[int] = field(init=False)  # positions in `texts`, shortest text first

    def __post_init__(self) -> None:
        self.order = sorted(range(len(self.texts)), key=lambda i: len(self.texts[i]))

    @property
    def left(self) -> int:
        return len(self.texts) - len(self.vectors)

    def take(self, room: int) -> list[str]:
        """The next texts to embed, at most `room` of them."""
        start = len(self.vectors)
        return [self.texts[i] for i in self.order[start : start + room]]

    def fail(self, exc: BaseException) -> None:
        if self.future is not None and not self.future.done():
            self.future.set_exception(exc)

    def finish(self) -> None:
        if self.future is not None and not self.future.done():
            vectors: list[list[float]] = [[] for _ in self.texts]
            for position, vector in zip(self.order, self.vectors, strict=True):
                vectors[position] = vector
            self.future.set_result(vectors)


class LocalModel:
    """One loaded model and its worker thread; see the module docstring."""

    def __init__(self, source: ModelSource) -> None:
        self.source = source
        self.load_seconds: float | None = None
        self._queue: queue.Queue[_Job] = queue.Queue(maxsize=QUEUE_REQUESTS)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._session: TextEmbedding | None = None
        self._description: ModelDescription | None = None
        self._problem: str | None = None
        self._reason = "the embedding model is not installed on this server"  # for agents: no paths
        self._reported: set[str] = set()
        self._downloading = False
        self._last_download: float | None = None
        self._failed_load: tuple[Path, float] | None = None  # (directory, model file mtime) that did not load

    @property
    def problem(self) -> str | None:
        """Why the model cannot embed now (None: loaded, or not tried yet)."""
        return self._problem

    def submit(self, texts: Sequence[str]) -> concurrent.futures.Future[list[list[float]]]:
        future: concurrent.futures.Future[list[list[float]]] = concurrent.futures.Future()
        if not texts:
            future.set_result([])
            return future
        self._put(_Job(list(texts), future))
        return future

    def warm(self) -> None:
        """Load the model (or report it missing, or start its download) without waiting."""
        self._put(_Job([], None))

    def check(self) -> None:
        """At startup: report a missing model (and start its download) now, without loading one.

        A model that is there is loaded by the first request that needs it: servers and CLI
        commands that never embed do not pay for it (a spawned HTTP worker, `doctor`).
        """
        if self._session is None and find_model(self.source, describe_model(self.source.name)) is None:
            self.warm()

    def _put(self, job: _Job) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="mindscape-embed", daemon=True)
                self._thread.start()
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            job.fail(EmbeddingError(f"the local embedding model is busy ({QUEUE_REQUESTS} requests wait); retry"))

    def _run(self) -> None:
        pending: deque[_Job] = deque()
        while True:
            try:
                self._step(pending)
            except Exception as exc:  # the worker must outlive anything one batch does
                log.warning("local embedding worker: %s", _reason(exc))
                error = EmbeddingError(f"the local embedding model failed ({_reason(exc)})")
                while pending:
                    pending.popleft().fail(error)

    def _step(self, pending: deque[_Job]) -> None:
        if not pending:
            self._accept(pending, self._queue.get())
        while True:
            try:
                self._accept(pending, self._queue.get_nowait())
            except queue.Empty:
                break
        session = self._ready()
        if session is None:
            problem = self._problem or f"the embedding model {self.source.name} is not loaded"
            error = ModelUnavailable(problem, self._reason)
            while pending:
                pending.popleft().fail(error)
            return
        batch: list[str] = []
        owners: list[tuple[_Job, int]] = []
        # Shortest first: a query (one text) never waits behind an import's remaining thousands.
        for job in sorted(pending, key=lambda j: j.left):
            room = BATCH_TEXTS - len(batch)
            if room == 0:
                break
            taken = job.take(room)
            if taken:
                batch.extend(taken)
                owners.append((job, len(taken)))
        if batch:
            try:
                vectors = self._embed(session, batch)
            except Exception as exc:
                error = EmbeddingError(f"the local model {self.source.name} failed ({_reason(exc)})")
                log.warning("%s", error)
                for job, _ in owners:
                    job.fail(error)
                    pending.remove(job)
                return
            offset = 0
            for job, count in owners:
                job.vectors.extend(vectors[offset : offset + count])
                offset += count
        for job in [j for j in pending if j.left == 0]:
            pending.remove(job)
            job.finish()

    @staticmethod
    def _accept(pending: deque[_Job], job: _Job) -> None:
        # A request whose caller went away (cancelled) is dropped before any work is spent on it.
        if job.future is None or job.future.set_running_or_notify_cancel():
            pending.append(job)

    @staticmethod
    def _embed(session: TextEmbedding, batch: list[str]) -> list[list[float]]:
        import numpy as np

        matrix = np.vstack(list(session.embed(batch, batch_size=len(batch)))).astype(np.float64)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        matrix = matrix / np.where(norms == 0.0, 1.0, norms)  # the model normalises; cosine must equal dot
        return cast("list[list[float]]", matrix.tolist())

    def _ready(self) -> TextEmbedding | None:
        """The loaded model, loading it if it is there; None (with `problem` set) if not."""
        if self._session is not None:
            return self._session
        source = self.source
        try:
            if self._description is None:
                self._description = describe_model(source.name)
        except ModelUnavailable as exc:
            self._report(str(exc))
            return None
        description = self._description
        found = find_model(source, description)
        if found is None:
            self._missing(description)
            return None
        stamp = (found, _mtime(found / description.model_file))
        if self._failed_load == stamp:
            return None  # the same files failed to load already; `problem` says why
        started = time.perf_counter()
        try:
            from fastembed import TextEmbedding

            session = TextEmbedding(
                description.name, specific_model_path=str(found), cache_dir=str(found), threads=source.threads
            )
        except Exception as exc:
            self._failed_load = stamp
            self._reason = "the embedding model could not be loaded"
            self._report(f"cannot load the embedding model {source.name} from {found} ({_reason(exc)}); {FIX}")
            return None
        self.load_seconds = time.perf_counter() - started
        self._session, self._problem = session, None
        log.info("loaded embedding model %s from %s in %.2f s", source.name, found, self.load_seconds)
        return session

    def _missing(self, description: ModelDescription) -> None:
        source = self.source
        if self._downloading:
            return
        self._reason = "the embedding model is not installed on this server"
        if source.path is not None:
            needs = ", ".join((description.model_file, *_REQUIRED_FILES))
            self._report(f"embedding model {source.name} is not in {source.path} (needs {needs}); {FIX}")
            return
        if hub_offline():
            self._report(f"embedding model {source.name} is not in {source.cache_dir} and HF_HUB_OFFLINE is set; {FIX}")
            return
        now = time.monotonic()
        if self._last_download is not None and now - self._last_download < DOWNLOAD_RETRY_S:
            return  # `problem` still says why the last attempt failed
        self._last_download, self._downloading = now, True
        # Logged once the hub answers (see _download): offline, the failure is the one line.
        self._problem = f"embedding model {source.name} is being downloaded into {source.cache_dir}"
        self._reason = "the embedding model is being downloaded"
        threading.Thread(target=self._download, name="mindscape-model-download", daemon=True).start()

    def _download(self) -> None:
        source, started = self.source, time.perf_counter()

        def starting(total: int) -> None:
            log.warning(
                "downloading embedding model %s (%.0f MB) into %s; until it is there memories are stored pending "
                "and recall matches words",
                source.name,
                total / 1e6,
                source.cache_dir,
            )

        try:
            found = download(source.name, source.cache_dir, starting=starting)
        except Exception as exc:
            self._reason = "the embedding model is not installed on this server"  # the hub is out of reach
            self._report(f"{exc if isinstance(exc, ModelUnavailable) else _reason(exc)}; {FIX}")
            return
        finally:
            self._downloading = False
        log.warning(
            "downloaded embedding model %s into %s in %.1f s", source.name, found, time.perf_counter() - started
        )
        self.warm()

    def _report(self, problem: str) -> None:
        """Set `problem`, and log it (one line) the first time this process meets it."""
        self._problem = problem
        with self._lock:
            if problem in self._reported:
                return
            self._reported.add(problem)
        log.warning("%s (until then memories are stored pending and recall matches words)", problem)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


_models: dict[ModelSource, LocalModel] = {}
_models_lock = threading.Lock()


def shared_model(source: ModelSource) -> LocalModel:
    """The process's one LocalModel for `source`."""
    with _models_lock:
        model = _models.get(source)
        if model is None:
            model = _models[source] = LocalModel(source)
        return model


class LocalEmbedder:
    """Semantic embeddings from the process's shared local model."""

    def __init__(self, spec: ModelSpec, source: ModelSource) -> None:
        if spec.provider != "local" or spec.model != source.name:
            raise ValueError(f"{spec.key} is not the model of {source}")
        self._spec = spec
        self.model = shared_model(source)

    @property
    def spec(self) -> ModelSpec:
        return self._spec

    @property
    def semantic(self) -> bool:
        return True

    def start(self) -> None:
        """Say now if the model is missing (see LocalModel.check)."""
        try:
            self.model.check()
        except ModelUnavailable:  # an unknown model name: the first request reports it
            self.model.warm()

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        vectors = await asyncio.wrap_future(self.model.submit(texts))
        made, expected = len(vectors[0]), self._spec.dimensions
        if made != expected:
            raise EmbeddingError(
                f"{self._spec.model} makes {made}-dimensional vectors, but embedding_dimensions is {expected}: "
                f"set it to {made}"
            )
        return vectors

    async def aclose(self) -> None:
        """Nothing to close: the model stays loaded for the process's other embedders."""

"""Where compiled engines are kept, and the key that decides whether one may be reused.

An engine is only valid for the exact weights, input shape, batch, precision and device it was
built for, and for the library versions that built it. Every engine file has a JSON sidecar
holding its full key and the SHA-256 of the engine file itself; an engine whose sidecar does
not match the key asked for, or whose bytes do not match the recorded hash, is never loaded.
Layout: see README.md in this folder.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import importlib.metadata
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .atomic import atomic_path
from .digest import file_sha256
from .errors import BackendError, Setting

# Revision of the graph `compiled.export_network` gives compilers; engines built from an older
# one are looked for under another key and rebuilt. 2: offset-major sub-pixel stages;
# 3: the tail computed before the last shuffle (arch.LowResolutionTail).
EXPORT_REVISION = 3


class EngineKind(str, enum.Enum):
    """What an engine file is: an AOTInductor package, a TensorRT program or an ONNX graph."""

    COMPILED = "compiled"
    TENSORRT = "tensorrt"
    ONNX = "onnx"


ENGINE_SUFFIXES = {EngineKind.COMPILED.value: ".pt2", EngineKind.TENSORRT.value: ".ep", EngineKind.ONNX.value: ".onnx"}


def default_engines_dir() -> Path:
    """$SRGAN_ENGINES_DIR, else $XDG_CACHE_HOME/srgan/engines, else ~/.cache/srgan/engines."""
    if os.environ.get("SRGAN_ENGINES_DIR"):
        return Path(os.environ["SRGAN_ENGINES_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "srgan" / "engines"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return ""


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on. tile_shape (0, 0) and batch 0 mean dynamic."""

    kind: str  # an EngineKind's value
    model_sha256: str
    tile_shape: tuple[int, int]
    batch: int
    precision: str
    device_kind: str  # cpu or cuda
    compute_capability: str
    torch_version: str
    torch_tensorrt_version: str
    tensorrt_version: str
    export_revision: int  # of the exported graph; see EXPORT_REVISION

    @classmethod
    def for_device(
        cls,
        kind: EngineKind | str,
        model_sha256: str,
        device: torch.device,
        precision: str,
        tile_shape: tuple[int, int] = (0, 0),
        batch: int = 0,
    ) -> EngineKey:
        capability = ""
        if device.type == "cuda":
            major, minor = torch.cuda.get_device_capability(device)
            capability = f"{major}.{minor}"
        return cls(
            kind=EngineKind(kind).value,
            model_sha256=model_sha256,
            tile_shape=(int(tile_shape[0]), int(tile_shape[1])),
            batch=int(batch),
            precision=precision,
            device_kind=device.type,
            compute_capability=capability,
            torch_version=torch.__version__,
            torch_tensorrt_version=_version("torch-tensorrt") if kind == EngineKind.TENSORRT else "",
            tensorrt_version=_version("tensorrt") if kind == EngineKind.TENSORRT else "",
            export_revision=EXPORT_REVISION,
        )

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:24]

    def record(self) -> dict[str, object]:
        return {**asdict(self), "tile_shape": list(self.tile_shape)}


@dataclass(frozen=True)
class EngineTiming:
    """What an engine was measured at when it was built, against eager PyTorch, on that machine.

    engine_tile / eager_tile: side of the square tile each was timed on, its default on that
    device (eager PyTorch runs larger tiles on a CPU, where it computes them in bands).
    overlap: pixels of each tile's side that are context, not kept (the model's overlap).
    engine_seconds / eager_seconds: best time for one such tile through the engine and through
    eager PyTorch at the same precision, measured alternately in one process.
    load_seconds: time to load the engine file, paid once by every process that uses it.
    """

    engine_tile: int
    eager_tile: int
    overlap: int
    engine_seconds: float
    eager_seconds: float
    load_seconds: float

    @property
    def speedup(self) -> float:
        """Eager time over engine time per kept pixel: above 1 when the engine is faster."""
        engine_kept = max(self.engine_tile - 2 * self.overlap, 1) ** 2
        eager_kept = max(self.eager_tile - 2 * self.overlap, 1) ** 2
        return (self.eager_seconds / eager_kept) / (self.engine_seconds / engine_kept)

    @classmethod
    def from_record(cls, record: object) -> EngineTiming | None:
        """The timing in a sidecar's "timing" entry, or None when it is absent, malformed or from
        before tiles of different sizes were compared (those are not assumed faster)."""
        if not isinstance(record, dict):
            return None
        try:
            timing = cls(
                engine_tile=int(record["engine_tile"]),
                eager_tile=int(record["eager_tile"]),
                overlap=int(record["overlap"]),
                engine_seconds=float(record["engine_seconds"]),
                eager_seconds=float(record["eager_seconds"]),
                load_seconds=float(record["load_seconds"]),
            )
        except (KeyError, TypeError, ValueError):
            return None
        usable = min(timing.engine_tile, timing.eager_tile) > 2 * timing.overlap >= 0
        return timing if usable and timing.engine_seconds > 0 and timing.eager_seconds > 0 else None


class EngineCache:
    """Engines under `folder`/KIND/MODEL-SHA-PREFIX/KEY-DIGEST.SUFFIX, each with a .json sidecar."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = Path(folder) if folder else default_engines_dir()

    def path_for(self, key: EngineKey) -> Path:
        return self.folder / key.kind / key.model_sha256[:16] / f"{key.digest()}{ENGINE_SUFFIXES[key.kind]}"

    def lookup(self, key: EngineKey) -> Path | None:
        """The cached engine for `key`, or None when there is none.

        Raises BackendError when a file is there but is stale or foreign: its sidecar holds
        another key or is not a record at all, or its bytes were changed since it was built.
        """
        path = self.path_for(key)
        sidecar = path.with_suffix(path.suffix + ".json")
        if not path.exists():
            return None
        try:
            recorded = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            recorded = None
        if not isinstance(recorded, dict):
            raise BackendError(f"{path}: engine without a readable record; delete it and build again")
        if recorded.get("key") != key.record():
            raise BackendError(
                f"{path}: engine built for another model, shape, device or version; delete it and rebuild"
            )
        try:
            digest = file_sha256(path)
        except OSError as error:
            raise BackendError(f"{path}: cannot read the engine ({error.strerror}); delete it and rebuild") from None
        if recorded.get("sha256") != digest:
            raise BackendError(f"{path}: engine file changed since it was built (corrupt?); delete it and rebuild")
        return path

    def timing(self, key: EngineKey) -> EngineTiming | None:
        """The build-time timing recorded beside the engine for `key`, or None when there is none."""
        return self.timing_of(self.path_for(key))

    @staticmethod
    def timing_of(path: Path) -> EngineTiming | None:
        """The build-time timing recorded beside the engine file `path`, or None when there is none."""
        try:
            recorded = json.loads(path.with_suffix(path.suffix + ".json").read_text())
        except (OSError, ValueError):
            return None
        return EngineTiming.from_record(recorded.get("timing")) if isinstance(recorded, dict) else None

    def require_folder(self) -> None:
        """Create the cache folder if it is missing; check that engines can be written into it.

        Called before a build, which can take minutes, rather than after it. Raises
        BackendError (setting ENGINES_DIR) when the path is a file, or cannot be created or written.
        """
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            reason = "it is a file" if self.folder.is_file() else error.strerror or str(error)
            raise BackendError(
                f"{self.folder}: cannot keep engines there ({reason})", setting=Setting.ENGINES_DIR
            ) from None
        if not os.access(self.folder, os.W_OK | os.X_OK):
            raise BackendError(
                f"{self.folder}: cannot keep engines there (not writable); choose a writable folder",
                setting=Setting.ENGINES_DIR,
            )

    @contextlib.contextmanager
    def scratch(self) -> Iterator[Path]:
        """A temporary folder inside the cache folder for building an engine, removed afterwards.

        Builds happen here, not in the system's temporary folder, so that `store` renames on one
        file system: /tmp is often a tmpfs, and a rename from it into ~/.cache fails (EXDEV).
        Raises BackendError as `require_folder` does.
        """
        self.require_folder()
        with tempfile.TemporaryDirectory(prefix=".building-", dir=self.folder) as folder:
            yield Path(folder)

    def counts(self) -> dict[str, int]:
        """How many engines of each cached kind the folder holds."""
        return {
            kind: len(list((self.folder / kind).glob(f"*/*{suffix}")))
            for kind, suffix in ENGINE_SUFFIXES.items()
            if kind != "onnx"  # written where the user says, never cached
        }

    def store(self, key: EngineKey, built: Path, timing: EngineTiming | None = None) -> Path:
        """Move a freshly built engine file (made in `scratch()`) into the cache with its record,
        and its build-time timing when given.

        Returns its path. Raises BackendError (setting ENGINES_DIR) when the cache cannot be written.
        """
        path = self.path_for(key)
        sidecar = path.with_suffix(path.suffix + ".json")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(built, path)
            with atomic_path(sidecar) as temporary:
                record = {"key": key.record(), "sha256": file_sha256(path)}
                if timing is not None:
                    record["timing"] = asdict(timing)
                temporary.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        except OSError as error:
            raise BackendError(
                f"{path}: cannot store the engine ({error.strerror or error}); choose another folder",
                setting=Setting.ENGINES_DIR,
            ) from error
        return path

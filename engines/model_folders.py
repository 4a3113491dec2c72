"""Where model files live: the bundled default and the user's model folders (not an architecture registry)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .atomic import atomic_path
from .errors import ModelFileError, NoDefaultModelError, Setting
from .model_file import MODEL_SUFFIXES, LoadedModel, load_model

BUNDLED_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_MODEL_NAME = "srgan_x4.safetensors"


def user_models_dir() -> Path:
    """$SRGAN_MODELS_DIR, else $XDG_DATA_HOME/srgan/models, else ~/.local/share/srgan/models."""
    if os.environ.get("SRGAN_MODELS_DIR"):
        return Path(os.environ["SRGAN_MODELS_DIR"])
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data_home / "srgan" / "models"


def model_dirs() -> list[Path]:
    """Folders searched for model files, the bundled one first."""
    return [BUNDLED_DIR, user_models_dir()]


def default_model_path() -> Path:
    """The bundled default 4× model.

    Raises NoDefaultModelError saying how to proceed when it is not installed.
    """
    path = BUNDLED_DIR / DEFAULT_MODEL_NAME
    if not path.is_file():
        raise NoDefaultModelError(
            f"{path}: no default model is installed; give a model file", setting=Setting.MODEL
        )
    return path


def find_model_files() -> list[Path]:
    """Every model file in `model_dirs()`, sorted by folder then name."""
    found = []
    for folder in model_dirs():
        if folder.is_dir():
            found += sorted(
                path for path in folder.iterdir() if path.suffix.lower() in MODEL_SUFFIXES and path.is_file()
            )
    return found


def resolve_model(spec: Path | str) -> Path:
    """The model file `spec` names: a path to a file, else a file name or stem in the model folders.

    `4x-UltraSharp` finds `4x-UltraSharp.pth` (or .safetensors, ...) in the bundled folder or the
    user's; the first folder wins, and within one folder the order of MODEL_SUFFIXES.
    Raises ModelFileError naming the folders searched when neither exists.
    """
    path = Path(spec)
    if path.is_file() or len(path.parts) != 1:
        return path
    for folder in model_dirs():
        candidates = [folder / path.name] + [folder / f"{path.name}{suffix}" for suffix in MODEL_SUFFIXES]
        for candidate in candidates:
            if candidate.suffix.lower() in MODEL_SUFFIXES and candidate.is_file():
                return candidate
    folders = ", ".join(str(folder) for folder in model_dirs())
    raise ModelFileError(
        f"{spec}: no such model file, and no model of that name in the model folders ({folders})",
        setting=Setting.MODEL,
    )


def add_model(source: Path) -> tuple[LoadedModel, Path]:
    """Load a model file once and, when it loads, copy it into the user's model folder.

    Returns the loaded model and the copy's path. A file of the same name already there is kept
    when it holds the same bytes and refused otherwise.
    Raises ModelFileError when the file does not load (nothing is copied then) or cannot be copied.
    """
    loaded = load_model(source)
    folder = user_models_dir()
    target = folder / Path(source).name
    if target.exists():
        if load_model(target).info.sha256 == loaded.info.sha256:
            return loaded, target
        raise ModelFileError(f"{target}: a different model of this name is already in the model folder; rename one")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as temporary:
            shutil.copyfile(source, temporary)
    except OSError as error:
        raise ModelFileError(f"{target}: cannot copy the model there ({error.strerror})") from error
    return loaded, target

"""Where model files live: the bundled default and the user's model folders (not an architecture registry)."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import NoDefaultModelError, Setting
from .model_file import PYTORCH_SUFFIXES, SAFETENSORS_SUFFIXES

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
            f"{path}: no default model is installed; give a .safetensors or .pth model file", setting=Setting.MODEL
        )
    return path


def find_model_files() -> list[Path]:
    """Every model file in `model_dirs()`, sorted by folder then name."""
    suffixes = SAFETENSORS_SUFFIXES + PYTORCH_SUFFIXES
    found = []
    for folder in model_dirs():
        if folder.is_dir():
            found += sorted(path for path in folder.iterdir() if path.suffix.lower() in suffixes and path.is_file())
    return found

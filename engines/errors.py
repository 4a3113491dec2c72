"""The project's exceptions.

Every message is one line that names the file (or value) at fault and says what is wrong with
it. The core does not know which front end will show it, so it never words advice in terms of
command-line flags or dialog fields: an error carries the `Setting` that governs the problem and,
where one is known, a value of it that would work. Each front end turns those two fields into
advice in its own terms (a flag, a dialog field, a config key).
"""

from __future__ import annotations

from enum import Enum


class Setting(str, Enum):
    """The settings a front end exposes and an error may point at; values are the core's names."""

    MODEL = "model"
    DEVICE = "device"
    PRECISION = "precision"
    BACKEND = "backend"
    ENGINES_DIR = "engines_dir"
    TILE_SIZE = "tile_size"
    MAX_PIXELS = "max_pixels"
    OUTPUT_FORMAT = "output_format"
    RECURSIVE = "recursive"
    NAME_TEMPLATE = "name_template"
    OUTPUT = "output"


class SrganError(Exception):
    """Base of every error this project raises on purpose.

    `str(error)` is the one-line problem. `setting` names the setting that governs it (None when
    no setting can fix it, e.g. a corrupt file) and `suggestion` is a value of that setting that
    would work, or None when any other value might.
    """

    def __init__(self, message: str, *, setting: Setting | None = None, suggestion: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting
        self.suggestion = suggestion

    def __reduce__(self):
        # Keep the fields across pickling (child processes, Ray workers).
        return (_rebuild, (type(self), str(self), self.setting, self.suggestion))


def _rebuild(cls: type[SrganError], message: str, setting: Setting | None, suggestion: str | None) -> SrganError:
    error = cls.__new__(cls)
    SrganError.__init__(error, message, setting=setting, suggestion=suggestion)
    return error


class ModelFileError(SrganError):
    """A model file is missing, unreadable, truncated, foreign or inconsistent."""


class NoDefaultModelError(ModelFileError):
    """No model was given and no default model is installed."""


class ImageReadError(SrganError):
    """An input image is missing, not an image, truncated, empty or too large."""


class ImageWriteError(SrganError):
    """An output image cannot be written where or how it was asked for."""


class BackendError(SrganError):
    """A compute backend cannot be created or failed while running."""


class DeviceOutOfMemory(BackendError):
    """The device ran out of memory for one batch of tiles; smaller tiles may fit."""


class Cancelled(SrganError):
    """The caller cancelled an upscale before it finished."""

"""The project's exceptions.

Every message is one line that names the file (or setting) at fault and says how to fix it,
so that the command line can show it to the user as it is.
"""

from __future__ import annotations


class SrganError(Exception):
    """Base of every error this project raises on purpose."""


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

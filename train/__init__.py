"""Training SRGAN generators; uses the `engines` core for models, export and validation."""

from .settings import TrainSettings, load_settings

__all__ = ["TrainSettings", "load_settings"]

"""Training SRGAN generators; uses the `engines` core for models, export and validation."""

from .settings import Adversarial, PixelLoss, SettingsError, Stage, TrainSettings, load_settings

__all__ = ["Adversarial", "PixelLoss", "SettingsError", "Stage", "TrainSettings", "load_settings"]

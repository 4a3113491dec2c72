"""The networks only training needs: the SRGAN discriminator and the VGG19 feature extractor."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from srgan.engines import ModelFileError, check_finite, read_pytorch

from .settings import SettingsError

# torchvision's ImageNet VGG19 weights: file name in the hub cache, and where it is published.
VGG19_FILE = "vgg19-dcbb9e9d.pth"
VGG19_URL = f"https://download.pytorch.org/models/{VGG19_FILE}"
_VGG19_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512)
# Index of the ReLU after conv5_4 in torchvision's `features`; φ5,4 in the paper.
_CONV5_4_RELU = 35
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class Discriminator(nn.Module):
    """The paper's discriminator: 8 conv blocks 64→512, strided every other block, then two
    dense layers. N×3×H×W in [0, 1] → N logits (no sigmoid; the losses apply it).

    batchnorm: False for WGAN-GP, whose gradient penalty assumes per-sample outputs.
    """

    def __init__(self, batchnorm: bool = True) -> None:
        super().__init__()
        widths = (64, 64, 128, 128, 256, 256, 512, 512)
        layers: list[nn.Module] = [nn.Conv2d(3, 64, 3, padding=1), nn.LeakyReLU(0.2)]
        for index in range(1, len(widths)):
            stride = 2 if index % 2 else 1
            layers.append(nn.Conv2d(widths[index - 1], widths[index], 3, stride=stride, padding=1, bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm2d(widths[index]))
            layers.append(nn.LeakyReLU(0.2))
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(6))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(512 * 6 * 6, 1024), nn.LeakyReLU(0.2), nn.Linear(1024, 1)
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(image)).squeeze(1)


class VGGFeatures(nn.Module):
    """VGG19 up to the ReLU after conv5_4, frozen, with ImageNet normalisation built in.

    N×3×H×W in [0, 1] → N×512×(H/16)×(W/16) features. Layer names match torchvision's
    `features.N`, so its state dicts load directly.
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in _VGG19_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU(inplace=True)]
                channels = item
        self.features = nn.Sequential(*layers[: _CONV5_4_RELU + 1])
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False).eval()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.features((image - self.mean) / self.std)


def hub_cache_path() -> Path:
    """Where torch.hub keeps torchvision's VGG19 weights ($TORCH_HOME, else ~/.cache/torch)."""
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch"
    )
    return Path(torch_home) / "hub" / "checkpoints" / VGG19_FILE


def load_vgg19(weights: Path | None, allow_download: bool = True) -> VGGFeatures:
    """VGG19 features with real ImageNet weights: `weights`, else the hub cache, else a download.

    Never returns an untrained network. Raises SettingsError saying how to provide the weights
    when none can be found or the file is not a VGG19 state dict.
    """
    path = Path(weights) if weights else hub_cache_path()
    if not path.is_file() and weights is None and allow_download:
        try:
            state = torch.hub.load_state_dict_from_url(VGG19_URL, progress=False, map_location="cpu")
        except Exception as error:  # urllib raises URLError, OSError, HTTPError and others offline
            raise SettingsError(
                f"{path}: no VGG19 weights here and the download failed ({type(error).__name__}); download {VGG19_URL}"
                " on a machine with internet access and pass it with --vgg-weights PATH"
            ) from None
        return _vgg_from_state(path, state)
    if not path.is_file():
        raise SettingsError(f"{path}: VGG19 weights not found; pass torchvision's {VGG19_FILE} with --vgg-weights PATH")
    try:
        state = read_pytorch(path)  # the core's bounded, code-free reading, as for model files
    except ModelFileError as error:
        raise SettingsError(f"{error} (expected torchvision's {VGG19_FILE})") from None
    return _vgg_from_state(path, state)


def _vgg_from_state(path: Path, state: object) -> VGGFeatures:
    network = VGGFeatures()
    expected = network.state_dict()
    if not isinstance(state, dict):
        raise SettingsError(f"{path}: not a VGG19 state dict; expected torchvision's {VGG19_FILE}")
    features = {key: value for key, value in state.items() if key in expected}
    missing = sorted(set(expected) - set(features))
    wrong = [
        key
        for key, value in features.items()
        if not isinstance(value, torch.Tensor) or not value.is_floating_point() or value.shape != expected[key].shape
    ]
    if missing or wrong:
        problem = f"missing {', '.join(missing[:3])}" if missing else f"shapes of {', '.join(wrong[:3])}"
        raise SettingsError(f"{path}: not torchvision's VGG19 layout ({problem}); expected {VGG19_FILE}")
    try:
        check_finite(path, features)
    except ModelFileError as error:
        raise SettingsError(str(error)) from None
    network.load_state_dict(features)
    return network.requires_grad_(False).eval()

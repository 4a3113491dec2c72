"""What the core knows about a model, whatever its architecture: the one descriptor every front end shows.

`ModelDescriptor` describes a model file (architecture, scale, channels, size requirements,
tiling preference, precisions, overlap, licence hint, hash); its `geometry` (engines/tiling.py)
is the part the tiler needs, carried by every backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .backends import Precision
from .tiling import ModelGeometry


@dataclass(frozen=True)
class ModelDescriptor:
    """One model file as the core understands it, for every architecture.

    architecture: the architecture's name ("SRGAN", "ESRGAN", "Compact", "SPAN", "SwinIR", ...).
    geometry: scale, channels, size requirements, overlap and tiling preference (see ModelGeometry).
    precisions: the precisions the architecture runs correctly in; fp32 always.
    purpose: "SR" for upscalers, "Restoration" for 1× models (denoise, deJPEG, ...).
    licence: a hint at the architecture's code licence where it is known, else "".
    export_refusal: why `torch.export` is not used for this architecture, or None when it is.
    sha256: hex digest of the file's bytes, for caches keyed on the exact weights.
    file_format: "safetensors" or "pytorch".
    tags: the loader's short notes on the variant ("64nf", "23nb", ...).
    details: architecture-specific facts shown by `srgan models` (blocks, value ranges, ...).
    training: a free-form training summary stored in the file, when there is one.
    bf16_cost_db: PSNR-Y (dB) the model loses in bf16 against fp32 on the held-out crops, when measured.
    """

    path: Path
    architecture: str
    geometry: ModelGeometry
    precisions: frozenset[Precision]
    purpose: str = "SR"
    licence: str = ""
    export_refusal: str | None = None
    sha256: str = ""
    file_format: str = "safetensors"
    tags: tuple[str, ...] = ()
    details: dict[str, object] = field(default_factory=dict)
    training: dict[str, str] = field(default_factory=dict)
    bf16_cost_db: float | None = None

    @property
    def scale(self) -> int:
        return self.geometry.scale

    @property
    def channels(self) -> int:
        return self.geometry.channels

    def describe(self) -> dict[str, object]:
        """A JSON-friendly summary for `srgan models` and `srgan info`."""
        requirements = self.geometry.size_requirements
        return {
            "path": str(self.path),
            "format": self.file_format,
            "arch": self.architecture,
            "purpose": self.purpose,
            "scale": self.scale,
            "input_channels": self.channels,
            "output_channels": self.channels,
            "size_requirements": {
                "minimum": requirements.minimum,
                "multiple_of": requirements.multiple_of,
                "square": requirements.square,
            },
            "tiling": self.geometry.tiling.value,
            "overlap": self.geometry.overlap,
            "precisions": sorted(precision.value for precision in self.precisions),
            "compiled_engine": self.export_refusal is None,
            "licence": self.licence,
            "tags": list(self.tags),
            **self.details,
            "training": dict(self.training),
            "sha256": self.sha256,
            "bf16_cost_db": self.bf16_cost_db,
        }

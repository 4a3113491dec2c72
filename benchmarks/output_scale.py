"""What `--scale` below the model's factor is worth: the model's output resampled down against a
direct resize of the low-resolution image, on the held-out photos' centre crops.

Each held-out photo's centre crop (--crop pixels) is degraded as in training (antialiased
bicubic ÷ the model's scale); the reference is the crop resized with Lanczos to --factor times
the degraded size. Scores are PSNR on Y with `factor` pixels shaved from each border.

    python benchmarks/output_scale.py --photos data/photos --factor 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from srgan.engines import create_upscaler, default_model_path, load_model, resize_pixels, scaled_size
from srgan.train.data import degraded_pair, find_images, load_photo, split_photos, to_uint8
from srgan.train.metrics import psnr_y


def as_tensor(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels).permute(2, 0, 1)[None].float().div(255)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="model file; the bundled one by default")
    parser.add_argument("--photos", type=Path, default=Path("data/photos"))
    parser.add_argument("--factor", type=float, default=2.0, help="output scale, below the model's")
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--holdout", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    model = load_model(args.model or default_model_path())
    upscaler = create_upscaler(model, "cpu")
    split = split_photos(find_images(args.photos), args.holdout, args.seed)
    shave = int(np.ceil(args.factor))
    rows = []
    print(f"{'photo':44} {'bicubic':>8} {'Lanczos':>8} {'srgan':>8}   (×{args.factor:g}, PSNR-Y dB)")
    for path in split.validation:
        hr, lr = degraded_pair(load_photo(path, 2048), model.scale, args.crop)
        size = scaled_size(*lr.shape[:2], args.factor)
        reference = resize_pixels(hr, *size)
        bicubic = to_uint8(F.interpolate(as_tensor(lr), size=size, mode="bicubic").clamp_(0, 1))[0]
        candidates = (bicubic, resize_pixels(lr, *size), resize_pixels(upscaler.upscale(lr), *size))
        rows.append([psnr_y(candidate, reference, shave) for candidate in candidates])
        print(f"{path.name[:44]:44} " + " ".join(f"{value:8.2f}" for value in rows[-1]))
    mean = np.mean(np.array(rows), axis=0)
    print(f"{'mean':44} " + " ".join(f"{value:8.2f}" for value in mean))


if __name__ == "__main__":
    main()

"""Held-out PSNR/SSIM of a model against bicubic, on the training run's validation photos.

The held-out photos are the ones `srgan train` set aside (same folder, hold-out count and seed
give the same split). Each is prepared as in training (longer side at most --max-side), trimmed
to a multiple of the scale, downscaled with the training degradation (antialiased bicubic) and
upscaled whole through the shared core and through bicubic. Scores are on Y with `scale`
pixels shaved from each border.

    python benchmarks/heldout_psnr.py --model engines/weights/srgan_x4.safetensors --photos data/photos
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from srgan.engines import create_upscaler, load_model
from srgan.train.data import bicubic_upscale, degraded_pair, find_images, load_photo, split_photos, to_uint8
from srgan.train.metrics import psnr_y, ssim_y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--photos", type=Path, default=Path("data/photos"))
    parser.add_argument("--holdout", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-side", type=int, default=2048)
    args = parser.parse_args()

    model = load_model(args.model)
    scale = model.scale
    upscaler = create_upscaler(model, "auto")
    split = split_photos(find_images(args.photos), args.holdout, args.seed)
    rows = []
    print(f"model {args.model} ({model.info.training.get('steps', '?')} steps), {upscaler.backend.name}")
    print(f"{'photo':44} {'size':>11} {'bicubic':>8} {'srgan':>8} {'gain':>6} {'SSIM bic':>8} {'SSIM sr':>8}")
    for path in split.validation:
        hr, lr = degraded_pair(load_photo(path, args.max_side), scale)
        bicubic = to_uint8(bicubic_upscale(torch.from_numpy(lr).permute(2, 0, 1)[None].float().div(255), scale))[0]
        sr = upscaler.upscale(lr)
        scores = (psnr_y(bicubic, hr, scale), psnr_y(sr, hr, scale), ssim_y(bicubic, hr, scale), ssim_y(sr, hr, scale))
        rows.append(scores)
        size = f"{hr.shape[1]}×{hr.shape[0]}"
        print(
            f"{path.name[:44]:44} {size:>11} {scores[0]:8.2f} {scores[1]:8.2f} {scores[1] - scores[0]:+6.2f} "
            f"{scores[2]:8.4f} {scores[3]:8.4f}"
        )
    mean = np.mean(np.array(rows), axis=0)
    print(f"{'mean':44} {'':>11} {mean[0]:8.2f} {mean[1]:8.2f} {mean[1] - mean[0]:+6.2f} {mean[2]:8.4f} {mean[3]:8.4f}")


if __name__ == "__main__":
    main()

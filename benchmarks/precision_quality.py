"""What half precision costs in quality: the bundled model in fp32 against bf16 (CPU) or fp16
(CUDA), on the held-out photos' centre crops degraded as in training.

    python benchmarks/precision_quality.py --photos data/photos [--record]

The mean PSNR-Y lost (fp32 minus the half precision) is the model's bf16 cost; `--record` writes
it into the model file's metadata (`bf16_cost_db`), where `--precision auto` reads it: on a CPU
with native bf16 it keeps fp32 for a model whose recorded cost exceeds 0.05 dB.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from srgan.engines import (
    BF16_COST_LIMIT_DB,
    Precision,
    create_upscaler,
    default_model_path,
    load_model,
    record_bf16_cost,
)
from srgan.train.data import degraded_pair, find_images, load_photo, split_photos
from srgan.train.metrics import psnr_y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="model file; the bundled one by default")
    parser.add_argument("--photos", type=Path, default=Path("data/photos"))
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--holdout", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--record", action="store_true", help="write the bf16 cost into the model file (CPU only)")
    args = parser.parse_args()

    model_path = args.model or default_model_path()
    model = load_model(model_path)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    half = Precision.FP16 if device == "cuda" else Precision.BF16
    upscalers = [create_upscaler(model, device, precision, backend="eager") for precision in (Precision.FP32, half)]
    split = split_photos(find_images(args.photos), args.holdout, args.seed)
    rows = []
    print(f"{'photo':44} {'fp32':>8} {half.value:>8} {'max diff':>9} {'mean diff':>10}")
    for path in split.validation:
        hr, lr = degraded_pair(load_photo(path, 2048), model.scale, args.crop)
        full, reduced = (upscaler.upscale(lr) for upscaler in upscalers)
        difference = np.abs(full.astype(int) - reduced)
        rows.append((psnr_y(full, hr, model.scale), psnr_y(reduced, hr, model.scale)))
        print(
            f"{path.name[:44]:44} {rows[-1][0]:8.3f} {rows[-1][1]:8.3f} {difference.max():9d} {difference.mean():10.3f}"
        )
    mean = np.mean(np.array(rows), axis=0)
    print(f"{'mean':44} {mean[0]:8.3f} {mean[1]:8.3f}")
    cost = float(mean[0] - mean[1])
    verdict = "over" if cost > BF16_COST_LIMIT_DB else "within"
    limit = f"the {BF16_COST_LIMIT_DB} dB that --precision auto accepts"
    print(f"{half.value} cost: {cost:.4f} dB PSNR-Y ({verdict} {limit})")
    if args.record and half is Precision.BF16:
        record_bf16_cost(model_path, cost)
        print(f"recorded bf16_cost_db={cost:.4f} in {model_path}")


if __name__ == "__main__":
    main()

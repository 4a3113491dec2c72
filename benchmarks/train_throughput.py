"""Training throughput of the paper's generator, and where the time goes.

Prints, from one run, iterations per second and HR pixels per second for the pretraining step
and the GAN step (generator + discriminator + VGG19 φ5,4), split into data (cutting crops from
photos in memory and the bicubic degradation) and compute (forward, backward, optimizer, EMA).
Photos are made up (smooth noise) so the script needs nothing downloaded; the VGG19 has random
weights, which costs the same time as ImageNet ones and is used for timing only.

    python benchmarks/train_throughput.py [--steps 10 --batch-size 16 --crop 96 --device auto --precision auto]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from srgan.engines import GeneratorConfig, SRGANGenerator, save_model
from srgan.train import TrainSettings
from srgan.train.data import PhotoSplit
from srgan.train.networks import VGGFeatures
from srgan.train.trainer import Trainer


def make_photos(folder: Path, count: int = 6, size: int = 512) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        small = Image.fromarray((rng.random((size // 16, size // 16, 3)) * 255).astype(np.uint8))
        path = folder / f"photo{index}.png"
        small.resize((size, size), Image.Resampling.BICUBIC).save(path)
        paths.append(path)
    return paths


def measure(trainer: Trainer, steps: int) -> tuple[float, float]:
    """Seconds per step spent on data and on everything else, after two warm-up steps."""
    original_batch = trainer._batch
    data_seconds = 0.0

    def timed_batch():
        nonlocal data_seconds
        started = time.perf_counter()
        batch = original_batch()
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        data_seconds += time.perf_counter() - started
        return batch

    trainer._batch = timed_batch
    for _ in range(2):
        trainer.train_step()
    data_seconds = 0.0
    started = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    total = (time.perf_counter() - started) / steps
    return data_seconds / steps, total - data_seconds / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--crop", type=int, default=96, help="side of the HR crops")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        photos = make_photos(folder)
        split = PhotoSplit(training=photos[:-1], validation=photos[-1:])
        pretrained = folder / "pretrained.safetensors"
        save_model(pretrained, SRGANGenerator(GeneratorConfig()))
        vgg = folder / "vgg19-random.pth"
        torch.save(
            {f"features.{key.split('.', 1)[1]}": value for key, value in VGGFeatures().state_dict().items()}, vgg
        )
        base = TrainSettings(
            batch_size=args.batch_size,
            hr_crop=args.crop,
            device=args.device,
            precision=args.precision,
            max_side=0,
            validation_crop=96,
        )
        stages = {
            "pretrain": base,
            "gan (bce)": dataclasses.replace(base, stage="gan", init_generator=str(pretrained), vgg_weights=str(vgg)),
        }
        pixels = args.batch_size * base.hr_crop**2
        print(
            f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch_size}×{base.hr_crop}², "
            f"16 blocks × 64 channels, precision {args.precision}"
        )
        print(f"{'stage':12} {'device':8} {'it/s':>7} {'HR Mpx/s':>9} {'data ms':>8} {'compute ms':>11} {'data %':>7}")
        for name, settings in stages.items():
            trainer = Trainer(settings, split, folder, warn=print)
            data, compute = measure(trainer, args.steps)
            rate = 1 / (data + compute)
            print(
                f"{name:12} {trainer.device.type:8} {rate:7.2f} {rate * pixels / 1e6:9.2f} {data * 1e3:8.1f} "
                f"{compute * 1e3:11.1f} {100 * data / (data + compute):6.1f}%"
            )


if __name__ == "__main__":
    main()

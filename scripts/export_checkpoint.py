"""Export the EMA generator of a training run's latest checkpoint as a model file.

Used to bundle the default model while its run goes on; `srgan train` exports by itself when
a run completes.

    python scripts/export_checkpoint.py runs/default engines/weights/srgan_x4.safetensors --half
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch

from srgan.engines import GeneratorConfig, SRGANGenerator, load_generator, save_model
from srgan.train import load_settings
from srgan.train.data import find_images
from srgan.train.run import SETTINGS_NAME
from srgan.train.trainer import CHECKPOINT_NAME, lineage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--half", action="store_true", help="store float16 weights")
    parser.add_argument(
        "--photos", type=Path, default=Path("data/photos"), help="the run's photo folder, for the summary"
    )
    args = parser.parse_args()

    settings = load_settings(args.run_dir / SETTINGS_NAME)
    state = torch.load(args.run_dir / CHECKPOINT_NAME, map_location="cpu", weights_only=True)
    generator = SRGANGenerator(GeneratorConfig(settings.scale, settings.blocks, settings.channels, settings.batchnorm))
    generator.load_state_dict(state["ema"])
    summary = {
        "stage": settings.stage,
        "data": f"{len(find_images(args.photos))} photos from Debian wallpaper packages ({settings.holdout} held out)",
        "steps": str(state["step"]),
        "batch": f"{settings.batch_size}×{settings.hr_crop}²",
        "loss": settings.pixel_loss,
        "learning_rate": str(settings.learning_rate),
        **lineage(load_generator(Path(settings.init_generator))[1] if settings.init_generator else None, state["step"]),
    }
    with (args.run_dir / "metrics.csv").open() as stream:
        validations = [row for row in csv.DictReader(stream) if row["psnr"] and int(row["step"]) <= state["step"]]
    if validations:
        summary["val_psnr_y"] = f"{float(validations[-1]['psnr']):.2f}"
        summary["val_bicubic_psnr_y"] = f"{float(validations[-1]['bicubic_psnr']):.2f}"
    save_model(args.output, generator.eval(), summary, half=args.half)
    print(f"{args.output}: step {state['step']}, {summary}")


if __name__ == "__main__":
    main()

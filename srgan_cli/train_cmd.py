"""`srgan train`: settings from a TOML file and flags, progress with Rich."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from srgan.engines import Precision
from srgan.train import Adversarial, Stage, load_settings
from srgan.train.run import SETTINGS_NAME, TrainingEvents, run_training, start_distributed, stop_distributed
from srgan.train.trainer import Validation

from .state import CliState


def train(
    ctx: typer.Context,
    data_dir: Annotated[
        Path, typer.Argument(help="Folder of training photos (searched recursively).", show_default=False)
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Run folder: settings, checkpoints, metrics, validation grids, model.")
    ],
    config: Annotated[
        Optional[Path], typer.Option("--config", help="TOML file of settings; flags override it.")
    ] = None,
    lr_dir: Annotated[
        Optional[Path], typer.Option("--lr-dir", help="LR images paired by name with DATA_DIR's.")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from its checkpoint, with its saved settings.")
    ] = False,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Optimizer steps in all.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Crops per step.")] = None,
    learning_rate: Annotated[Optional[float], typer.Option("--learning-rate", help="Adam learning rate.")] = None,
    lr_drop_step: Annotated[
        Optional[int], typer.Option("--lr-drop-step", help="Step after which the learning rate is divided by 10.")
    ] = None,
    blocks: Annotated[Optional[int], typer.Option("--blocks", help="Residual blocks.")] = None,
    channels: Annotated[Optional[int], typer.Option("--channels", help="Feature channels.")] = None,
    hr_crop: Annotated[Optional[int], typer.Option("--hr-crop", help="High-resolution crop side.")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = None,
    precision: Annotated[
        Optional[Precision], typer.Option("--precision", help="auto, fp32, bf16 or fp16 (CUDA).", case_sensitive=False)
    ] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed for weights, crops and the split.")] = None,
    validate_every: Annotated[
        Optional[int], typer.Option("--validate-every", help="Steps between validations.")
    ] = None,
    checkpoint_every: Annotated[
        Optional[int], typer.Option("--checkpoint-every", help="Steps between checkpoints.")
    ] = None,
    holdout: Annotated[Optional[int], typer.Option("--holdout", help="Photos held out for validation.")] = None,
    stage: Annotated[Optional[Stage], typer.Option("--stage", help="pretrain or gan.", case_sensitive=False)] = None,
    init_generator: Annotated[
        Optional[Path], typer.Option("--init-generator", help="Model file to start from.")
    ] = None,
    vgg_weights: Annotated[
        Optional[Path], typer.Option("--vgg-weights", help="torchvision VGG19 weights file.")
    ] = None,
    adversarial: Annotated[
        Optional[Adversarial], typer.Option("--adversarial", help="bce, ragan or wgan-gp.", case_sensitive=False)
    ] = None,
) -> None:
    """Train a 4× SRGAN generator on a folder of photos: SRResNet pretraining, then the GAN stage.

    Under torchrun every process trains (DDP) and rank 0 reports: torchrun --nproc-per-node N -m srgan.cli train ...
    """
    ctx.ensure_object(CliState)
    overrides = dict(
        steps=steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        lr_drop_step=lr_drop_step,
        blocks=blocks,
        channels=channels,
        hr_crop=hr_crop,
        device=device,
        precision=precision,
        seed=seed,
        validate_every=validate_every,
        checkpoint_every=checkpoint_every,
        holdout=holdout,
        stage=stage,
        init_generator=str(init_generator) if init_generator else None,
        lr_dir=str(lr_dir) if lr_dir else None,
        vgg_weights=str(vgg_weights) if vgg_weights else None,
        adversarial=adversarial,
    )
    saved = out / SETTINGS_NAME
    if resume and config is None and saved.is_file():
        config = saved  # a resumed run keeps its settings; flags may change only its schedule
    settings = load_settings(config, overrides)
    console = Console(highlight=False)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    task = progress.add_task("training", total=settings.steps, status="")
    clock = {"start": time.perf_counter(), "first": 0}

    def started(first: int, last: int, photos: int) -> None:
        clock["first"] = first
        console.print(f"training {photos} photos, steps {first}→{last}, run folder {escape(str(out))}")
        progress.update(task, completed=first)

    def stepped(step: int, losses: dict[str, float]) -> None:
        rate = (step - clock["first"]) / max(time.perf_counter() - clock["start"], 1e-9)
        parts = " ".join(f"{name} {value:.4g}" for name, value in losses.items() if name != "total")
        progress.update(task, completed=step, status=f"loss {losses['total']:.5f} ({parts}) · {rate:.2f} it/s")

    def validated(result: Validation) -> None:
        console.print(
            f"step {result.step}: PSNR-Y {result.psnr:.2f} dB (bicubic {result.bicubic_psnr:.2f}), "
            f"SSIM-Y {result.ssim:.4f} (bicubic {result.bicubic_ssim:.4f})"
        )

    events = TrainingEvents(
        started=started,
        stepped=stepped,
        validated=validated,
        warned=lambda message: console.print(f"[yellow]warning:[/] {escape(message)}"),
    )
    if not start_distributed(settings.device):
        try:
            run_training(settings, data_dir, out, resume)
        finally:
            stop_distributed()
        return
    try:
        with progress:
            result = run_training(settings, data_dir, out, resume, events)
    finally:
        stop_distributed()
    console.print(f"model written to {escape(str(result.model))} after {result.steps} steps")

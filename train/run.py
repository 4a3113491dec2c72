"""One training run from photos to an exported model file, reporting through callbacks."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist

from srgan.engines import atomic_path

from .data import Photo, PhotoSplit, find_images, find_pairs, split_photos
from .settings import SettingsError, TrainSettings, load_settings
from .trainer import CHECKPOINT_NAME, MODEL_NAME, MetricsLog, Trainer, Validation

SETTINGS_NAME = "settings.toml"
# Settings a resumed run may change: how long it goes on, when its learning rate drops and how
# often it reports.
SCHEDULE_SETTINGS = frozenset({"steps", "lr_drop_step", "checkpoint_every", "validate_every", "device"})


def _ignore(*_: object) -> None:
    return None


@dataclass(frozen=True)
class TrainingEvents:
    """Callbacks a front end supplies; each defaults to doing nothing."""

    started: Callable[[int, int, int], None] = _ignore  # first step, last step, training photos
    stepped: Callable[[int, dict[str, float]], None] = _ignore  # step, losses ("total" and parts)
    validated: Callable[[Validation], None] = _ignore
    checkpointed: Callable[[Path], None] = _ignore
    warned: Callable[[str], None] = _ignore


@dataclass
class RunResult:
    model: Path
    steps: int
    last_validation: Validation | None = None
    validations: list[Validation] = field(default_factory=list)


def start_distributed(device: str) -> bool:
    """Join the process group torchrun describes in the environment (WORLD_SIZE > 1).

    NCCL for CUDA devices, gloo otherwise. Returns True when this process is rank 0 (or alone).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if device != "cpu" and torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return not dist.is_initialized() or dist.get_rank() == 0


def stop_distributed() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def prepare_run_dir(run_dir: Path, settings: TrainSettings, resume: bool) -> None:
    """Create the run folder and save the settings; refuse to mix runs.

    Raises SettingsError when the folder holds another run and --resume was not given, when
    resuming with settings other than the ones saved, or when resuming a run that exported a model
    but has no checkpoint (starting again from step 0 would overwrite that model).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    saved = run_dir / SETTINGS_NAME
    if saved.exists():
        if not resume:
            raise SettingsError(f"{run_dir}: already holds a run; pass --resume to continue it or choose another --out")
        if not (run_dir / CHECKPOINT_NAME).exists() and (run_dir / MODEL_NAME).exists():
            raise SettingsError(
                f"{run_dir}: has no {CHECKPOINT_NAME} to resume from, only a finished {MODEL_NAME}, which a new"
                " start would overwrite; move the model away to start again, or choose another --out"
            )
        before = load_settings(saved)
        changed = [
            item.name
            for item in fields(settings)
            if item.name not in SCHEDULE_SETTINGS and getattr(before, item.name) != getattr(settings, item.name)
        ]
        if changed:
            raise SettingsError(
                f"{saved}: the run was started with other {', '.join(changed)}; resume with the same ones"
            )
    with atomic_path(saved) as temporary:
        temporary.write_text(settings.to_toml(), encoding="utf-8")


def run_training(
    settings: TrainSettings,
    data_dir: Path,
    run_dir: Path,
    resume: bool = False,
    events: TrainingEvents = TrainingEvents(),
) -> RunResult:
    """Train until settings.steps, checkpointing and validating on the way; export the model.

    On KeyboardInterrupt a checkpoint is written before the interrupt propagates, so --resume
    continues from the last step. Under torchrun (torch.distributed initialised by the caller)
    every rank trains and rank 0 alone validates, checkpoints, logs and exports.
    """
    photos: list[Photo] = (
        list(find_pairs(data_dir, Path(settings.lr_dir), events.warned))
        if settings.lr_dir
        else list(find_images(data_dir))
    )
    split: PhotoSplit = split_photos(photos, settings.holdout, settings.seed)
    leader = not dist.is_initialized() or dist.get_rank() == 0
    if leader:
        prepare_run_dir(run_dir, settings, resume)
    trainer = Trainer(settings, split, run_dir, events.warned)
    checkpoint = run_dir / CHECKPOINT_NAME
    if resume and checkpoint.exists():
        trainer.load_checkpoint(checkpoint)
    log = MetricsLog(run_dir) if leader else None
    result = RunResult(model=run_dir, steps=trainer.step)
    started = time.perf_counter()
    events.started(trainer.step, settings.steps, len(split.training))
    try:
        while trainer.step < settings.steps:
            losses = trainer.train_step()
            events.stepped(trainer.step, losses)
            if not leader:
                continue
            if trainer.step % 10 == 0:
                log.losses(trainer.step, losses)
            if trainer.step % settings.validate_every == 0 or trainer.step == settings.steps:
                result.last_validation = trainer.validate()
                result.validations.append(result.last_validation)
                log.validation(result.last_validation)
                events.validated(result.last_validation)
            if trainer.step % settings.checkpoint_every == 0:
                events.checkpointed(trainer.save_checkpoint())
    except KeyboardInterrupt:
        if leader:
            events.checkpointed(trainer.save_checkpoint())
        raise
    result.steps = trainer.step
    if not leader:
        return result
    events.checkpointed(trainer.save_checkpoint())
    if result.last_validation is None or result.last_validation.step != trainer.step:
        result.last_validation = trainer.validate()
        log.validation(result.last_validation)
        events.validated(result.last_validation)
    result.model = trainer.export(result.last_validation, len(photos), time.perf_counter() - started)
    return result

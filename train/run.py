"""One training run from photos to an exported model file, reporting through callbacks."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

from engines.atomic import atomic_path

from .data import PhotoSplit, find_images, split_photos
from .settings import SettingsError, TrainSettings, load_settings
from .trainer import CHECKPOINT_NAME, MetricsLog, Trainer, Validation

SETTINGS_NAME = "settings.toml"
# Settings a resumed run may change: how long it goes on and how often it reports.
SCHEDULE_SETTINGS = frozenset({"steps", "checkpoint_every", "validate_every", "device"})


def _ignore(*_: object) -> None:
    return None


@dataclass(frozen=True)
class TrainingEvents:
    """Callbacks a front end supplies; each defaults to doing nothing."""

    started: Callable[[int, int, int], None] = _ignore  # first step, last step, training photos
    stepped: Callable[[int, float], None] = _ignore  # step, loss
    validated: Callable[[Validation], None] = _ignore
    checkpointed: Callable[[Path], None] = _ignore
    warned: Callable[[str], None] = _ignore


@dataclass
class RunResult:
    model: Path
    steps: int
    last_validation: Validation | None = None
    validations: list[Validation] = field(default_factory=list)


def prepare_run_dir(run_dir: Path, settings: TrainSettings, resume: bool) -> None:
    """Create the run folder and save the settings; refuse to mix runs.

    Raises SettingsError when the folder holds another run and --resume was not given, or when
    resuming with settings other than the ones saved.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    saved = run_dir / SETTINGS_NAME
    if saved.exists():
        if not resume:
            raise SettingsError(f"{run_dir}: already holds a run; pass --resume to continue it or choose another --out")
        before = load_settings(saved)
        changed = [item.name for item in fields(settings)
                   if item.name not in SCHEDULE_SETTINGS and getattr(before, item.name) != getattr(settings, item.name)]
        if changed:
            raise SettingsError(f"{saved}: the run was started with other {', '.join(changed)}; resume with the same ones")
    with atomic_path(saved) as temporary:
        temporary.write_text(settings.to_toml())


def run_training(
    settings: TrainSettings,
    data_dir: Path,
    run_dir: Path,
    resume: bool = False,
    events: TrainingEvents = TrainingEvents(),
) -> RunResult:
    """Train until settings.steps, checkpointing and validating on the way; export the model.

    On KeyboardInterrupt a checkpoint is written before the interrupt propagates, so --resume
    continues from the last step.
    """
    photos = find_images(data_dir)
    split: PhotoSplit = split_photos(photos, settings.holdout, settings.seed)
    prepare_run_dir(run_dir, settings, resume)
    trainer = Trainer(settings, split, run_dir, events.warned)
    checkpoint = run_dir / CHECKPOINT_NAME
    if resume and checkpoint.exists():
        trainer.load_checkpoint(checkpoint)
    log = MetricsLog(run_dir)
    result = RunResult(model=run_dir, steps=trainer.step)
    started = time.perf_counter()
    events.started(trainer.step, settings.steps, len(split.training))
    try:
        while trainer.step < settings.steps:
            loss = trainer.train_step()
            events.stepped(trainer.step, loss)
            if trainer.step % 10 == 0:
                log.loss(trainer.step, loss)
            if trainer.step % settings.validate_every == 0 or trainer.step == settings.steps:
                result.last_validation = trainer.validate()
                result.validations.append(result.last_validation)
                log.validation(result.last_validation)
                events.validated(result.last_validation)
            if trainer.step % settings.checkpoint_every == 0:
                events.checkpointed(trainer.save_checkpoint())
    except KeyboardInterrupt:
        events.checkpointed(trainer.save_checkpoint())
        raise
    events.checkpointed(trainer.save_checkpoint())
    if result.last_validation is None or result.last_validation.step != trainer.step:
        result.last_validation = trainer.validate()
        log.validation(result.last_validation)
        events.validated(result.last_validation)
    result.model = trainer.export(result.last_validation, len(photos), time.perf_counter() - started)
    result.steps = trainer.step
    return result

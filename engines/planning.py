"""Which files to upscale and where each result goes: pure path logic, no image work.

Everything here streams: inputs are found folder by folder and jobs planned one at a time, so a
run over millions of files never holds their paths. The checks that need to remember earlier
files (an input named twice, two inputs onto one output, an output onto an input) keep one
64-bit digest per file instead of its path.
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import ImageReadError, ImageWriteError, Setting, SrganError
from .imageio import FORMAT_EXTENSIONS

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".pam"})
DEFAULT_NAME = "{stem}_x{scale}"


@dataclass(frozen=True)
class InputFile:
    """A file to upscale; `root` is the folder argument it was found under, if any."""

    path: Path
    root: Path | None = None


@dataclass(frozen=True)
class Job:
    """One input and its planned output.

    problem: why this input cannot be processed (then target may be None).
    skip: the output exists and overwriting was not asked for.
    """

    source: Path
    target: Path | None
    problem: SrganError | None = None
    skip: bool = False


@dataclass(frozen=True)
class OutputPlan:
    """Where outputs go.

    output: the output folder, or the one output file when `to_file`; None: beside each input.
    name_template: the output's stem, from {stem} (the input's) and {scale}.
    scale_label: what {scale} stands for (`scale_label`).
    image_format: the output's format key, or None for the input's own format.
    overwrite: replace outputs that exist instead of skipping their inputs.
    """

    output: Path | None
    to_file: bool
    name_template: str = DEFAULT_NAME
    scale_label: str = "4"
    image_format: str | None = None
    overwrite: bool = False


def _digest(path: Path) -> int:
    return int.from_bytes(hashlib.blake2b(os.fsencode(path.resolve()), digest_size=8).digest(), "little")


def iter_inputs(arguments: Sequence[str], recursive: bool) -> Iterator[InputFile | Job]:
    """Expand file, folder and glob arguments into input files, in a stable order, each once.

    Arguments that name nothing usable come out as failed jobs, in their place.
    """
    seen: set[int] = set()
    for argument in arguments:
        try:
            for item in _expand(argument, recursive):
                if isinstance(item, Job):
                    yield item
                    continue
                key = _digest(item.path)
                if key not in seen:
                    seen.add(key)
                    yield item
        except (OSError, RuntimeError) as error:  # a name too long, a folder that cannot be listed, a link loop
            reason = getattr(error, "strerror", None) or error
            yield Job(Path(argument), None, ImageReadError(f"{argument}: cannot be read ({reason}); check the path"))


def _expand(argument: str, recursive: bool) -> Iterator[InputFile | Job]:
    path = Path(argument)
    if path.is_dir():
        found = False
        for image in _images_in(path, recursive):
            found = True
            yield InputFile(image, path)
        if not found:
            hint = "" if recursive else " (subfolders are only searched when recursive)"
            yield Job(
                path,
                None,
                ImageReadError(f"{path}: no images found in this folder{hint}", setting=Setting.RECURSIVE),
            )
    elif path.exists():
        yield InputFile(path)
    elif glob.has_magic(argument):
        found = False
        for match in sorted(glob.iglob(argument, recursive=True), key=lambda name: Path(name).parts):
            match_path = Path(match)
            if match_path.is_file() and match_path.suffix.lower() in IMAGE_EXTENSIONS:
                found = True
                yield InputFile(match_path)
        if not found:
            yield Job(path, None, ImageReadError(f"{argument}: no image files match this pattern"))
    else:
        yield Job(path, None, ImageReadError(f"{path}: file not found; check the path"))


def _images_in(folder: Path, recursive: bool) -> Iterator[Path]:
    """Image files under `folder` in sorted path order, skipping hidden files and folders.

    One folder's listing is held at a time.
    """
    with os.scandir(folder) as entries:
        listing = sorted((entry for entry in entries if not entry.name.startswith(".")), key=lambda e: e.name)
    for entry in listing:
        if entry.is_dir(follow_symlinks=False):
            if recursive:
                yield from _images_in(Path(entry.path), recursive)
        elif entry.is_file() and Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS:
            yield Path(entry.path)


def output_is_file(output: Path | None, first: InputFile | None, input_count: int, arguments_count: int) -> bool:
    """True when `output` names one output file rather than a folder.

    first: the first input found; input_count: how many inputs there are in all.
    """
    if output is None or output.is_dir() or first is None or input_count != 1 or arguments_count != 1:
        return False
    return first.root is None and output.suffix.lower() in IMAGE_EXTENSIONS


def plan_jobs(inputs: Iterable[InputFile | Job], plan: OutputPlan, sources: set[int] | None = None) -> Iterator[Job]:
    """Decide each input's output path and flag the ones that must not be written.

    sources: digests of every input (`input_digests`), so that an output onto an input that
    comes later is refused too; None collects them from `inputs` first (which must then be a
    sequence, not a one-pass iterator).
    """
    if sources is None:
        inputs = list(inputs)
        sources = input_digests(inputs)
    claimed: set[int] = set()
    for item in inputs:
        if isinstance(item, Job):
            yield item
            continue
        try:
            target = plan.output if plan.to_file and plan.output is not None else output_path(item, plan)
            key = _digest(target)
            exists = target.exists()
        except SrganError as error:
            yield Job(item.path, None, error)
            continue
        except (OSError, RuntimeError) as error:  # a name too long; a symlink loop (RuntimeError)
            reason = getattr(error, "strerror", None) or error
            problem = ImageWriteError(
                f"{item.path}: its output name cannot be used ({reason})",
                setting=Setting.NAME_TEMPLATE,
            )
            yield Job(item.path, None, problem)
            continue
        if key in sources:
            problem = ImageWriteError(
                f"{target}: the output would overwrite an input; choose another output folder or name template",
                setting=Setting.OUTPUT,
            )
            yield Job(item.path, target, problem)
        elif key in claimed:
            problem = ImageWriteError(
                f"{target}: already the output of an earlier input; use a name template that keeps them apart",
                setting=Setting.NAME_TEMPLATE,
            )
            yield Job(item.path, target, problem)
        else:
            claimed.add(key)
            yield Job(item.path, target, skip=not plan.overwrite and exists)


def input_digests(inputs: Iterable[InputFile | Job]) -> set[int]:
    """64-bit digests of the inputs' resolved paths, for `plan_jobs`."""
    return {_digest(item.path) for item in inputs if isinstance(item, InputFile)}


def scale_label(requested: float | None, model_scale: int) -> str:
    """What {scale} in an output name stands for: the requested factor, else the model's."""
    return f"{requested:g}" if requested is not None else str(model_scale)


def output_path(item: InputFile, plan: OutputPlan) -> Path:
    """Where an input's result goes: the plan's folder (mirroring the input's place under its
    root) or beside the input, named by the template ({scale}: the output's factor), with the
    format's extension or the input's.

    Raises ImageWriteError when the path would land outside that folder (a template checked
    by the front end cannot, but this is the last word on where files go).
    """
    extension = FORMAT_EXTENSIONS[plan.image_format] if plan.image_format else item.path.suffix
    name = plan.name_template.format(stem=item.path.stem, scale=plan.scale_label) + extension
    if plan.output is None:
        folder = item.path.parent
    elif item.root is not None:
        folder = plan.output / item.path.parent.relative_to(item.root)
    else:
        folder = plan.output
    target = folder / name
    top = plan.output if plan.output is not None else folder
    if not target.resolve().is_relative_to(top.resolve()) or target.resolve() == top.resolve():
        raise ImageWriteError(
            f"{target}: the output name leads outside {top}; choose a name without separators or '..'",
            setting=Setting.NAME_TEMPLATE,
        )
    return target


@dataclass
class InputSurvey:
    """A first pass over the inputs: what `plan_jobs` and a progress bar need to know up front.

    items: inputs plus arguments that named nothing (each one result); files: inputs alone;
    first: the first input; digests: `input_digests` of them all.
    """

    items: int = 0
    files: int = 0
    first: InputFile | None = None
    digests: set[int] | None = None


def survey_inputs(arguments: Sequence[str], recursive: bool) -> InputSurvey:
    """Walk the inputs once, keeping counts and digests only."""
    survey = InputSurvey(digests=set())
    for item in iter_inputs(arguments, recursive):
        survey.items += 1
        if isinstance(item, InputFile):
            survey.files += 1
            survey.first = survey.first or item
            survey.digests.add(_digest(item.path))
    return survey

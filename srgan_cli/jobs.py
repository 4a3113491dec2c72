"""Which files to upscale and where each result goes: pure path logic, no image work."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from srgan.engines import FORMAT_EXTENSIONS, ImageWriteError, Setting, SrganError

from .advice import cli_message

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
    problem: str | None = None
    skip: bool = False


def collect_inputs(arguments: Sequence[str], recursive: bool) -> tuple[list[InputFile], list[Job]]:
    """Expand file, folder and glob arguments into input files.

    Returns the files found and, as failed jobs, the arguments that named nothing usable.
    """
    found: list[InputFile] = []
    problems: list[Job] = []
    for argument in arguments:
        path = Path(argument)
        try:
            files, problem = _expand(argument, path, recursive)
        except OSError as error:  # a name too long, a folder that cannot be listed
            files, problem = [], f"{path}: cannot be read ({error.strerror or error}); check the path"
        found += files
        if problem is not None:
            problems.append(Job(path, None, problem))
    return _unique(found), problems


def _expand(argument: str, path: Path, recursive: bool) -> tuple[list[InputFile], str | None]:
    """The input files one argument names, and why it names none (or None)."""
    if path.is_dir():
        images = _images_in(path, recursive)
        hint = "" if recursive else " (add --recursive to look in subfolders)"
        return [
            InputFile(image, path) for image in images
        ], None if images else f"{path}: no images found in this folder{hint}"
    if path.exists():
        return [InputFile(path)], None
    if glob.has_magic(argument):
        matches = sorted(Path(match) for match in glob.glob(argument, recursive=True))
        files = [match for match in matches if match.is_file() and match.suffix.lower() in IMAGE_EXTENSIONS]
        return [
            InputFile(match) for match in files
        ], None if files else f"{argument}: no image files match this pattern"
    return [], f"{path}: file not found; check the path"


def _images_in(folder: Path, recursive: bool) -> list[Path]:
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        path
        for path in candidates
        if path.is_file()
        and path.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


def _unique(inputs: list[InputFile]) -> list[InputFile]:
    seen: set[Path] = set()
    unique = []
    for item in inputs:
        key = item.path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(item)
    return unique


def output_is_file(output: Path | None, inputs: Sequence[InputFile], arguments_count: int) -> bool:
    """True when `output` names one output file rather than a folder."""
    if output is None or output.is_dir() or len(inputs) != 1 or arguments_count != 1:
        return False
    return inputs[0].root is None and output.suffix.lower() in IMAGE_EXTENSIONS


def plan_jobs(
    inputs: Sequence[InputFile],
    output: Path | None,
    output_file: bool,
    name_template: str,
    scale: int | str,
    image_format: str | None,
    overwrite: bool,
) -> list[Job]:
    """Decide each input's output path and flag the ones that must not be written."""
    sources = {item.path.resolve(): item.path for item in inputs}
    claimed: dict[Path, Path] = {}
    jobs = []
    for item in inputs:
        try:
            target = (
                output
                if output_file and output is not None
                else output_path(item, output, name_template, scale, image_format)
            )
            key = target.resolve()
            exists = target.exists()
        except SrganError as error:
            jobs.append(Job(item.path, None, cli_message(error)))
            continue
        except (OSError, RuntimeError) as error:  # a name too long; a symlink loop (RuntimeError)
            reason = getattr(error, "strerror", None) or error
            problem = f"{item.path}: its output name cannot be used ({reason}); choose a shorter --name"
            jobs.append(Job(item.path, None, problem))
            continue
        if key in sources:
            problem = f"{target}: the output would overwrite an input; choose another -o folder or --name"
            jobs.append(Job(item.path, target, problem))
        elif key in claimed:
            problem = f"{target}: already the output of {claimed[key]}; use a --name that keeps them apart"
            jobs.append(Job(item.path, target, problem))
        else:
            claimed[key] = item.path
            jobs.append(Job(item.path, target, skip=exists and not overwrite))
    return jobs


def scale_label(requested: float | None, model_scale: int) -> str:
    """What {scale} in an output name stands for: the requested factor, else the model's."""
    return f"{requested:g}" if requested is not None else str(model_scale)


def output_path(
    item: InputFile, output: Path | None, name_template: str, scale: int | str, image_format: str | None
) -> Path:
    """Where an input's result goes: `output` (mirroring the input's place under its root) or
    beside the input, named by the template ({scale}: the output's factor), with the format's
    extension or the input's.

    Raises ImageWriteError when the path would land outside that folder (a template that
    check_name_template let through cannot, but this is the last word on where files go).
    """
    extension = FORMAT_EXTENSIONS[image_format] if image_format else item.path.suffix
    name = name_template.format(stem=item.path.stem, scale=scale) + extension
    if output is None:
        folder = item.path.parent
    elif item.root is not None:
        folder = output / item.path.parent.relative_to(item.root)
    else:
        folder = output
    target = folder / name
    top = output if output is not None else folder
    if not target.resolve().is_relative_to(top.resolve()) or target.resolve() == top.resolve():
        raise ImageWriteError(
            f"{target}: the output name leads outside {top}; choose a name without separators or '..'",
            setting=Setting.NAME_TEMPLATE,
        )
    return target

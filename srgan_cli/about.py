"""`srgan info` and `srgan models`: what is installed and what the model files hold."""

from __future__ import annotations

import importlib.metadata
import json
import platform
from pathlib import Path
from typing import Annotated, Optional

import torch
import typer
from typer.core import TyperGroup
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from srgan.engines import (
    EngineCache,
    NoDefaultModelError,
    Precision,
    Setting,
    SrganError,
    add_model,
    choose_precision,
    default_engines_dir,
    default_model_path,
    find_model_files,
    load_model,
    model_dirs,
    resolve_model,
    tensorrt_unavailable_reason,
)

from .advice import cli_message
from .gimp_cmd import default_plugins_dir, installed_plugin
from .options import JsonOption
from .state import CliState

_PACKAGES = (
    "srgan",
    "torch",
    "torchvision",
    "spandrel",
    "spandrel_extra_arches",
    "onnxruntime",
    "numpy",
    "pillow",
    "safetensors",
    "typer",
    "rich",
    "imagecodecs",
    "tifffile",
    "watchdog",
)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _tensorrt_status() -> str:
    reason = tensorrt_unavailable_reason()
    return f"unavailable: {reason}" if reason else f"available (torch-tensorrt {_version('torch-tensorrt')})"


def _devices() -> list[dict[str, object]]:
    devices: list[dict[str, object]] = [
        {
            "name": "cpu",
            "description": torch.cpu.get_capabilities().get("cpu_name") or platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
        }
    ]
    for index in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        properties = torch.cuda.get_device_properties(index)
        devices.append(
            {
                "name": f"cuda:{index}",
                "description": properties.name,
                "memory_gib": round(properties.total_memory / 2**30, 1),
                "compute_capability": f"{properties.major}.{properties.minor}",
            }
        )
    return devices


def _cpu_precision(default_model: str) -> dict[str, str]:
    """What `--precision auto` picks on this CPU for the default model (a path, or "not installed"), and why."""
    cost = None
    if Path(default_model).is_file():
        try:
            cost = load_model(Path(default_model)).info.bf16_cost_db
        except SrganError:
            pass  # reported by `srgan models`; the CPU's answer stands without the model's cost
    choice = choose_precision(Precision.AUTO, torch.device("cpu"), cost)
    return {"precision": choice.precision.value, "reason": choice.reason}


def collect_info() -> dict[str, object]:
    """Everything `srgan info` reports, as plain data."""
    try:
        default = str(default_model_path())
    except NoDefaultModelError:
        default = "not installed"
    return {
        "versions": {"python": platform.python_version(), **{name: _version(name) for name in _PACKAGES}},
        "cuda": {"available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda},
        "tensorrt": _tensorrt_status(),
        "devices": _devices(),
        "cpu_auto_precision": _cpu_precision(default),
        "default_model": default,
        "model_dirs": [str(folder) for folder in model_dirs()],
        "engines_dir": str(default_engines_dir()),
        "engines": EngineCache().counts(),
        "gimp_plugin": str(installed_plugin())
        if installed_plugin()
        else f"not installed (srgan gimp install; {default_plugins_dir()})",
    }


def info(ctx: typer.Context, json_lines: JsonOption = False) -> None:
    """Show versions, devices, CUDA and TensorRT availability, and where models and engines are."""
    ctx.ensure_object(CliState).json = json_lines
    report = collect_info()
    if json_lines:
        typer.echo(json.dumps(report))
        return
    console = Console(highlight=False)
    table = Table(show_header=False, box=None, pad_edge=False)
    for name, version in report["versions"].items():
        table.add_row(name, version)
    console.print(table)
    cuda = report["cuda"]
    console.print(
        f"CUDA: {'available' if cuda['available'] else 'not available'} (torch built for CUDA {cuda['torch_cuda']})"
    )
    console.print(f"TensorRT: {escape(report['tensorrt'])}")
    for device in report["devices"]:
        details = ", ".join(f"{key} {value}" for key, value in device.items() if key != "name")
        console.print(f"device {device['name']}: {escape(details)}")
    auto = report["cpu_auto_precision"]
    console.print(f"--precision auto on the CPU: {auto['precision']} ({escape(auto['reason'])})")
    console.print(f"default model: {escape(report['default_model'])}")
    console.print(f"model folders: {escape(', '.join(report['model_dirs']))}")
    built = ", ".join(f"{kind} {count}" for kind, count in report["engines"].items())
    console.print(f"engine cache: {escape(report['engines_dir'])} ({built})")
    console.print(f"GIMP plug-in: {escape(report['gimp_plugin'])}")


class _ListByDefault(TyperGroup):
    """`srgan models [FILES...]` lists; `srgan models add FILE` adds. Anything but a subcommand goes to `list`."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["list", *args]
        return super().parse_args(ctx, args)


models_app = typer.Typer(
    cls=_ListByDefault,
    help="List model files and what they hold, or add one to your model folder.",
    no_args_is_help=False,
)


@models_app.command("list")
def models(
    ctx: typer.Context,
    paths: Annotated[
        Optional[list[Path]], typer.Argument(help="Model files to inspect; the known ones when omitted.")
    ] = None,
    json_lines: JsonOption = False,
) -> None:
    """List model files: architecture, scale, channels, tiling, precisions, licence hint (the default)."""
    ctx.ensure_object(CliState).json = json_lines
    candidates = [resolve_model(path) for path in paths] if paths else find_model_files()
    described: list[dict[str, object]] = []
    for path in candidates:
        try:
            described.append(load_model(path).info.describe())
        except SrganError as error:
            if paths:
                raise
            described.append({"path": str(path), "error": cli_message(error)})
    if json_lines:
        for entry in described:
            typer.echo(json.dumps(entry))
        return
    console = Console(highlight=False)
    if not described:
        console.print(f"no model files in {escape(', '.join(str(folder) for folder in model_dirs()))}")
        return
    table = Table("model", "arch", "scale", "channels", "tiling", "overlap", "precisions", "notes")
    for entry in described:
        if "error" in entry:
            table.add_row(escape(str(entry["path"])), "", "", "", "", "", "", f"[red]{escape(str(entry['error']))}[/]")
            continue
        table.add_row(*_model_row(entry))
    console.print(table)


@models_app.command("add")
def add(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="Model file to load once and copy into your model folder.")],
    json_lines: JsonOption = False,
) -> None:
    """Copy a model file into your model folder after loading it once; then name it by its stem."""
    ctx.ensure_object(CliState).json = json_lines
    try:
        loaded, target = add_model(path)
    except SrganError as error:
        if error.setting is Setting.MODEL:  # the file is this command's argument, not --model
            raise SrganError(str(error)) from None
        raise
    entry = {**loaded.info.describe(), "added": str(target)}
    if json_lines:
        typer.echo(json.dumps(entry))
        return
    console = Console(highlight=False)
    requirements = entry["size_requirements"]
    console.print(
        f"{escape(str(target))}: {entry['arch']} {entry['scale']}× {entry['purpose']},"
        f" {_channels(entry)}, tiling {entry['tiling']}, overlap {entry['overlap']},"
        f" precisions {', '.join(entry['precisions'])}, sides multiple of {requirements['multiple_of']}"
        f" (at least {requirements['minimum']}), compiled engine {'yes' if entry['compiled_engine'] else 'no'}"
    )
    console.print(f"use it with: srgan upscale --model {escape(target.stem)} ...")


def _channels(entry: dict) -> str:
    return "gray" if entry["input_channels"] == 1 else "RGB"


def _model_row(entry: dict) -> list[str]:
    notes = [f"{key}: {value}" for key, value in entry["training"].items()]
    notes += [str(entry["licence"])] if entry["licence"] else []
    notes += [] if entry["compiled_engine"] else ["no compiled engine"]
    return [
        escape(str(entry["path"])),
        escape(str(entry["arch"])),
        f"{entry['scale']}×",
        _channels(entry),
        str(entry["tiling"]),
        str(entry["overlap"]),
        ", ".join(entry["precisions"]),
        escape(", ".join(notes)) or "-",
    ]

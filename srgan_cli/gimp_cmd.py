"""`srgan gimp install` / `uninstall`: put the GIMP 3 plug-in where GIMP finds it."""

from __future__ import annotations

import json
import os
import shutil
import sys
from importlib import resources
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from srgan.engines import atomic_path, model_dirs

from .state import UsageProblem

PLUGIN_NAME = "srgan_upscale"
app = typer.Typer(help="Install or remove the GIMP 3 plug-in (Filters → Enhance → SRGAN 4×).", no_args_is_help=True)

PluginsDirOption = Annotated[
    Optional[Path], typer.Option("--plugins-dir", help="GIMP 3's plug-ins folder; found automatically when omitted.")
]


def default_plugins_dir() -> Path:
    """GIMP 3's per-user plug-ins folder on this platform."""
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming")) / "GIMP" / "3.0" / "plug-ins"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "GIMP" / "3.0" / "plug-ins"
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config_home / "GIMP" / "3.0" / "plug-ins"


def plugin_source() -> Path:
    return Path(str(resources.files("srgan.gimp") / PLUGIN_NAME))


def installed_plugin(plugins_dir: Path | None = None) -> Path | None:
    """The installed plug-in folder, or None."""
    folder = (plugins_dir or default_plugins_dir()) / PLUGIN_NAME
    return folder if (folder / f"{PLUGIN_NAME}.py").is_file() else None


@app.command("install")
def install(plugins_dir: PluginsDirOption = None) -> None:
    """Copy the plug-in into GIMP's plug-ins folder and record this srgan for it to run."""
    target = (plugins_dir or default_plugins_dir()) / PLUGIN_NAME
    try:
        target.mkdir(parents=True, exist_ok=True)
        for name in (f"{PLUGIN_NAME}.py", "bridge.py"):
            shutil.copyfile(plugin_source() / name, target / name)
        shutil.copytree(plugin_source() / "help", target / "help", dirs_exist_ok=True)
        (target / f"{PLUGIN_NAME}.py").chmod(0o755)
        record = {"command": [sys.executable, "-m", "srgan.cli"], "model_dirs": [str(path) for path in model_dirs()]}
        with atomic_path(target / "srgan.json") as temporary:
            temporary.write_text(json.dumps(record, indent=2) + "\n")
    except OSError as error:
        raise UsageProblem(
            f"{target}: cannot install the plug-in here ({error.strerror}); pass --plugins-dir"
        ) from None
    console = Console(highlight=False, soft_wrap=True)  # a path broken over lines cannot be copied
    console.print(f"installed {escape(str(target))}")
    console.print("restart GIMP, then use Filters → Enhance → SRGAN 4×")


@app.command("uninstall")
def uninstall(plugins_dir: PluginsDirOption = None) -> None:
    """Remove the plug-in from GIMP's plug-ins folder."""
    folder = installed_plugin(plugins_dir)
    if folder is None:
        Console(highlight=False).print("the plug-in is not installed there; nothing to remove")
        return
    shutil.rmtree(folder)
    Console(highlight=False).print(f"removed {escape(str(folder))}")

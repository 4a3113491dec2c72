"""The command line's wording of a core error: the setting it points at becomes a flag.

The core says what went wrong and which `Setting` governs it; only here does that become
"use --device cpu". The GIMP plug-in and config files word the same fields their own way.
"""

from __future__ import annotations

from srgan.engines import Setting, SrganError

FLAGS = {
    Setting.MODEL: "--model",
    Setting.DEVICE: "--device",
    Setting.PRECISION: "--precision",
    Setting.BACKEND: "--backend",
    Setting.ENGINES_DIR: "--engines-dir",
    Setting.TILE_SIZE: "--tile",
    Setting.MAX_PIXELS: "--max-pixels",
    Setting.OUTPUT_FORMAT: "--format",
    Setting.RECURSIVE: "--recursive",
    Setting.NAME_TEMPLATE: "--name",
    Setting.OUTPUT: "--output",
}

# Advice where the error suggests no particular value.
_OPEN_ADVICE = {
    Setting.MODEL: "give another model file with --model",
    Setting.MAX_PIXELS: "raise the limit with --max-pixels (0: no limit)",
    Setting.RECURSIVE: "give image files, or the folder with --recursive",
    Setting.ENGINES_DIR: "choose a writable folder with --engines-dir",
}


def cli_message(error: SrganError) -> str:
    """The error's one line with the advice worded as a command-line flag, when it has a setting."""
    message = str(error)
    setting = getattr(error, "setting", None)
    if setting is None or setting not in FLAGS:
        return message
    suggestion = getattr(error, "suggestion", None)
    if suggestion:
        return f"{message}; use {FLAGS[setting]} {suggestion}"
    return f"{message}; {_OPEN_ADVICE.get(setting, f'change {FLAGS[setting]}')}"


def json_fields(error: SrganError) -> dict[str, str | None]:
    """The structured fields a program (such as the GIMP plug-in) words in its own terms."""
    setting = getattr(error, "setting", None)
    return {"setting": setting.value if setting else None, "suggestion": getattr(error, "suggestion", None)}

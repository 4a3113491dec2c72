"""The Typer app and the one place where errors become a message and an exit code."""

from __future__ import annotations

from . import _startup  # noqa: F401  (first: pauses the garbage collector during the imports below)

import gc
import json
import signal
import sys
from typing import Annotated

import typer
from rich.console import Console
from typer.core import TyperGroup

from srgan.engines import SrganError

from . import about, engine_cmd, gimp_cmd, train_cmd, upscale, watch_cmd
from .reporting import shown
from .advice import cli_message, json_fields
from .state import CliState, UsageProblem

gc.freeze()  # what the imports made lives as long as the process; the collector need not walk it
gc.enable()

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _ErrorEdge(TyperGroup):
    """Turns the project's errors into one line on stderr and an exit code.

    With --debug the exception propagates with its traceback instead.
    """

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except SrganError as error:
            state = ctx.find_object(CliState) or CliState()
            if state.debug:
                raise
            _report(error, state)
            raise typer.Exit(EXIT_USAGE if isinstance(error, UsageProblem) else EXIT_FAILURE) from None
        except KeyboardInterrupt:
            Console(stderr=True).print(
                "[red]interrupted[/]: finished files are kept and none is left half-written"
                " (a training run has saved its checkpoint)"
            )
            raise typer.Exit(EXIT_INTERRUPTED) from None


def _report(error: SrganError, state: CliState) -> None:
    if state.json:
        event = {"event": "error", "message": cli_message(error), "problem": str(error), **json_fields(error)}
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()
    Console(stderr=True, highlight=False).print(f"[red]error:[/] {shown(cli_message(error))}", soft_wrap=True)


app = typer.Typer(
    cls=_ErrorEdge,
    name="srgan",
    help="4× image super-resolution with SRGAN.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
)


@app.callback()
def root(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback of errors.")] = False,
) -> None:
    """4× image super-resolution with SRGAN."""
    ctx.ensure_object(CliState).debug = debug


app.command("upscale", no_args_is_help=True)(upscale.upscale)
app.command("info")(about.info)
app.add_typer(about.models_app, name="models")
app.command("watch", no_args_is_help=True)(watch_cmd.watch)
app.command("build-engine")(engine_cmd.build_engine)
app.add_typer(gimp_cmd.app, name="gimp")
app.command("train", no_args_is_help=True)(train_cmd.train)


def _interrupt_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    """Console-script entry point.

    SIGTERM (what supervisors and the GIMP plug-in send to cancel) is handled like Ctrl-C, so
    temporary files are removed and training writes its checkpoint before the process ends.
    """
    signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    app()

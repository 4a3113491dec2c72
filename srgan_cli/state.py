"""What the root command learns once and every subcommand reads."""

from __future__ import annotations

from dataclasses import dataclass

from srgan.engines import SrganError


@dataclass
class CliState:
    """debug: show tracebacks; json: the running command speaks JSON lines on stdout."""

    debug: bool = False
    json: bool = False


class UsageProblem(SrganError):
    """Options that cannot work together; reported like any other error, exit code 2."""

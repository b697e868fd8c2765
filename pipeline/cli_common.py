"""What every `ganpipe` verb shares: how a refused command ends (one `error:` line on stderr, exit 2)."""
from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

EXIT_ERROR = 2  # could not do it (bad input, missing data, unreachable server): the message says why
_err = Console(stderr=True, soft_wrap=True)  # unwrapped: messages hold commands and paths people copy


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    _err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)

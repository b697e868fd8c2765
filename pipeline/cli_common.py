"""What every `ganpipe` verb shares: how a refused command ends (one `error:` line on stderr, exit 2)."""
from __future__ import annotations

import re
from typing import Mapping, NoReturn, Sequence

import typer
from rich.console import Console
from typer.core import TyperGroup

EXIT_ERROR = 2  # could not do it (bad input, missing data, unreachable server): the message says why
_err = Console(stderr=True, soft_wrap=True)  # unwrapped: messages hold commands and paths people copy


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    _err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


# A URL with user info in it (scheme://user:password@host, scheme://token@host): a secret typed where
# everything is echoed, logged and stored (errors, MLflow params, Ray's logs). Matched in the
# authority part only, so an `@` in a path (s3://bucket/a@2x.png) is not one.
_CREDENTIALS = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#\s@]*@")
# The variables whose value is a URL some verb connects to.
URL_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "RAY_ADDRESS")
CREDENTIALS_REFUSED = ("a URL with credentials in it (user:password@) is refused, and not repeated here; credentials come "
                       "from the environment: MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD for MLflow, the AWS "
                       "chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, a role) for S3")


def has_credentials(text: str) -> bool:
    return bool(_CREDENTIALS.search(text))


def credentials_given(args: Sequence[str], environ: Mapping[str, str]) -> str | None:
    """Where a URL with credentials was given: `$MLFLOW_TRACKING_URI`, `--tracking-uri`,
    `--set data.root`, `an argument`; None when nowhere. Never the value."""
    for name in URL_VARIABLES:
        if has_credentials(environ.get(name, "")):
            return f"${name}"
    for i, arg in enumerate(args):
        if not has_credentials(arg):
            continue
        if arg.startswith("-"):  # --tracking-uri=http://...
            return arg.partition("=")[0]
        key, eq, _ = arg.partition("=")
        field = f" {key}" if eq and "://" not in key else ""  # --set data.root=s3://...
        previous = args[i - 1] if i and args[i - 1].startswith("-") else ""
        return (previous + field) if previous else ("an argument" + field)
    return None


class RefusesCredentials(TyperGroup):
    """The `ganpipe` group: before any verb parses its arguments, a credential in a URL (in the
    arguments, `--set` values included, or in a URL variable) ends the command with one error line,
    before the value can reach an error message, a log line, an MLflow param or a Ray job's
    environment. (Job, search and schedule files are checked by their specs.)"""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        import os

        # --help prints no value a user gave, so it answers even where a URL variable holds credentials.
        asks_help = "--help" in args
        if not asks_help and (where := credentials_given(args, os.environ)):
            fail(f"{where}: {CREDENTIALS_REFUSED}")
        return super().parse_args(ctx, args)

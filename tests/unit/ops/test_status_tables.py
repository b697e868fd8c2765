"""`schedule status` at a plain 80-column terminal: submission ids come out whole, since users copy
them into `ganpipe logs ID` (rich used to cut them to "nightly-…"), and each gate's reason in full."""
from rich.console import Console

from pipeline.ops import cli
from pipeline.ops.state import JOB_STATUS, MODEL_VERSION, OUTCOME, REASON, Record

REASON_TEXT = "fd 24.1 vs champion v11's 23.9: improvement -0.8% is below the required 5.0%"


def _record(sid: str, reason: str | None) -> Record:
    tags = {JOB_STATUS: "SUCCEEDED", OUTCOME: "kept", MODEL_VERSION: "12", **({REASON: reason} if reason else {})}
    return Record("r" * 32, sid, "9f" * 32, "2026-11-30T02:00:00+00:00", 1, 0, tags)


def test_schedule_status_shows_whole_submission_ids_and_reasons_at_80_columns(monkeypatch, capsys):
    monkeypatch.setattr(cli, "console", Console(width=80, color_system=None))
    ids = ["nightly-digits-9f9f9f9f9f9f9f9f", "nightly-digits-0a1b2c3d4e5f6a7b-r2"]
    cli.print_records([_record(ids[0], REASON_TEXT), _record(ids[1], None)])
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, text
    first_cells = [line.split("│")[1].strip() for line in lines if line.startswith("│")]
    assert first_cells == ids, text
    assert f"{ids[0]}: {REASON_TEXT}" in " ".join(text.split()), text  # wrapped, whole
    assert not any(line.startswith(ids[1] + ":") for line in lines), text  # no reason, no line

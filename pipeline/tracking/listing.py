"""The registry's read side, as rows people scan: registered models, and one model's versions."""
from __future__ import annotations

import time

from mlflow.tracking import MlflowClient

from pipeline.tracking import names

SEARCH_PAGE = 1000


def models(model: str | None = None, *, tracking_uri: str | None = None) -> list[dict]:
    """Without `model`: one row per registered model (name, versions, champion, previous champion,
    latest, updated). With it: one row per version, newest first (version, aliases, steps, job, data
    snapshot, fd, kid, sample accuracy and classes of a conditional model, run id, created). fd/kid/
    accuracy are the training's final score, else the latest score the gate recorded."""
    from pipeline.tracking.gate import _client, _registered

    client, _ = _client(tracking_uri)
    if model is None:
        return [_model_row(client, rm) for rm in _all_models(client)]
    aliases = _registered(client, model).aliases  # {alias: version}
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    versions = client.search_model_versions(f"name='{model}'", max_results=SEARCH_PAGE)
    rows = [_version_row(mv, sorted(by_version.get(str(mv.version), []))) for mv in versions]
    return sorted(rows, key=lambda r: int(r["version"]), reverse=True)


def _all_models(client: MlflowClient) -> list:
    out, token = [], None
    while True:
        page = client.search_registered_models(max_results=SEARCH_PAGE, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return sorted(out, key=lambda rm: rm.name)


def _model_row(client: MlflowClient, rm) -> dict:
    aliases = rm.aliases or {}
    latest = max((int(v.version) for v in (rm.latest_versions or [])), default=None)
    versions = client.search_model_versions(f"name='{rm.name}'", max_results=SEARCH_PAGE)
    return {
        "name": rm.name,
        "versions": len(versions),
        "champion": str(aliases.get(names.CHAMPION, "")),
        "previous_champion": str(aliases.get(names.PREVIOUS_CHAMPION, "")),
        "latest": "" if latest is None else str(latest),
        "updated": _when(rm.last_updated_timestamp),
    }


def _version_row(mv, aliases: list[str]) -> dict:
    tags = mv.tags or {}
    fd, kid, accuracy = tags.get(names.FD, ""), tags.get(names.KID, ""), tags.get(names.ACCURACY, "")
    if not fd:
        fd, kid, accuracy = _latest_gate_scores(tags)
    return {
        "version": str(mv.version),
        "aliases": ", ".join(aliases),
        "steps": tags.get(names.STEPS, ""),
        "job": tags.get(names.JOB, ""),
        "data": tags.get(names.DATA_SHA256, "")[:12],
        "fd": fd,
        "kid": kid,
        "accuracy": accuracy,
        "classes": tags.get(names.NUM_CLASSES, ""),
        "run_id": tags.get(names.RUN_ID) or mv.run_id or "",
        "created": _when(mv.creation_timestamp),
    }


def _latest_gate_scores(tags: dict[str, str]) -> tuple[str, str, str]:
    """(fd, kid, accuracy) from the evaluator whose score was recorded last, or blanks."""
    prefix = names.SCORE_PREFIX + "."
    stamps = {k[len(prefix):-len(names.SCORED_AT) - 1]: v for k, v in tags.items()
              if k.startswith(prefix) and k.endswith("." + names.SCORED_AT)}
    if not stamps:
        return "", "", ""
    key = max(stamps, key=stamps.get)
    return tuple(tags.get(f"{prefix}{key}.{score}", "") for score in ("fd", "kid", names.ACCURACY))


def _when(ms: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ms / 1000)) if ms else ""

"""The promotion gate: a candidate version replaces the `champion` only when it is better by a margin,
scored by the same evaluator as the champion; and the rollback that undoes a promotion.

    promote("gan-digits", "7") -> Decision(outcome="promoted" | "kept" | "first", ...)
    rollback("gan-digits", reason="...")

MLflow has no transactions, so two gates started together could both move the alias. Each gate
re-reads the champion right before moving it (and decides again if it changed), then reads it once
more SETTLE_S after its own write: if another gate wrote in between, it decides again against the
version now in place. A gate's read-then-write takes milliseconds, far less than SETTLE_S, so the
last writer is always seen by the other, and the better version ends up champion.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.tracking import names
from pipeline.tracking.run import TrackingUnreachable
from pipeline.tracking.run import check_reachable as probe_tracking
from pipeline.tracking.scoring import GateError, VersionScorer, evaluator_for, job_of

SETTLE_S = 1.0  # wait after moving the alias before checking that no concurrent gate moved it too
MAX_ROUNDS = 5  # decisions per call when concurrent gates keep moving the champion
METRICS = ("fd", "kid")  # lower is better for both
EXIT_PROMOTED, EXIT_KEPT = 0, 3

__all__ = ["Decision", "GateError", "Rollback", "decide", "promote", "rollback"]


@dataclass
class Decision:
    outcome: str  # "promoted" | "kept" | "first"
    candidate: str
    champion: str | None  # the champion it was compared with (None: there was none)
    reason: str
    metric: str
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # version -> {fd, kid, ...}
    reused: dict[str, bool] = field(default_factory=dict)  # version -> score read from its tags
    evaluator: dict = field(default_factory=dict)
    evaluator_key: str = ""
    improvement: float | None = None
    min_improvement: float = 0.05
    max_memorization: float | None = None
    dry_run: bool = False
    at: str = ""

    @property
    def exit_code(self) -> int:
        return EXIT_PROMOTED if self.outcome in ("promoted", "first") else EXIT_KEPT


@dataclass
class Rollback:
    champion: str  # the version champion again
    replaced: str | None  # the champion it replaced
    reason: str
    at: str


def relative_improvement(champion: float, candidate: float) -> float:
    """(champion - candidate) / |champion| for a lower-is-better score: 0.10 = 10 % better."""
    if champion == candidate:
        return 0.0
    if champion == 0:  # nothing to be better than, relatively: any gap is infinitely large
        return math.inf if candidate < champion else -math.inf
    return (champion - candidate) / abs(champion)


def decide(*, candidate: str, champion: str | None, metric: str, scores: dict[str, dict[str, float]],
           min_improvement: float, max_memorization: float | None = None) -> tuple[str, str, float | None]:
    """(outcome, reason, improvement) from scores alone: no registry, no side effects."""
    cand = scores[candidate]
    if max_memorization is not None and cand["memorization"] > max_memorization:
        return "kept", f"memorization {cand['memorization']:.3f} is above the bound {max_memorization:g}", None
    if champion is None:
        return "first", "no champion yet", None
    c, ch = cand[metric], scores[champion][metric]
    if not math.isfinite(c):
        return "kept", f"the candidate's {metric} is {c}", None
    if not math.isfinite(ch):
        return "promoted", f"the champion's {metric} is {ch}", math.inf
    gain = relative_improvement(ch, c)
    verdict = f"{metric} {c:.5g} vs {ch:.5g}: {gain:+.1%}"
    if gain > 0 and gain >= min_improvement:
        return "promoted", f"{verdict}, at least the required {min_improvement:.1%}", gain
    return "kept", f"{verdict}, less than the required {min_improvement:.1%}", gain


def promote(model: str, candidate: str, *, metric: str = "fd", min_improvement: float = 0.05,
            max_memorization: float | None = None, data: str | None = None, num_samples: int | None = None,
            seed: int = 0, tracking_uri: str | None = None, dry_run: bool = False) -> Decision:
    """Score `candidate` (a version number, or "@alias") and the champion with one evaluator, move
    `champion` when the candidate is better by `min_improvement` (relative), record the decision."""
    if metric not in METRICS:
        raise GateError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if not 0 <= min_improvement < 1:
        raise GateError(f"min_improvement is relative: 0 <= value < 1, got {min_improvement}")
    if max_memorization is not None and not 0 <= max_memorization <= 1:
        raise GateError(f"max_memorization is a share: 0 <= value <= 1, got {max_memorization}")
    client, uri = _client(tracking_uri)
    cand = _version(client, model, candidate)
    version = str(cand.version)  # the SQL store gives ints, the REST client strings
    if _alias(client, model, names.CHAMPION) == version:  # nothing to decide: no evaluator (a classifier) to build
        return Decision(outcome="kept", candidate=version, champion=version, metric=metric, dry_run=dry_run,
                        reason=f"version {version} is the champion already", at=_now())
    evaluator = evaluator_for(cand, job_of(client, cand), data=data, num_samples=num_samples, seed=seed)
    scorer = VersionScorer(client, model, evaluator, tracking_uri=uri, record=not dry_run)
    required = {metric} | ({"memorization"} if max_memorization is not None else set())
    scores, reused, faced, notes = {}, {}, [], []

    def score(mv: ModelVersion) -> None:
        if str(mv.version) not in scores:
            scores[str(mv.version)], reused[str(mv.version)] = scorer.score(mv, required)

    for _ in range(MAX_ROUNDS):
        champ = _alias(client, model, names.CHAMPION)
        if champ == version:  # nothing to decide, nothing to record
            return Decision(outcome="kept", candidate=version, champion=champ, metric=metric, dry_run=dry_run,
                            reason="; ".join([f"version {champ} is the champion already", *notes]), at=_now(),
                            scores=scores, reused=reused, evaluator=evaluator.fields, evaluator_key=evaluator.key)
        if champ is not None:
            champ_mv = client.get_model_version(model, champ)
            _check_contract(cand, champ_mv)
            faced.append(champ)
        score(cand)
        if champ is not None:
            score(champ_mv)
        outcome, reason, gain = decide(candidate=version, champion=champ, metric=metric, scores=scores,
                                       min_improvement=min_improvement, max_memorization=max_memorization)
        if dry_run or outcome == "kept":
            break
        if (now := _alias(client, model, names.CHAMPION)) != champ:  # re-read right before moving
            notes.append(f"the champion changed to {now} while deciding; decided again")
            continue
        if champ is not None:
            client.set_registered_model_alias(model, names.PREVIOUS_CHAMPION, champ)
        client.set_registered_model_alias(model, names.CHAMPION, version)
        time.sleep(SETTLE_S)
        if (now := _alias(client, model, names.CHAMPION)) != version:
            notes.append(f"a concurrent promotion made {now} champion; decided again")
            continue
        break
    else:
        raise GateError(f"the champion of {model} kept moving during {MAX_ROUNDS} decisions; try again")
    decision = Decision(
        outcome=outcome, candidate=version, champion=champ,
        reason="; ".join([reason, *notes]), metric=metric, scores=scores, reused=reused,
        evaluator=evaluator.fields, evaluator_key=evaluator.key, improvement=gain, min_improvement=min_improvement,
        max_memorization=max_memorization, dry_run=dry_run, at=_now(),
    )
    if not dry_run:
        _record(client, model, decision, also_on=faced)
    return decision


def rollback(model: str, *, reason: str = "rolled back by hand", tracking_uri: str | None = None) -> Rollback:
    """Make `previous-champion` the champion again (and drop that alias: one level of undo)."""
    client, _ = _client(tracking_uri)
    _registered(client, model)
    previous = _alias(client, model, names.PREVIOUS_CHAMPION)
    if previous is None:
        raise GateError(f"{model} has no {names.PREVIOUS_CHAMPION}: nothing to roll back to")
    current = _alias(client, model, names.CHAMPION)
    client.set_registered_model_alias(model, names.CHAMPION, previous)
    client.delete_registered_model_alias(model, names.PREVIOUS_CHAMPION)
    out = Rollback(champion=previous, replaced=current, reason=reason, at=_now())
    entry = json.dumps({"rollback": True, "champion": previous, "replaced": current, "reason": reason, "at": out.at})
    for version in {previous, current} - {None}:
        client.set_model_version_tag(model, version, _log_key(out.at, previous), entry)
    if current is not None and current != previous:
        client.set_model_version_tag(model, current, names.ROLLED_BACK_REASON, reason)
    return out


# -- helpers ---------------------------------------------------------------------------------------

def _client(tracking_uri: str | None) -> tuple[MlflowClient, str]:
    from pipeline.tracking.run import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    check_reachable(uri)
    return MlflowClient(tracking_uri=uri), uri


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """A server that does not answer is a GateError at once, not MLflow's minutes of retries."""
    try:
        probe_tracking(uri, timeout_s)
    except TrackingUnreachable as e:
        raise GateError(str(e)) from None


def _registered(client: MlflowClient, model: str):
    """The registered model (aliases included), or a GateError naming how to list them."""
    try:
        return client.get_registered_model(model)
    except MlflowException as e:
        raise GateError(f"no registered model {model!r} ({e.error_code}); `ganpipe models` lists them") from None


def _version(client: MlflowClient, model: str, candidate: str) -> ModelVersion:
    _registered(client, model)
    try:
        if candidate.startswith("@"):
            return client.get_model_version_by_alias(model, candidate[1:])
        return client.get_model_version(model, candidate)
    except MlflowException:
        what = f"alias {candidate}" if candidate.startswith("@") else f"version {candidate}"
        raise GateError(f"{model} has no {what}; `ganpipe models {model}` lists its versions") from None


def _alias(client: MlflowClient, model: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(model, alias).version)
    except MlflowException:
        return None


def _check_contract(candidate: ModelVersion, champion: ModelVersion) -> None:
    """Same z_dim and resolution, and the same classes (or none on both sides): whoever loads
    `@champion` must not notice the swap (a class index must keep meaning the same class)."""
    for tag in (names.Z_DIM, names.RESOLUTION):
        a, b = candidate.tags.get(tag), champion.tags.get(tag)
        if a is None or b is None:
            raise GateError(f"cannot check the contract: version {candidate.version if a is None else champion.version} has no {tag} tag")
        if a != b:
            raise GateError(f"contract mismatch: candidate version {candidate.version} has {tag} {a}, "
                            f"champion version {champion.version} has {tag} {b}; a consumer of @champion would break")
    for tag in (names.NUM_CLASSES, names.CLASS_NAMES):  # absent on both: unconditional, as before
        a, b = candidate.tags.get(tag), champion.tags.get(tag)
        if a != b:
            raise GateError(f"contract mismatch: candidate version {candidate.version} has {tag} {a or 'none'}, "
                            f"champion version {champion.version} has {tag} {b or 'none'}; a consumer of @champion would break")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _log_key(at: str, candidate: str) -> str:
    stamp = at.replace("-", "").replace(":", "").replace(".", "")  # tag keys take no colons
    return f"{names.GATE_LOG_PREFIX}.{stamp}.v{candidate}"


def _record(client: MlflowClient, model: str, d: Decision, *, also_on: list[str]) -> None:
    """The decision as flat tags on the candidate, and in full (JSON) on it and every champion it faced."""
    entry = json.dumps({
        "candidate": d.candidate, "champion": d.champion, "outcome": d.outcome, "reason": d.reason,
        "metric": d.metric, "scores": d.scores, "improvement": d.improvement, "min_improvement": d.min_improvement,
        "max_memorization": d.max_memorization, "evaluator_key": d.evaluator_key, "evaluator": d.evaluator, "at": d.at,
    }, sort_keys=True)
    flat = {
        names.GATE_DECISION: d.outcome, names.GATE_REASON: d.reason[:4000], names.GATE_METRIC: d.metric,
        names.GATE_MARGIN: f"{d.min_improvement:g}", names.GATE_IMPROVEMENT: "" if d.improvement is None else f"{d.improvement:.6g}",
        names.GATE_EVALUATOR: d.evaluator_key, names.GATE_AGAINST: d.champion or "", names.GATE_AT: d.at,
    }
    for k, v in flat.items():
        client.set_model_version_tag(model, d.candidate, k, v)
    for version in dict.fromkeys([d.candidate, *also_on]):
        client.set_model_version_tag(model, version, _log_key(d.at, d.candidate), entry)

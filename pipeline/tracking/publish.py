"""The end of a training run in the registry: log the generator into its run (once), register it with
its tags and lineage, and send it through the promotion gate when the job asks for it.

The driver calls this after training (train/launch.py); `ganpipe register` calls it again when the
tracking server stayed down longer than the run's patience. Both paths are idempotent: a generator
already logged by the run is reused and a version already registered from the run is returned, so a
retry or a second `ganpipe register` never makes a second version.
"""
from __future__ import annotations

import json
import logging
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.spec import JobSpec
from pipeline.tracking import names

if TYPE_CHECKING:  # an annotation only: `ganpipe train` imports RegistrationPending from here before
    from torch import nn  # Ray starts, and torch's import belongs in the thread that overlaps Ray's start

log = logging.getLogger(__name__)


class RegistrationPending(RuntimeError):
    """Training finished and its checkpoint is stored, but the tracking server stayed unreachable:
    the message says how to complete the registration later."""

    def __init__(self, *, checkpoint_path: str, run_id: str, tracking_uri: str, cause: BaseException):
        from pipeline.tracking.run import resolve_tracking_uri

        self.checkpoint_path, self.run_id = checkpoint_path, run_id
        command = f"ganpipe register {shlex.quote(checkpoint_path)} --run {run_id}"
        if tracking_uri != resolve_tracking_uri(None):  # the job named its own server: say which
            command += f" --tracking-uri {shlex.quote(tracking_uri)}"
        self.command = command
        super().__init__(
            f"training finished and the generator is safe in the checkpoint {checkpoint_path}, but the "
            f"tracking server at {tracking_uri} stayed unreachable ({type(cause).__name__}: {str(cause)[:300]}). "
            f"Once it is back, complete the registration (exactly once) with:\n  {command}"
        )


@dataclass
class Published:
    version: str
    became_champion: bool
    model_uri: str
    decision: object | None = None  # gate.Decision when the job's gate ran


def version_tags(spec: JobSpec, *, step: int, run_id: str, manifest_sha: str, scores: dict[str, float] | None, lineage: dict[str, str]) -> dict[str, str]:
    """The tags every version carries: the registry contract, its provenance, the training's score."""
    tags = {
        names.Z_DIM: spec.model.z_dim,
        names.RESOLUTION: spec.data.resolution,
        names.JOB: spec.name,
        names.STEPS: step,
        names.SPEC_SHA256: spec.sha256(),
        names.DATA_SHA256: manifest_sha,
        names.RUN_ID: run_id,
        **lineage,
    }
    if spec.model.conditional:  # what a consumer needs to ask for a class (pipeline/tracking/registry.py)
        tags.update({names.NUM_CLASSES: spec.model.num_classes, names.CLASS_NAMES: json.dumps(list(spec.model.class_names))})
    if scores and names.EVAL_FD in scores:  # the final score, computed by rank 0 on the EMA generator
        tags.update({
            names.FD: f"{scores[names.EVAL_FD]:.6g}",
            names.KID: f"{scores[names.EVAL_KID]:.6g}",
            names.FD_EXTRACTOR: spec.eval.extractor if spec.eval else "",
        })
        if names.EVAL_ACCURACY in scores:
            tags[names.ACCURACY] = f"{scores[names.EVAL_ACCURACY]:.4g}"
    return {k: str(v) for k, v in tags.items()}


def publish(generator: nn.Module, *, spec: JobSpec, step: int, run_id: str, tracking_uri: str, manifest_sha: str,
            scores: dict[str, float] | None, checkpoint_path: str, patience_s: float | None = None) -> Published:
    """Log, register (waiting out an outage for `patience_s`, default the job's tracking.patience_s),
    then the gate if `tracking.promote` is set. Raises RegistrationPending when the server stays down."""
    from pipeline.tracking.retry import with_retries

    patience_s = spec.tracking.patience_s if patience_s is None else patience_s
    try:
        model_uri, version, champion = with_retries(
            lambda: _log_and_register(generator, spec=spec, step=step, run_id=run_id, tracking_uri=tracking_uri,
                                      manifest_sha=manifest_sha, scores=scores),
            what="logging and registering the generator", patience_s=patience_s,
        )
    except Exception as e:
        raise RegistrationPending(checkpoint_path=checkpoint_path, run_id=run_id, tracking_uri=tracking_uri, cause=e) from e
    out = Published(version, champion, model_uri)
    if spec.tracking.promote is not None:
        out.decision = _gate(spec, version, tracking_uri)
        out.became_champion = out.decision is not None and out.decision.outcome in ("promoted", "first")
    return out


def _log_and_register(generator, *, spec, step, run_id, tracking_uri, manifest_sha, scores) -> tuple[str, str, bool]:
    from mlflow.tracking import MlflowClient

    from pipeline.tracking.registry import log_generator, logged_generator, register

    classes = list(spec.model.class_names) if spec.model.conditional else None
    model_uri = logged_generator(run_id, tracking_uri=tracking_uri) or log_generator(
        generator, z_dim=spec.model.z_dim, run_id=run_id, tracking_uri=tracking_uri, class_names=classes)
    # Lineage comes from the run (tagged when it was opened), not from this process: `ganpipe
    # register` may run on another machine, at another commit, long after the run.
    run_tags = MlflowClient(tracking_uri=tracking_uri).get_run(run_id).data.tags
    lineage = {k: run_tags[k] for k in (names.GIT_COMMIT, names.SUBMISSION_ID) if run_tags.get(k)}
    tags = version_tags(spec, step=step, run_id=run_id, manifest_sha=manifest_sha, scores=scores, lineage=lineage)
    version, champion = register(model_uri, name=spec.tracking.registered_model, tags=tags, tracking_uri=tracking_uri,
                                 alias_first=spec.tracking.promote is None)
    return model_uri, version, champion


def _gate(spec: JobSpec, version: str, tracking_uri: str):
    """The job's gate. The version is registered whatever happens here: a gate that cannot decide
    (data gone, server down) is reported with the command that retries it, not raised."""
    from pipeline.tracking.gate import promote

    p, model = spec.tracking.promote, spec.tracking.registered_model
    try:
        decision = promote(model, version, metric=p.metric, min_improvement=p.min_improvement,
                           max_memorization=p.max_memorization, tracking_uri=tracking_uri)
    except Exception as e:
        log.error("the promotion gate could not decide on %s version %s (%s); retry with: ganpipe promote %s --candidate %s",
                  model, version, e, model, version)
        return None
    log.info("promotion gate: %s version %s %s (%s)", model, version, decision.outcome, decision.reason)
    return decision

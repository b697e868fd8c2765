"""`ganpipe register CHECKPOINT --run RUN_ID`: finish what a tracking-server outage stopped at the end
of training. Everything needed is in the run (its job.yaml, data snapshot and lineage tags) and the
checkpoint (the weights); the run's own publish path does the rest, so the version gets the same
tags, lineage and gate as if the server had never gone away. Exactly once: a run that already
registered its version is reported, not registered again.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.tracking import names

PATIENCE_S = 10.0  # a person is waiting: retry briefly, then say what is wrong


class RegisterError(RuntimeError):
    """The checkpoint cannot be registered for this run (no such run, wrong checkpoint)."""


@dataclass
class Registered:
    name: str
    version: str
    became_champion: bool
    new: bool  # False: the run had registered it already


def register_checkpoint(checkpoint: str, *, run_id: str, tracking_uri: str | None = None) -> Registered:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from pipeline.tracking.gate import check_reachable
    from pipeline.tracking.publish import publish
    from pipeline.tracking.registry import registered_version
    from pipeline.tracking.run import resolve_tracking_uri
    from pipeline.tracking.scoring import job_of_run

    uri = resolve_tracking_uri(tracking_uri)
    check_reachable(uri)
    client = MlflowClient(tracking_uri=uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as e:
        raise RegisterError(f"no run {run_id} at {uri} ({e.error_code})") from None
    spec = job_of_run(client, run_id)
    if spec is None:
        raise RegisterError(f"run {run_id} has no job.yaml: it was not opened by ganpipe train")
    name = spec.tracking.registered_model
    if (mv := registered_version(name, run_id, tracking_uri=uri)) is not None:
        _finish(uri, run)
        champion = client.get_registered_model(name).aliases.get(names.CHAMPION)
        return Registered(name, mv.version, str(champion) == str(mv.version), new=False)

    generator, meta = _load(checkpoint, spec)
    if meta.get("spec_sha256") != run.data.tags.get(names.SPEC_SHA256):
        raise RegisterError(f"checkpoint {checkpoint} was written by another job (spec sha256 {str(meta.get('spec_sha256'))[:12]}), "
                            f"not by run {run_id} (spec sha256 {run.data.tags.get(names.SPEC_SHA256, '?')[:12]})")
    # The final eval, when rank 0 managed to log it before the outage.
    scores = {k: run.data.metrics[k] for k in (names.EVAL_FD, names.EVAL_KID) if k in run.data.metrics}
    out = publish(generator, spec=spec, step=meta["step"], run_id=run_id, tracking_uri=uri,
                  manifest_sha=run.data.tags[names.DATA_SHA256], scores=scores if len(scores) == 2 else None,
                  checkpoint_path=checkpoint, patience_s=PATIENCE_S)
    _finish(uri, run)
    return Registered(name, out.version, out.became_champion, new=True)


def _finish(uri: str, run) -> None:
    from pipeline.tracking.run import end_run

    if run.info.status == "RUNNING":  # the driver could not mark it when the server was down
        end_run(uri, run.info.run_id, "FINISHED")


def _load(checkpoint: str, spec):
    from pipeline.checkpoints import generator_from_checkpoint, open_checkpoint

    source = open_checkpoint(checkpoint, spec.checkpoint.endpoint_url)  # the job's endpoint, as training wrote it
    try:
        with source.as_directory() as d:
            return generator_from_checkpoint(d, spec)
    except (OSError, KeyError) as e:
        raise RegisterError(f"cannot read a training checkpoint at {checkpoint}: {e}") from None

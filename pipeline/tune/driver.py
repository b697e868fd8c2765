"""`ganpipe tune`: run a search's trials with Ray Tune, judge them by FD (or KID), stop the hopeless
ones early (ASHA over eval steps), and publish the winner.

    checks (search, every trial's job, shards) ─▶ MLflow parent run ─▶ Tuner: one function trial per
    drawn assignment (trial.py: a Ray Train run, reporting at each eval) ─▶ results table, best job
    file, winner registered or gated ─▶ parent FINISHED

The Tune experiment lives at <checkpoint.storage_path>/<search id>, the trials' Train runs beside
it; a killed driver is resumed with `--resume`: Tune restores its trials (finished ones stay
finished), unfinished trials restart and their Train runs continue from their last checkpoint.
"""
from __future__ import annotations

import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.tune.spec import Search
from pipeline.tune.winner import TrialRow

log = logging.getLogger(__name__)
# Not *.json: on a restore Tune copies the experiment folder's top-level .json/.pkl files to its
# staging folder and keeps uploading them back, which would overwrite this file with the stale copy.
SCHEDULER_STATE = "scheduler_rungs.jsonl"


class SearchInterrupted(KeyboardInterrupt):
    def __init__(self, search_id: str, parent_run_id: str):
        super().__init__(search_id)
        self.search_id, self.parent_run_id = search_id, parent_run_id


class ResumeError(RuntimeError):
    """`--resume` without a search to continue, or against a changed search."""


@dataclass
class SearchOutcome:
    search_id: str
    parent_run_id: str
    tracking_uri: str
    rows: list[TrialRow]
    best: TrialRow | None
    best_spec_path: Path | None
    model_version: str | None
    gate_outcome: str | None
    wall_s: float


def new_search_id(search: Search) -> str:
    return f"{search.spec.name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def run_search(search: Search, *, resume: bool = False, tracking_uri: str | None = None, best_spec: Path | None = None,
               show_progress: bool = True, search_id: str | None = None) -> SearchOutcome:
    """`search_id` names a new search (parent run, Tune experiment); default NAME-TIME-RANDOM."""
    from pipeline.checkpoints import storage_root
    from pipeline.data.manifest import check_shards, load_manifest
    from pipeline.tracking.run import end_run, resolve_tracking_uri
    from pipeline.tune import tracking

    t0 = time.monotonic()
    base = search.base_job()
    check_shards(base.data)  # missing or mismatched shards: a clear error before Ray starts
    manifest, manifest_sha = load_manifest(base.data.root, base.data.endpoint_url)
    base_raw = _with_classes_raw(search.base_raw, base, manifest)
    uri = resolve_tracking_uri(tracking_uri or base.tracking.tracking_uri)
    experiment = base.tracking.experiment
    root, fs = storage_root(base.checkpoint.storage_path, base.checkpoint.endpoint_url)
    from pipeline.train.launch import SchedulingError, init_ray, shortfall

    started_ray = init_ray(base.scaling.start_timeout_s)
    import ray

    # A trial the cluster can never hold would only fail after its start timeout, trial after trial.
    if why := shortfall(base, [n["Resources"] for n in ray.nodes() if n.get("Alive")]):
        raise SchedulingError(f"every trial runs the base job's worker group: {why}")
    if resume:
        search_id, parent_id = _resumable(search, uri, experiment, manifest_sha, root, fs)
        tracking.reopen(uri, parent_id)
    else:
        search_id = search_id or new_search_id(search)
        parent_id = tracking.open_parent(tracking_uri=uri, experiment=experiment, search_id=search_id, search=search,
                                         manifest_sha=manifest_sha)
    from pipeline.tune.trial import TrialContext

    ctx = TrialContext(base_raw=base_raw, source=str(search.source), search_id=search_id, parent_run_id=parent_id,
                       tracking_uri=uri, manifest_sha256=manifest_sha)
    try:
        rows = _tune(search, ctx, root=root, fs=fs, resume=resume, show_progress=show_progress)
    except KeyboardInterrupt:
        # Tune's experiment state (saved every 2 s) still has the running trials as running, so
        # --resume continues them. Our own Ray goes down now, and the trials' workers with it.
        end_run(uri, parent_id, "KILLED")
        if started_ray:
            ray.shutdown()
        raise SearchInterrupted(search_id, parent_id) from None
    except BaseException:
        end_run(uri, parent_id, "FAILED")
        raise
    return _finish(search, rows, search_id=search_id, parent_id=parent_id, uri=uri, manifest_sha=manifest_sha, fs=fs,
                   best_spec=best_spec, t0=t0)


def _resumable(search: Search, uri: str, experiment: str, manifest_sha: str, root: str, fs) -> tuple[str, str]:
    """(search id, parent run id) of the newest unfinished search of this name, checked to be the same
    search on the same data, with a Tune experiment to restore."""
    import pyarrow.fs

    from pipeline.tracking import names
    from pipeline.tune import tracking

    run = tracking.unfinished_parent(tracking_uri=uri, experiment=experiment, search_name=search.spec.name)
    if run is None:
        raise ResumeError(f"--resume: no unfinished search {search.spec.name!r} in MLflow experiment {experiment!r} at {uri}")
    search_id, tags = run.info.run_name, run.data.tags
    if tags.get(tracking.SEARCH_SHA256) != search.sha256():
        raise ResumeError(f"--resume: search {search_id} was started from a different search file or base job; "
                          "resume with the same files, or start a new search")
    if tags.get(names.DATA_SHA256) not in (None, manifest_sha):
        raise ResumeError(f"--resume: the data snapshot changed since search {search_id} started")
    if fs.get_file_info(f"{root}/{search_id}/tuner.pkl").type == pyarrow.fs.FileType.NotFound:
        raise ResumeError(f"--resume: search {search_id} has no Tune experiment under {root}; start a new search")
    return search_id, run.info.run_id


def _tune(search: Search, ctx, *, root: str, fs, resume: bool, show_progress: bool) -> list[TrialRow]:
    from ray import tune

    from pipeline.tune.progress import SearchProgress, TrialRunCloser
    from pipeline.tune.trial import trainable as trial_trainable

    s, base = search.spec, search.base_job()
    # Tune saves its experiment state every few seconds rather than Tune's adaptive >= 10 s: a trial
    # that ended just before the driver was killed must be known as finished on --resume.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    # Our table (progress.py) replaces Tune's; Tune's newer output engine prints its header even when silent.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Ctrl-C is a KeyboardInterrupt out of fit() (run_search handles it). Tune's own handler would
    # stop every trial instead, marking it finished, so that neither we nor --resume could tell an
    # interrupted trial from a completed one.
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    # A trial's own actor only waits on its Ray Train run, whose workers take the CPUs: reserving a
    # CPU for it too would halve the trials that fit. Tune refuses an all-zero request, hence 1 byte.
    trainable = tune.with_resources(trial_trainable(ctx), {"CPU": 0, "memory": 1})
    param_space = {"params": tune.grid_search(search.trials)}
    experiment = f"{root}/{ctx.search_id}"
    if resume:
        tuner = tune.Tuner.restore(experiment, trainable=trainable,
                                   param_space=param_space, resume_unfinished=True, resume_errored=False,
                                   storage_filesystem=fs)
    else:
        tuner = tune.Tuner(
            trainable, param_space=param_space,
            tune_config=tune.TuneConfig(metric=s.metric_key, mode="min", scheduler=_scheduler(search, base, fs, experiment),
                                        num_samples=1, max_concurrent_trials=s.max_concurrent,
                                        trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
            run_config=tune.RunConfig(
                name=ctx.search_id, storage_path=root, storage_filesystem=fs, verbose=0,
                failure_config=tune.FailureConfig(max_failures=0),
                callbacks=[
                    SearchProgress(params=list(s.space), metric_key=s.metric_key, steps=base.train.steps, enabled=show_progress),
                    TrialRunCloser(tracking_uri=ctx.tracking_uri, experiment=base.tracking.experiment,
                                   search_id=ctx.search_id, steps=base.train.steps),
                ],
            ),
        )
    results = tuner.fit()
    return _rows(search, results, ctx)


def _trial_name(trial) -> str:
    return trial.trial_id


def _scheduler(search: Search, base, fs, experiment: str):
    from ray.tune.schedulers import FIFOScheduler

    from pipeline.tune.asha import ResumableASHA

    sched = search.spec.scheduler
    if sched.kind == "none":
        return FIFOScheduler()
    every = base.train.eval_every
    # Time is the training step each report carries (not Tune's iteration count, which restarts with
    # a restarted trial); the grace and the rungs are whole evals.
    # stop_last_trials=False: a trial's report at its last step is the end of its training anyway; a
    # stop there would abort the run before rank 0 has sent its final metrics and closed its run.
    return ResumableASHA(state_path=f"{experiment}/{SCHEDULER_STATE}", filesystem=fs, time_attr="step",
                         max_t=base.train.steps, grace_period=sched.grace_period * every,
                         reduction_factor=sched.reduction_factor, stop_last_trials=False)


def _rows(search: Search, results, ctx) -> list[TrialRow]:
    from pipeline.tune import tracking
    from pipeline.tune.progress import describe_state

    base = search.base_job()
    runs = tracking.trial_runs(tracking_uri=ctx.tracking_uri, experiment=base.tracking.experiment, search_id=ctx.search_id)
    rows = []
    # Tune's Trial objects (status, last result); ids end in the creation index, so sorting keeps the drawn order.
    for trial in sorted(results._experiment_analysis.trials, key=lambda t: t.trial_id):
        last = trial.last_result or {}
        step = last.get("step")
        state = describe_state(trial.status, step, base.train.steps)
        run = runs.get(trial.trial_id)
        rows.append(TrialRow(
            trial_id=trial.trial_id, params=trial.config["params"], state=state, step=step,
            metric=last.get(search.spec.metric_key), run_id=run.info.run_id if run else None,
            checkpoint_path=last.get("checkpoint_path"),
            scores={k: float(v) for k, v in last.items() if k.startswith("eval/") and isinstance(v, (int, float))},
        ))
    return rows


def _finish(search: Search, rows: list[TrialRow], *, search_id, parent_id, uri, manifest_sha, fs, best_spec, t0) -> SearchOutcome:
    from pipeline.tracking.run import end_run
    from pipeline.tune import tracking
    from pipeline.tune.winner import best_job_yaml, best_of, publish_winner, results_csv, write_best_job

    s = search.spec
    best = best_of(rows)
    job_text, path, version, gate = None, None, None, None
    if best is not None:
        job = search.job_for(best.params)
        job_text = best_job_yaml(job, search_id=search_id, row=best, metric=s.metric)
        path = best_spec or Path(f"{search_id}-best.yaml")
        write_best_job(path, job_text)
    tracking.record_results(tracking_uri=uri, parent_run_id=parent_id, table_csv=results_csv(rows, list(s.space), s.metric),
                            best=best and {"trial_id": best.trial_id, "run_id": best.run_id, "metric": best.metric},
                            best_job_yaml=job_text, metric=s.metric)
    if best is not None and s.winner != "none":
        from pipeline.spec import PromoteSpec

        promote = s.promote or PromoteSpec(metric=s.metric)  # the gate judges by the search's metric unless told
        out = publish_winner(search.job_for(best.params), best, action=s.winner, promote=promote, search_id=search_id,
                             tracking_uri=uri, manifest_sha=manifest_sha, storage_fs=fs)
        version = out.version
        gate = out.decision.outcome if out.decision is not None else None
    end_run(uri, parent_id, "FINISHED")
    return SearchOutcome(search_id, parent_id, uri, rows, best, path, version, gate, time.monotonic() - t0)


def _with_classes_raw(base_raw: dict, base, manifest: dict) -> dict:
    """The base job as the trials get it: a conditional model's class count and names filled from the
    data, as the training driver does (pipeline/spec.py with_classes), so every trial builds the same
    networks; SpecError here, before Ray starts, when the data have no labels."""
    from pipeline.spec import with_classes

    model = with_classes(base, manifest).model
    if not model.conditional:
        return base_raw
    resolved = {"num_classes": model.num_classes, "class_names": list(model.class_names)}
    return {**base_raw, "model": {**base_raw.get("model", {}), **resolved}}

"""Scores for the promotion gate: one evaluator for both versions, and scores recorded on the version
under that evaluator's key so that they are computed once.

The evaluator key names everything that changes a score: the extractor, the sha256 of its weights,
the data snapshot (manifest sha256), the number of generated samples and the seed of their latents.
Two scores under one key are comparable; scores under different keys never are (FD is biased by the
sample count, a different classifier is a different feature space).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass

from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from pipeline.data.config import DataSpec
from pipeline.eval.config import FEATURES_VERSION, METRICS_VERSION, EvalSpec, extractor_key
from pipeline.spec import JobSpec
from pipeline.tracking import names

# What the scorer returns that the gate records and may decide on (precision, recall and
# memorization appear when pipeline.eval reports them).
SCORE_KEYS = ("fd", "kid", "precision", "recall", "memorization", "accuracy")  # accuracy: conditional models


# torch.export.load keeps a process-wide deserializer: two threads loading pt2 models at once fail
# with "_CURRENT_DESERIALIZER is already set" (two gates in one process, e.g. the scheduler's threads).
_LOAD_LOCK = threading.Lock()


class GateError(RuntimeError):
    """The gate cannot decide: no such version, a contract mismatch, missing data, no server."""


@dataclass(frozen=True)
class Evaluator:
    eval_spec: EvalSpec
    data: DataSpec
    data_sha256: str
    seed: int
    weights_sha256: str

    @property
    def fields(self) -> dict:
        return {
            "extractor": self.eval_spec.extractor,
            "weights_sha256": self.weights_sha256,
            "data_sha256": self.data_sha256,
            "num_samples": self.eval_spec.num_samples,
            "seed": self.seed,
            # What else changes a number for the same weights and data: which real images are read
            # (the shard subset), the held-out split, the metrics' definitions and the features' code.
            "shards": self.data.shards,
            "settings": self.eval_spec.model_dump(exclude={"cache_dir", "inception_path", "num_samples"}),
            "versions": [FEATURES_VERSION, METRICS_VERSION],
        }

    @property
    def key(self) -> str:
        """16 hex digits: short enough for a tag name, 64 bits against accidental collisions."""
        return hashlib.sha256(json.dumps(self.fields, sort_keys=True).encode()).hexdigest()[:16]


def job_of(client: MlflowClient, mv: ModelVersion) -> JobSpec | None:
    """The resolved spec of the run that registered `mv`, or None for a version registered some
    other way (no run, or no job.yaml in it)."""
    run_id = mv.tags.get(names.RUN_ID) or mv.run_id
    try:
        return job_of_run(client, run_id) if run_id else None
    except GateError as e:
        raise GateError(f"version {mv.version}: {e}; pass --data") from None


def job_of_run(client: MlflowClient, run_id: str) -> JobSpec | None:
    """The run's `job.yaml` (the spec it trained with, resolved) as a JobSpec; None when absent."""
    import yaml

    from pipeline.spec import SpecError, parse_job

    with tempfile.TemporaryDirectory() as d:
        try:
            path = client.download_artifacts(run_id, "job.yaml", d)
        except Exception:
            return None
        with open(path) as f:
            raw = yaml.safe_load(f)
    try:
        return parse_job(raw, f"job.yaml of run {run_id}")
    except SpecError as e:  # a spec from an older version of the project
        raise GateError(f"the job.yaml of run {run_id} no longer validates ({e})") from None


def evaluator_for(candidate: ModelVersion, job: JobSpec | None, *, data: str | None, num_samples: int | None, seed: int) -> Evaluator:
    """The candidate's evaluator: its job's eval settings (or the defaults) on its data snapshot, or on
    `data` when given. Missing or changed data is a GateError naming what to pass."""
    from pipeline.data.errors import DataError
    from pipeline.data.manifest import load_manifest

    eval_spec = (job.eval if job and job.eval else EvalSpec())
    if num_samples is not None:
        eval_spec = EvalSpec.model_validate({**eval_spec.model_dump(), "num_samples": num_samples})
    want = candidate.tags.get(names.DATA_SHA256)
    if data is None:
        if job is None:
            raise GateError(f"version {candidate.version} has no job.yaml to find its data snapshot: pass --data")
        spec = job.data
    else:
        endpoint = job.data.endpoint_url if job else None
        spec = DataSpec(root=data, resolution=int(candidate.tags.get(names.RESOLUTION, 32)), endpoint_url=endpoint)
    try:
        _, sha = load_manifest(spec.root, spec.endpoint_url)
    except DataError as e:
        raise GateError(f"cannot read the reference data for version {candidate.version}: {e}; pass --data ROOT") from None
    if data is None and want and sha != want:
        raise GateError(
            f"the data at {spec.root} changed since version {candidate.version} was trained (manifest sha256 "
            f"{sha[:12]}, the version's snapshot is {want[:12]}): pass --data ROOT to score against another snapshot"
        )
    return Evaluator(eval_spec, spec, sha, seed, _weights_sha256(eval_spec, spec, sha))


def _weights_sha256(eval_spec: EvalSpec, data: DataSpec, data_sha: str) -> str:
    """The extractor's weights: the pinned Inception file's hash, or the hash of the classifier this
    machine trained for (data snapshot, settings), training it first if it is not cached yet."""
    if eval_spec.extractor == "inception":
        return eval_spec.inception_sha256
    from pipeline.eval.extractors import classifier_path, file_sha256, load_extractor
    from pipeline.eval.scorer import read_real_images

    load_extractor(eval_spec, data_sha, lambda: read_real_images(data))
    path = classifier_path(eval_spec, data_sha)
    # Should the eval package ever cache elsewhere, the key of its settings still names the weights
    # (training is seeded), only less strictly than their bytes.
    return file_sha256(path) if os.path.exists(path) else "settings:" + extractor_key(eval_spec, data_sha)


def _recorded_text(value: float) -> str:
    return f"{value:.6g}"


def _as_recorded(value: float) -> float:
    return float(_recorded_text(value))


class VersionScorer:
    """Scores of registered versions under one evaluator: read from the version's tags when recorded
    under the evaluator's key, else computed (pipeline.eval.scorer) and recorded."""

    def __init__(self, client: MlflowClient, model: str, evaluator: Evaluator, *, tracking_uri: str, record: bool):
        self.client, self.model, self.evaluator, self.tracking_uri, self.record = client, model, evaluator, tracking_uri, record
        self._scorer = None
        self.computed = 0  # how many versions this scorer had to score itself
        self.notes: list[str] = []  # why the evaluator left a score out (e.g. memorization uncalibrated)

    def tag(self, name: str) -> str:
        return f"{names.SCORE_PREFIX}.{self.evaluator.key}.{name}"

    def recorded(self, mv: ModelVersion, required: set[str]) -> dict[str, float] | None:
        if not all(self.tag(m) in mv.tags for m in required):
            return None
        return {k: float(mv.tags[self.tag(k)]) for k in SCORE_KEYS if self.tag(k) in mv.tags}

    def score(self, mv: ModelVersion, required: set[str]) -> tuple[dict[str, float], bool]:
        """(scores, reused) for `mv`, with every metric in `required` present."""
        mv = self.client.get_model_version(self.model, mv.version)  # fresh tags: another gate may have scored it
        if (found := self.recorded(mv, required)) is not None:
            return found, True
        # Decide on the numbers as recorded (6 significant digits): a later decision that reads them
        # back from the tags then compares exactly what this one did (a fresh score against a rounded
        # recorded one could otherwise tilt a near tie, e.g. the same weights registered twice).
        scores = {k: _as_recorded(v) for k, v in self._compute(mv).items()}
        missing = required - scores.keys()
        if missing:
            why = "; ".join(self.notes) or f"pipeline.eval returned {sorted(scores)}"
            raise GateError(f"the evaluator reports no {', '.join(sorted(missing))} ({why})")
        if self.record:
            at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            for k, v in scores.items():
                self._set_tag(mv.version, self.tag(k), _recorded_text(v))
            self._set_tag(mv.version, self.tag(names.SCORE_EVALUATOR), json.dumps(self.evaluator.fields, sort_keys=True))
            self._set_tag(mv.version, self.tag(names.SCORED_AT), at)
        return scores, False

    def _set_tag(self, version, key: str, value: str) -> None:
        """Two gates deciding at once both score the champion and write the same score tags (the
        same numbers: one evaluator). On a SQL store the two inserts of a new tag can collide (a
        unique-key error, worded differently by each database); the tag exists then, so the write,
        which is idempotent, is tried again (as an update) for a few seconds before an error is raised."""
        from pipeline.tracking.retry import with_retries

        with_retries(lambda: self.client.set_model_version_tag(self.model, version, key, value),
                     what=f"setting tag {key} of version {version}", patience_s=5.0, first_wait_s=0.2)

    def _compute(self, mv: ModelVersion) -> dict[str, float]:
        from pipeline.eval.scorer import GeneratorScorer
        from pipeline.sampling import load_generator

        try:
            with _LOAD_LOCK:
                generator, z_dim = load_generator(f"models:/{self.model}/{mv.version}", self.tracking_uri)
        except Exception as e:
            raise GateError(f"cannot load {self.model} version {mv.version}: {e}") from None
        if str(z_dim) != mv.tags.get(names.Z_DIM, str(z_dim)):
            raise GateError(f"version {mv.version}: its signature takes z of size {z_dim}, its z_dim tag says {mv.tags[names.Z_DIM]}")
        if self._scorer is None:  # real images read once, for every version this evaluator scores
            e = self.evaluator
            self._scorer = GeneratorScorer(e.eval_spec, e.data, e.data_sha256)
        result = self._scorer(generator, z_dim, seed=self.evaluator.seed, class_names=generator.class_names)
        self.computed += 1
        # memorization is None (with a note) when the data cannot calibrate it: absent, not a number.
        self.notes = [result["memorization_note"]] if result.get("memorization_note") else []
        return {k: float(result[k]) for k in SCORE_KEYS if result.get(k) is not None}

"""The search file (jobs/searches/*.yaml): a base job, a space over its fields, a budget, a metric,
an early-stopping scheduler and what to do with the winner. Validated at the boundary, like a job:
every trial's resolved job spec is checked before Ray starts, and an error names the field.

    name: quickstart-r1
    job: ../quickstart.yaml               # relative to this file
    set: [train.steps=600, train.eval_every=100]   # fixed overrides, as `--set` takes them
    space:
      regularization.r1.gamma: {loguniform: [0.01, 1.0]}
      regularization.ema.beta: {choice: [0.99, 0.995, 0.999]}
    trials: 8
    metric: fd                            # fd or kid, lower is better
    scheduler: {kind: asha, grace_period: 1, reduction_factor: 2}   # grace in evals
    max_concurrent: 1
    winner: register                      # register | promote | none
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.spec import JobSpec, PromoteSpec, SpecError, apply_overrides, parse_job, read_yaml_mapping, with_absolute_paths
from pipeline.tune.space import AddressError, apply_assignments, draw_trials, probes

METRIC_KEYS = {"fd": "eval/fd", "kid": "eval/kid"}  # what rank 0 reports (tracking/names.py EVAL_FD, EVAL_KID)


class SearchError(ValueError):
    """A search file that does not validate, or a space that can produce an invalid job."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Domain(_Strict):
    """Exactly one of: loguniform [lo, hi], uniform [lo, hi], choice [values], grid [values]."""

    loguniform: tuple[float, float] | None = None
    uniform: tuple[float, float] | None = None
    choice: list[Any] | None = Field(None, min_length=1)
    grid: list[Any] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one_kind(self) -> "Domain":
        given = [k for k in ("loguniform", "uniform", "choice", "grid") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of loguniform, uniform, choice, grid (got {', '.join(given) or 'none'})")
        for kind in ("loguniform", "uniform"):
            bounds = getattr(self, kind)
            if bounds is not None and not bounds[0] < bounds[1]:
                raise ValueError(f"{kind} [lo, hi] needs lo < hi, got {list(bounds)}")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError(f"loguniform needs lo > 0, got {self.loguniform[0]}")
        return self


class SchedulerSpec(_Strict):
    """ASHA over eval steps: a trial may be stopped from its `grace_period`-th eval on, when it is
    worse than the best 1/reduction_factor of the trials seen at the same point. `none`: every trial
    runs to the end (the baseline the bench compares with)."""

    kind: Literal["asha", "none"] = "asha"
    grace_period: int = Field(1, ge=1, description="in evals (train.eval_every steps each)")
    reduction_factor: float = Field(2, gt=1)


class SearchSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    job: str = Field(description="the base job file, relative to the search file")
    set: list[str] = Field(default_factory=list, description="fixed overrides of the base job, as --set takes them")
    space: dict[str, Domain] = Field(min_length=1)
    trials: int = Field(8, ge=1, description="random draws; each runs every grid combination")
    metric: Literal["fd", "kid"] = "fd"
    scheduler: SchedulerSpec = SchedulerSpec()
    max_concurrent: int = Field(1, ge=1, description="trials in flight at once (each takes the base job's workers)")
    seed: int = 0
    winner: Literal["register", "promote", "none"] = "register"
    promote: PromoteSpec | None = Field(None, description="the gate's settings when winner is promote")

    @field_validator("space")
    @classmethod
    def _paths(cls, space: dict[str, Domain]) -> dict[str, Domain]:
        for path in space:
            if path in ("name",) or path.split(".")[0] in ("checkpoint", "tracking"):
                raise ValueError(f"{path}: a search does not vary where runs are stored or tracked")
        return space

    @property
    def metric_key(self) -> str:
        return METRIC_KEYS[self.metric]


class Search:
    """A validated search: the spec, its base job (raw mapping after `set`; load_search makes it the
    resolved job, local paths absolute) and the drawn trials."""

    def __init__(self, spec: SearchSpec, base_raw: dict, source: Path):
        self.spec, self.base_raw, self.source = spec, base_raw, source
        self.trials = draw_trials(spec.space, spec.trials, spec.seed)

    def job_for(self, assignments: dict[str, Any]) -> JobSpec:
        return trial_job(self.base_raw, assignments, str(self.source))

    def base_job(self) -> JobSpec:
        return parse_job(self.base_raw, str(self.source))

    def sha256(self) -> str:
        """Identity of the search (spec and base job): a resume must continue the same search."""
        payload = {"search": self.spec.model_dump(mode="json"), "base": self.base_raw}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def trial_job(base_raw: dict, assignments: dict[str, Any], source: str = "<search>") -> JobSpec:
    """A trial's job: the base with `assignments`, its eval reported at every eval step."""
    spec = parse_job(apply_assignments(base_raw, assignments), f"{source} (trial {_show(assignments)})")
    # The worker reports to Ray (and so to Tune) at checkpoint steps only: checkpointing at every eval
    # makes each eval a report, and lets a stopped or resumed trial continue from its last score.
    return spec.model_copy(update={"train": spec.train.model_copy(update={"checkpoint_every": spec.train.eval_every})})


def _show(assignments: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in assignments.items())


def load_search(path: str | Path, extra_set: list[str] | None = None) -> Search:
    """Read and validate a search file and every job it can produce; SearchError names the field.
    `extra_set` (from the command line) is applied after the file's own `set`."""
    path = Path(path)
    raw = read_yaml_mapping(path, "search file", SearchError)
    if extra_set:
        raw["set"] = [*(raw.get("set") or []), *extra_set]
    try:
        spec = SearchSpec.model_validate(raw)
    except ValidationError as e:
        lines = [f"  {'.'.join(str(p) for p in err['loc']) or '<search>'}: {err['msg'].removeprefix('Value error, ')}"
                 for err in e.errors(include_url=False)]
        raise SearchError(f"invalid search file {path}:\n" + "\n".join(lines)) from None
    job_path = (path.parent / spec.job).resolve()
    try:
        base_raw = read_yaml_mapping(job_path, "the base job")
    except SpecError as e:
        raise SearchError(f"{path}: job: {e}") from None
    try:
        apply_overrides(base_raw, spec.set)
    except SpecError as e:
        raise SearchError(f"{path}: set: {e}") from None
    search = Search(spec, base_raw, path)
    check(search)
    # Local paths absolute against this working folder, as `ganpipe train` makes them: trials run in
    # Tune's trial folders, the best spec file must mean the same wherever it is used, and a resumed
    # search compares its sha256 (over this mapping) with the original's after the same step.
    search.base_raw = with_absolute_paths(search.base_job()).model_dump(mode="json")
    return search


def check(search: Search) -> None:
    """Refuse, before Ray starts, a search whose base job or space can produce an invalid job."""
    s, where = search.spec, search.source
    try:
        base = search.base_job()
    except SpecError as e:
        raise SearchError(f"{where}: the base job (with `set`) is invalid:\n{e}") from None
    if base.eval is None:
        raise SearchError(f"{where}: the base job has no `eval` section; a search needs a score ({s.metric}) to compare trials")
    t = base.train
    if t.eval_every == 0 or t.eval_every >= t.steps:
        raise SearchError(
            f"{where}: train.eval_every is {t.eval_every} with train.steps {t.steps}; a search reports its metric at every "
            f"eval, so set 0 < train.eval_every < train.steps (e.g. set: [train.eval_every={max(1, t.steps // 5)}])"
        )
    if s.scheduler.kind == "asha" and s.scheduler.grace_period * t.eval_every >= t.steps:
        raise SearchError(
            f"{where}: scheduler.grace_period {s.scheduler.grace_period} evals × train.eval_every {t.eval_every} reaches "
            f"train.steps {t.steps}: no trial could be stopped early; lower it, or use scheduler.kind none"
        )
    failures: list[str] = []
    for assignments in [*probes(s.space), *search.trials]:
        try:
            search.job_for(assignments)
        except AddressError as e:
            raise SearchError(f"{where}: space.{e}") from None
        except SpecError as e:
            failures.append(f"space values {_show(assignments)} give an invalid job:\n{_indent(str(e))}")
    if failures:
        shown = "\n".join(failures[:2]) + (f"\n  ... and {len(failures) - 2} more" if len(failures) > 2 else "")
        raise SearchError(f"{where}: the search space can produce an invalid job spec:\n{shown}")


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines()[1:] or text.splitlines())

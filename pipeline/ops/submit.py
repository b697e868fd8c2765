"""Submitting training jobs and searches to a Ray cluster through the Ray Jobs API (`JobSubmissionClient`).

What travels to the cluster: a staged copy of the `pipeline` package and the resolved job file (for a
search: the search file and its resolved base job), nothing else (no data, .venv, mlflow.db,
ray_results or .git). What the job reads from the environment: only the non-secret variables named
in PASSED_ENV; credentials (AWS keys, MLflow user/password) come from the cluster's own environment,
as infra/ gives it from Kubernetes secrets.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml

import pipeline
from pipeline.spec import JobSpec, load_job, with_absolute_paths

# Non-secret settings the job needs to reach the same stores as the submitter. Anything that looks
# like a credential is never in this list, and a value with user:password@ in it is refused.
PASSED_ENV = ("MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL_S3", "MLFLOW_S3_ENDPOINT_URL", "AWS_DEFAULT_REGION")
# The job driver learns its own submission id and schedule from these (tags on its MLflow run).
SUBMISSION_ENV = "GANPIPE_SUBMISSION_ID"
SCHEDULE_ENV = "GANPIPE_SCHEDULE"
GIT_ENV = "GANPIPE_GIT_COMMIT"
JOB_FILE = "job.yaml"
SEARCH_FILE = "search.yaml"
# Belt and braces: the staged folder holds only the package and the job file, but if someone points
# working_dir at the repository these never go.
EXCLUDES = ["__pycache__", "*.pyc", ".venv", ".git", "data", "mlflow.db", "mlartifacts", "ray_results", "*.egg-info"]
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_USERINFO = re.compile(r"://[^/@\s]+:[^/@\s]*@")
# What the job's `python` must find: the project's dependencies (pyproject.toml), by module name.
REQUIRED_MODULES = ("typer", "rich", "yaml", "pydantic", "ray", "torch", "webdataset", "mlflow", "boto3", "croniter",
                    "numpy", "PIL", "sklearn")
DISTRIBUTION = "ganpipe"
CHECK_METADATA = "ganpipe_check"  # marks the check jobs in the cluster's job list
CHECK_TIMEOUT_S = 60.0
_CHECK_MARK = "GANPIPE_CLUSTER_CHECK "
# Run by the cluster's `python` exactly as the real entrypoint's is found (the job supervisor's PATH on
# the head). find_spec looks a module up without importing it: a few hundred ms instead of the
# seconds torch and mlflow take to import. Any Python 3; single quotes become double below, so the
# whole script fits in one single-quoted shell word.
_PROBE = f"""
import os, sys, json
# The real job runs in its uploaded working dir, not here: what this folder holds (a source tree with
# its egg-info, say) must not count.
sys.path = [p for p in sys.path if p not in ("", ".", os.getcwd())]
try:
    from importlib.util import find_spec
except ImportError:
    find_spec = None
def found(name):
    try:
        return find_spec is not None and find_spec(name) is not None
    except Exception:
        return False
def version(dist):
    try:
        from importlib.metadata import version as v
        return v(dist)
    except Exception:
        return None
print({_CHECK_MARK!r} + json.dumps(dict(python=sys.executable, version=sys.version.split()[0],
      missing=[m for m in {list(REQUIRED_MODULES)!r} if not found(m)], project=version({DISTRIBUTION!r}))))
""".replace("'", '"')


class SubmitError(RuntimeError):
    """A submission refused before (or by) the cluster; the message says why."""


class DuplicateSubmission(SubmitError):
    """The cluster already has a job with this submission id (Ray refuses to run it twice)."""


@dataclass
class Submission:
    submission_id: str
    files: dict[str, str]  # staged beside the package: file name → YAML text
    entrypoint: str
    runtime_env: dict
    metadata: dict[str, str]
    warnings: list[str] = field(default_factory=list)


def resolve_address(address: str | None) -> str:
    """The flag, else $RAY_ADDRESS, else Ray's own default (http://127.0.0.1:8265), as `ray job` does."""
    address = address or os.environ.get("RAY_ADDRESS") or "http://127.0.0.1:8265"
    if "://" not in address:
        address = f"http://{address}"
    return address


def client(address: str | None):
    from ray.job_submission import JobSubmissionClient

    url = resolve_address(address)
    try:
        return JobSubmissionClient(url)
    except Exception as e:  # connection refused, wrong port, a cluster without the Jobs API
        raise SubmitError(f"cannot reach the Ray Jobs API at {url}: {e}") from None


def new_submission_id(job_name: str) -> str:
    """Unique and readable; it is also the Ray Train run name (checkpoints) and the MLflow run name."""
    return f"{job_name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def prepare(job: str | Path, overrides: list[str] | None = None, *, submission_id: str | None = None,
            extra_env: dict[str, str] | None = None, metadata: dict[str, str] | None = None) -> Submission:
    """Validate the spec and check the shards here, so a bad spec or missing data never reaches the
    cluster. Raises SpecError / DataError / SubmitError."""
    spec, local = _absolute_local_paths(load_job(job, overrides or []))
    _check_data(spec)
    submission_id = _checked_id(submission_id or new_submission_id(spec.name))
    return Submission(
        submission_id,
        files={JOB_FILE: _yaml(spec.model_dump(mode="json"))},
        entrypoint=f"python -m pipeline train {JOB_FILE} --name {submission_id}",
        runtime_env=_runtime_env(spec, submission_id, extra_env),
        metadata={"ganpipe_job": spec.name, "registered_model": spec.tracking.registered_model,
                  "experiment": spec.tracking.experiment, **(metadata or {})},
        warnings=_local_warning(local),
    )


def prepare_search(search_file: str | Path, overrides: list[str] | None = None, *, submission_id: str | None = None) -> Submission:
    """A search (`ganpipe tune`) as a cluster job: every trial's job validated and the shards checked
    here, like a training job. The search file travels with its base job resolved (its `set` and
    `overrides` applied, local paths absolute), so the cluster needs nothing from this folder.
    Raises SearchError / DataError / SubmitError."""
    from pipeline.tune.spec import load_search

    search = load_search(search_file, extra_set=overrides or [])
    base, local = _absolute_local_paths(search.base_job())
    _check_data(base)
    submission_id = _checked_id(submission_id or new_submission_id(search.spec.name))
    staged_search = {**search.spec.model_dump(mode="json", exclude_none=True), "job": JOB_FILE, "set": []}
    return Submission(
        submission_id,
        files={SEARCH_FILE: _yaml(staged_search), JOB_FILE: _yaml(search.base_raw)},
        entrypoint=f"python -m pipeline tune {SEARCH_FILE} --name {submission_id}",  # best job: on the parent run
        runtime_env=_runtime_env(base, submission_id, None),
        metadata={"ganpipe_search": search.spec.name, "registered_model": base.tracking.registered_model,
                  "experiment": base.tracking.experiment},
        warnings=_local_warning(local),
    )


def is_search_file(path: str | Path) -> bool:
    """A search file names a `space`; a job file never does (its schema forbids unknown fields)."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return False  # the job loader reports it, naming the file
    return isinstance(raw, dict) and "space" in raw


def _checked_id(submission_id: str) -> str:
    if not _ID.match(submission_id):
        raise SubmitError(f"--name {submission_id!r}: use letters, digits, '_', '.', '-' (max 128), starting with a letter or digit")
    return submission_id


def _local_warning(local: list[str]) -> list[str]:
    return [f"{' and '.join(local)} local: every node of the cluster must see the same path"] if local else []


def _runtime_env(spec: JobSpec, submission_id: str, extra_env: dict[str, str] | None) -> dict:
    """The job's environment: the named non-secret variables, the tracking URI the submitter
    resolves, the git commit and the submission id."""
    from pipeline.tracking.run import PROJECT_ROOT, git_commit, resolve_tracking_uri

    env = {k: os.environ[k] for k in PASSED_ENV if os.environ.get(k)}
    if spec.tracking.tracking_uri is None:
        # The driver on the cluster would otherwise fall back to its own working folder's sqlite file.
        env["MLFLOW_TRACKING_URI"] = resolve_tracking_uri(None)
    if commit := git_commit(PROJECT_ROOT):
        env[GIT_ENV] = commit  # .git does not travel; the run's lineage tag comes from here
    env.update(extra_env or {})
    env[SUBMISSION_ENV] = submission_id
    for key, value in env.items():
        if _USERINFO.search(value):
            raise SubmitError(f"${key}: credentials in a URL are refused (user:password@); the cluster's environment supplies them")
    return {"env_vars": env, "excludes": EXCLUDES}


def _yaml(mapping: dict) -> str:
    return yaml.safe_dump(mapping, sort_keys=False)


def _absolute_local_paths(spec: JobSpec) -> tuple[JobSpec, list[str]]:
    """Local paths made absolute (the job runs in Ray's unpacked working dir), and the shared places
    among them that every node must see."""
    spec = with_absolute_paths(spec)
    shared = (("data.root", spec.data.root), ("checkpoint.storage_path", spec.checkpoint.storage_path))
    return spec, [f"{name} ({path})" for name, path in shared if "://" not in path]


def stage(sub: Submission, dest: Path) -> list[str]:
    """Write what travels into `dest`: the `pipeline` package (no caches) and the resolved job (and
    search) file. Returns the staged files, relative to dest."""
    src = Path(pipeline.__file__).resolve().parent
    shutil.copytree(src, dest / "pipeline", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name, text in sub.files.items():
        (dest / name).write_text(text)
    return sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())


def submit(sub: Submission, address: str | None, *, check: bool = False) -> str:
    """Stage and submit; returns the submission id. Raises DuplicateSubmission when the id is taken;
    with `check`, SubmitError when the cluster's `python` could not run the job (see
    `check_cluster`), before anything is uploaded."""
    jobs = client(address)
    if check:
        check_cluster(jobs)
    with tempfile.TemporaryDirectory(prefix="ganpipe-submit-") as tmp:
        stage(sub, Path(tmp))
        runtime_env = {**sub.runtime_env, "working_dir": tmp}
        try:
            return jobs.submit_job(entrypoint=sub.entrypoint, submission_id=sub.submission_id,
                                   runtime_env=runtime_env, metadata=sub.metadata)
        except RuntimeError as e:
            # Ray keys jobs by submission id and refuses a second one (an atomic put in the GCS).
            if "already exists" in str(e):
                raise DuplicateSubmission(f"submission id {sub.submission_id} already exists on the cluster") from None
            raise SubmitError(f"the cluster refused the job: {_last_line(e)}") from None


def check_cluster(jobs, timeout: float = CHECK_TIMEOUT_S) -> dict:
    """Ask the cluster what its job entrypoints run: a tiny Ray job whose `python` is found on the same
    PATH as the real entrypoint's (`python -m pipeline ...`), printing that Python, the project's
    dependencies it lacks and the ganpipe version installed there. Returns the probe's answer; raises
    SubmitError (one line: the Python, what it lacks, the two fixes) when the job would fail there.

    Why a job and not a Ray task: a task runs in the raylet's own worker Python, which has Ray by
    definition; the entrypoint's `python` is whatever the head's PATH held when `ray start` ran.
    The check job stays in the cluster's job list (SUCCEEDED, metadata ganpipe_check; `ganpipe jobs`
    hides it): Ray's job monitor writes a last status after the job ends, so deleting the record
    right away leaves a ghost entry, and waiting for the monitor would cost seconds."""
    sid = f"ganpipe-check-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    try:
        jobs.submit_job(entrypoint=f"python -c {shlex.quote(_PROBE)}", submission_id=sid, metadata={CHECK_METADATA: "1"})
    except RuntimeError as e:
        raise SubmitError(f"the cluster refused a check job: {_last_line(e)} (--no-check-cluster skips the check)") from None
    status = wait_for(jobs, sid, TERMINAL, timeout)
    if status not in TERMINAL:
        jobs.stop_job(sid)
        raise SubmitError(f"the cluster did not run a check job within {timeout:.0f} s (it stayed {status}): "
                          "is the head overloaded? --no-check-cluster skips the check")
    logs = jobs.get_job_logs(sid)
    found = [line for line in logs.splitlines() if line.startswith(_CHECK_MARK)]
    if not found:
        said = [line.strip() for line in logs.splitlines() if line.strip()]
        raise SubmitError(f"the cluster's job entrypoints have no working `python` (the check job {status.lower()}: "
                          f"{said[-1] if said else 'no output'}): {_FIXES}")
    probe = json.loads(found[-1][len(_CHECK_MARK):])
    problems = []
    if probe["missing"]:
        problems.append(f"lacks {', '.join(probe['missing'])}")
    mine = local_project_version()
    if probe.get("project") and mine and probe["project"] != mine:
        problems.append(f"has {DISTRIBUTION} {probe['project']} where this submitter has {mine}")
    if problems:
        raise SubmitError(f"the cluster's `python` is {probe['python']} (Python {probe['version']}), which "
                          f"{' and '.join(problems)}: {_FIXES}")
    return probe


_FIXES = ("install this project (pip install ganpipe, or the image in infra/docker) into that Python on every node, "
          "or start Ray from the environment that has it (its bin/ first on PATH, e.g. after `source .venv/bin/activate`)")


def local_project_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # run from a source tree without installing: nothing to compare
        return None


def _last_line(e: Exception) -> str:
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    return lines[-1] if lines else repr(e)


def dashboard_job_url(address: str | None, submission_id: str) -> str:
    return f"{resolve_address(address).rstrip('/')}/#/jobs/{submission_id}"


def follow_logs(jobs, submission_id: str, write) -> str:
    """Stream a job's logs through `write` until it ends; returns its final status."""
    import asyncio

    async def tail() -> None:
        async for chunk in jobs.tail_job_logs(submission_id):
            write(chunk)

    asyncio.run(tail())
    # The log stream closes when the job ends; the status may lag it by a moment.
    deadline = time.time() + 30
    while (status := str(jobs.get_job_status(submission_id).value)) not in TERMINAL and time.time() < deadline:
        time.sleep(0.5)
    return status


def wait_for(jobs, submission_id: str, statuses: set[str], timeout: float) -> str:
    deadline = time.time() + timeout
    while True:
        status = str(jobs.get_job_status(submission_id).value)
        if status in statuses or time.time() > deadline:
            return status
        time.sleep(0.5)


def _check_data(spec) -> None:
    """The shards exist and match the manifest, and a conditional model finds class labels in them:
    checked here, so the cluster never starts a job that would fail on its data."""
    from pipeline.data.manifest import check_shards, load_manifest
    from pipeline.spec import with_classes

    check_shards(spec.data)
    with_classes(spec, load_manifest(spec.data.root, spec.data.endpoint_url)[0])

"""Every MLflow metric, tag and alias name the project writes or reads, in one place.

Tags and aliases are an interface: scripts, the promotion gate, the scheduler and people's
dashboards key on them. Change one here and everywhere follows; never spell one inline.
"""
from __future__ import annotations

# -- registry aliases -----------------------------------------------------------------------------
CHAMPION = "champion"
PREVIOUS_CHAMPION = "previous-champion"

# -- tags on a run and on the model versions it registers ------------------------------------------
JOB = "job"
SPEC_SHA256 = "spec_sha256"
DATA_SHA256 = "data_manifest_sha256"   # the data snapshot: sha256 of the shards' manifest.json
RUN_ID = "run_id"
STEPS = "steps"
Z_DIM = "z_dim"
RESOLUTION = "resolution"
GIT_COMMIT = "git_commit"
SUBMISSION_ID = "ray_submission_id"    # the Ray Jobs submission id, when the run was submitted
SCHEDULE = "schedule"                  # the retraining schedule that submitted the run, if any
FD = "fd"
KID = "kid"
FD_EXTRACTOR = "fd_extractor"
NUM_CLASSES = "num_classes"            # a class-conditional generator's class count (absent: unconditional)
CLASS_NAMES = "class_names"            # its classes as a JSON list, in label order
ACCURACY = "accuracy"                  # the classifier's agreement with the asked-for class (eval/classwise.py)

# -- the promotion gate's tags on model versions (gate.py, scoring.py) ------------------------------
# Scores are recorded per evaluator: `score.<evaluator key>.<fd|kid|...>`, so a score computed once
# under the same (extractor, weights sha256, data snapshot, sample count, seed) is never recomputed.
SCORE_PREFIX = "score"
SCORE_EVALUATOR = "evaluator"          # score.<key>.evaluator: the key's fields as JSON, for people
SCORED_AT = "at"                       # score.<key>.at: when the score was computed (UTC, ISO 8601)
# The latest decision about a version as the candidate, as flat tags (easy to filter on) ...
GATE_DECISION = "gate.decision"        # promoted | kept | first
GATE_REASON = "gate.reason"
GATE_METRIC = "gate.metric"
GATE_MARGIN = "gate.min_improvement"
GATE_IMPROVEMENT = "gate.improvement"  # relative improvement over the champion on gate.metric
GATE_EVALUATOR = "gate.evaluator"
GATE_AGAINST = "gate.champion"         # the champion it was compared with ("" when there was none)
GATE_AT = "gate.at"
# ... and every decision and rollback in full (JSON), on each version involved, under its own key
# (`gate.log.<UTC stamp>.v<candidate>`) so that concurrent decisions never overwrite each other.
GATE_LOG_PREFIX = "gate.log"
ROLLED_BACK_REASON = "gate.rolled_back_reason"  # on a champion that a rollback demoted

# -- params (flattened spec fields) that code reads back from the run ------------------------------

# -- metrics logged by rank 0 ------------------------------------------------------------------------
SAMPLES_SEEN = "samples_seen"
SAMPLES_PER_S = "samples_per_s"
RESUMED_FROM_STEP = "train/resumed_from_step"
EVAL_FD = "eval/fd"
EVAL_KID = "eval/kid"
EVAL_PRECISION = "eval/precision"
EVAL_RECALL = "eval/recall"
EVAL_MEMORIZATION = "eval/memorization"
EVAL_ACCURACY = "eval/accuracy"


def eval_class_metric(class_name: str, score: str) -> str:
    """`eval/class/<name>/<fd|accuracy>`, the name reduced to what MLflow accepts in a metric key."""
    safe = "".join(ch if ch.isalnum() or ch in "_-. " else "_" for ch in class_name)
    return f"eval/class/{safe}/{score}"

# -- a search (ganpipe tune): a parent run and one nested run per trial ------------------------------
SEARCH = "search"                  # the search id (its run name), on the parent and every child
SEARCH_NAME = "search_name"        # the search file's `name`
SEARCH_SHA256 = "search_sha256"    # search file + base job: a resume must continue the same search
ROLE = "search_role"               # parent | trial
TRIAL_ID = "trial_id"              # Tune's trial id, on the child and on the registered version
BEST_TRIAL_ID = "best_trial_id"
BEST_RUN_ID = "best_run_id"
STOPPED_EARLY = "stopped_early"    # "true" on a child the scheduler stopped before train.steps
TRIAL_STARTS = "trial_starts"      # how many times the trial's function started (2+: resumed)
PARENT_RUN_ID = "mlflow.parentRunId"  # MLflow's own tag: nests the child under the parent in the UI
TUNE_PARAM_PREFIX = "tune."              # searched values as params: tune.<spec path>

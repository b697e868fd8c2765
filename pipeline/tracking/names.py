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

# -- metrics logged by rank 0 ------------------------------------------------------------------------
SAMPLES_SEEN = "samples_seen"
SAMPLES_PER_S = "samples_per_s"
RESUMED_FROM_STEP = "train/resumed_from_step"
EVAL_FD = "eval/fd"
EVAL_KID = "eval/kid"
EVAL_PRECISION = "eval/precision"
EVAL_RECALL = "eval/recall"
EVAL_MEMORIZATION = "eval/memorization"

"""The evaluator's fixed rules and sizes, in a module without torch: the job spec (eval/config.py)
names them in its evaluator key, and importing the spec must not import torch (seconds), because
`ganpipe train` validates the spec before it starts Ray (train/launch.py overlaps torch's import
with Ray's start instead). manifold.py and memorization.py use them from here."""
from __future__ import annotations

NHOOD_K = 3  # precision/recall: the k of each real feature's k-NN radius

MEMORIZATION_QUANTILE = 0.05
VIEW_SHIFTS = (1, 2, 3)  # px, each way, along one axis at a time
VIEWS_RULE = "min over {identity, hflip} x {no shift, +-1..3 px along x, +-1..3 px along y}, edges replicated"
MEMORIZATION_SAMPLES = 1000  # generated samples the share is taken over (each costs NUM_VIEWS extractor passes)

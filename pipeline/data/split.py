"""The held-out split: real samples that evaluation keeps apart to calibrate the memorization share,
and that training therefore never reads.

Membership is a hash of the sample's WebDataset key, not its position, so the evaluation
(pipeline/eval/memorization.py) and the training stream (worker_stream.py) decide it on their own
and agree, whatever the reading order, the shard subset a rank reads or the number of workers.
It lives in data/ because both sides need it and data/ must not import eval/.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

SPLIT_RULE = "int(sha256(__key__)[:8], 16) / 2**32 < heldout_fraction"  # recorded in the evaluator key


def is_heldout(key: str, fraction: float) -> bool:
    """Whether the sample with WebDataset key `key` belongs to the held-out split."""
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16) / 2**32 < fraction


@dataclass(frozen=True)
class HeldOut:
    """What a training stream leaves out: the held-out samples among the first `within` decodable
    samples in manifest order (the evaluation reads no further: pipeline.eval.scorer.MAX_REAL).
    Held-out keys past that are trained on, as no evaluation ever holds them out, so a large data
    set loses `fraction` of at most `within` samples, not of all of them."""

    fraction: float
    within: int

    def skips(self, key: str, position: int) -> bool:
        """`position`: the sample's index among the selected shards' samples, in manifest order."""
        return position < self.within and is_heldout(key, self.fraction)

    def widened(self, corrupt_budget: int) -> "HeldOut":
        """With on_corrupt=skip the evaluation skips up to `corrupt_budget` undecodable samples on its
        way to `within` good ones, so it may read that many positions further."""
        return HeldOut(self.fraction, self.within + max(0, corrupt_budget))

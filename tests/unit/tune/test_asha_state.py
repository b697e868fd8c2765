"""ASHA's judgements survive a restarted driver: the rungs and the stops are read back (no Ray needed)."""
from types import SimpleNamespace

import pyarrow.fs
from ray.tune.schedulers import TrialScheduler

from pipeline.tune.asha import ResumableASHA

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP


def _asha(path) -> ResumableASHA:
    return ResumableASHA(state_path=str(path), filesystem=pyarrow.fs.LocalFileSystem(), time_attr="step", metric="fd",
                         mode="min", max_t=18, grace_period=6, reduction_factor=2)


def _report(asha, trial, step, fd):
    return asha.on_trial_result(None, trial, {"step": step, "fd": fd})


def test_rungs_and_stops_are_read_back_after_a_restart(tmp_path):
    state = tmp_path / "rungs.json"
    good, bad, late = (SimpleNamespace(trial_id=t) for t in ("good", "bad", "late"))
    first = _asha(state)
    for t in (good, bad):
        first.on_trial_add(None, t)
    assert _report(first, good, 6, 70.0) == CONTINUE  # first at the rung: nothing to compare with
    assert _report(first, bad, 6, 100.0) == STOP      # worse than the better half

    # A new driver (the old one was killed): Tune still had `bad` as running and restarts it from its
    # checkpoint, and `late` reaches the first rung only now.
    second = _asha(state)
    for t in (good, bad, late):
        second.on_trial_add(None, t)
    assert _report(second, bad, 12, 60.0) == STOP, "a stop decided before the restart stands"
    assert _report(second, late, 6, 95.0) == STOP, "judged against the scores recorded before the restart"
    assert _report(second, good, 12, 65.0) == CONTINUE

    # Without the saved state, the late trial would have passed its rung unjudged.
    fresh = _asha(tmp_path / "none.json")
    fresh.on_trial_add(None, late)
    assert _report(fresh, late, 6, 95.0) == CONTINUE

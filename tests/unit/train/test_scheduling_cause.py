"""A failed fit is a scheduling error only when Ray Train gave up placing the worker group."""
import pytest
from ray.train import ControllerError, WorkerGroupError
from ray.train.v2._internal.exceptions import InsufficientClusterResourcesError, WorkerGroupStartupTimeoutError

from pipeline.train.launch import _scheduling_failure


@pytest.mark.parametrize("error, expected", [
    (ControllerError(WorkerGroupStartupTimeoutError(3)), True),
    (ControllerError(InsufficientClusterResourcesError("no GPU nodes")), True),
    (WorkerGroupError("rank 0: ValueError", {0: ValueError("bad batch")}), False),
    (RuntimeError("out of memory"), False),
    (KeyError("x"), False),
], ids=["start-timeout", "insufficient", "worker-error", "runtime", "other"])
def test_only_placement_failures_count(error, expected):
    assert _scheduling_failure(error) is expected


def test_the_cause_is_found_through_chained_exceptions():
    try:
        try:
            raise WorkerGroupStartupTimeoutError(2)
        except WorkerGroupStartupTimeoutError as inner:
            raise RuntimeError("fit failed") from inner
    except RuntimeError as outer:
        assert _scheduling_failure(outer)

"""Schedules at their key steps: 0, mid-warm-up, end of warm-up, midway, the end, after the end."""

import math

import pytest

from pipeline.gan.schedules import schedule_value


def value(kind, step, *, start=1.0, end=0.2, steps=100, warmup=10):
    return schedule_value(kind, start=start, end=end, steps=steps, warmup=warmup, step=step)


def test_warmup_ramps_linearly_from_zero_to_start_for_every_kind():
    for kind in ("constant", "linear", "cosine"):
        assert value(kind, 0) == 0.0
        assert value(kind, 5) == pytest.approx(0.5)
        assert value(kind, 10) == pytest.approx(1.0)


def test_constant_is_start_and_ignores_end():
    assert schedule_value("constant", start=3.0, end=None, steps=1, warmup=0, step=0) == 3.0
    assert value("constant", 10_000) == 1.0


def test_linear():
    assert value("linear", 10 + 25) == pytest.approx(1.0 - 0.8 * 0.25)  # 0.8
    assert value("linear", 10 + 50) == pytest.approx(0.6)
    assert value("linear", 110) == pytest.approx(0.2)
    assert value("linear", 10_000) == pytest.approx(0.2)  # clamped after the end


def test_cosine():
    assert value("cosine", 10 + 25) == pytest.approx(0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert value("cosine", 10 + 50) == pytest.approx(0.6)  # half way in value at half way in time
    assert value("cosine", 110) == pytest.approx(0.2)
    assert value("cosine", 10_000) == pytest.approx(0.2)


def test_schedules_may_rise():
    assert value("linear", 60, start=0.0, end=2.0, warmup=0) == pytest.approx(1.2)


def test_bad_arguments():
    with pytest.raises(ValueError):
        value("exponential", 0)
    with pytest.raises(ValueError):
        value("linear", 0, steps=0)
    with pytest.raises(ValueError):
        schedule_value("linear", start=1.0, end=None, steps=10, warmup=0, step=3)

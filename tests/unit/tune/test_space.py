"""Search-space addressing (a regularizer by its kind) and drawing trials: no Ray, no servers."""
import math

import pytest
import yaml

from pipeline.spec import parse_job
from pipeline.tune.space import AddressError, apply_assignments, draw_trials, probes, set_field
from pipeline.tune.spec import Domain

BASE = yaml.safe_load("""
name: j
data: {root: /tmp/nowhere, resolution: 32}
regularization:
  - {kind: l2, weight: 1.0e-4, target: discriminator}
  - {kind: r1, gamma: 0.2, every: 4}
  - {kind: ema, beta: 0.995}
train: {steps: 10}
""")


def test_regularizer_addressed_by_kind_and_the_rest_by_section():
    raw = apply_assignments(BASE, {"regularization.r1.gamma": 0.05, "regularization.ema.beta": 0.99, "optim.d.lr": 1e-3,
                                   "loss.kind": "hinge"})
    job = parse_job(raw)
    r1 = next(r for r in job.regularization if r.kind == "r1")
    assert r1.weight == 0.05 and r1.every == 4  # the entry's other fields stay
    assert next(r for r in job.regularization if r.kind == "ema").beta == 0.99
    assert job.optim.d.lr == 1e-3 and job.loss.kind == "hinge"
    assert BASE["regularization"][1]["gamma"] == 0.2, "the base mapping is not modified"


def test_setting_one_alias_replaces_the_other():
    # R1's strength is `weight` or `gamma`: pydantic reads `weight` first, so a stale one would win.
    raw = apply_assignments(BASE, {"regularization.r1.weight": 3.0})
    assert raw["regularization"][1] == {"kind": "r1", "weight": 3.0, "every": 4}
    assert parse_job(raw).regularization[1].weight == 3.0


def test_a_kind_the_job_lacks_is_added():
    job = parse_job(apply_assignments(BASE, {"regularization.r2.gamma": 0.5}))
    assert [r.kind for r in job.regularization] == ["l2", "r1", "ema", "r2"]
    assert job.regularization[-1].weight == 0.5


def test_two_entries_of_a_kind_need_a_target():
    raw = apply_assignments(BASE, {"regularization.l2:generator.weight": 1e-5})  # adds l2 on G
    assert len([e for e in raw["regularization"] if e["kind"] == "l2"]) == 2
    with pytest.raises(AddressError, match="2 `l2` entries.*l2:discriminator"):
        set_field(raw, "regularization.l2.weight", 1.0)
    set_field(raw, "regularization.l2:discriminator.weight", 2e-4)
    assert raw["regularization"][0]["weight"] == 2e-4


@pytest.mark.parametrize("path, message", [
    ("regularization.dropout.rate", "unknown regularizer kind 'dropout'; allowed: .*r1"),
    ("regularization.7.weight", "3 regularization entries, no \\[7\\]"),
    ("regularization.weight", "is a list; name an entry by kind"),
    ("train.steps.max", "`train.steps` is a value"),
])
def test_bad_paths_are_named(path, message):
    with pytest.raises(AddressError, match=message):
        apply_assignments(BASE, {path: 1})


def test_draws_are_seeded_and_crossed_with_the_grid():
    space = {"regularization.r1.gamma": Domain(loguniform=(0.01, 1.0)), "regularization.ema.beta": Domain(grid=[0.99, 0.999]),
             "loss.kind": Domain(choice=["hinge", "nonsaturating"])}
    trials = draw_trials(space, trials=3, seed=7)
    assert len(trials) == 6 and draw_trials(space, trials=3, seed=7) == trials and draw_trials(space, 3, seed=8) != trials
    assert [t["regularization.ema.beta"] for t in trials] == [0.99, 0.999] * 3
    gammas = [t["regularization.r1.gamma"] for t in trials]
    assert gammas[0::2] == gammas[1::2], "one draw per sample, shared by its grid combinations"
    assert all(0.01 <= g <= 1.0 for g in gammas) and len(set(gammas)) == 3
    assert {t["loss.kind"] for t in trials} <= {"hinge", "nonsaturating"}


def test_probes_cover_both_ends_the_middle_and_every_choice():
    space = {"a": Domain(uniform=(-1.0, 3.0)), "b": Domain(loguniform=(0.01, 1.0)), "c": Domain(choice=["x", "y"])}
    got = probes(space)
    assert {p["a"] for p in got} == {-1.0, 1.0, 3.0}
    assert {round(p["b"], 9) for p in got} == {0.01, 0.1, 1.0} and math.isclose(sorted({p["b"] for p in got})[1], 0.1)
    assert {p["c"] for p in got} == {"x", "y"} and len(got) == 18  # all combinations when there are few

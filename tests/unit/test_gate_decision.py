"""The promotion gate's decision from scores alone (no registry, no server), and its argument checks."""
import math

import pytest

from pipeline.tracking.gate import Decision, GateError, decide, promote, relative_improvement


def scores(cand, champ=None, *, metric="fd", mem=None):
    out = {"2": {metric: cand}}
    if mem is not None:
        out["2"]["memorization"] = mem
    if champ is not None:
        out["1"] = {metric: champ}
    return out


def test_relative_improvement_is_relative_and_signed():
    assert relative_improvement(10.0, 9.0) == pytest.approx(0.10)
    assert relative_improvement(10.0, 11.0) == pytest.approx(-0.10)
    assert relative_improvement(-0.002, -0.003) == pytest.approx(0.5)  # KID can dip below 0
    assert relative_improvement(0.0, -1e-4) == math.inf and relative_improvement(0.0, 0.0) == 0.0


def test_promotes_only_when_better_by_the_margin():
    outcome, reason, gain = decide(candidate="2", champion="1", metric="fd", scores=scores(9.0, 10.0), min_improvement=0.05)
    assert (outcome, round(gain, 3)) == ("promoted", 0.1) and "fd 9 vs 10" in reason
    outcome, reason, gain = decide(candidate="2", champion="1", metric="fd", scores=scores(9.7, 10.0), min_improvement=0.05)
    assert outcome == "kept" and "less than the required 5.0%" in reason
    # a zero margin still needs a strictly better score
    assert decide(candidate="2", champion="1", metric="fd", scores=scores(10.0, 10.0), min_improvement=0.0)[0] == "kept"
    assert decide(candidate="2", champion="1", metric="fd", scores=scores(11.0, 10.0), min_improvement=0.0)[0] == "kept"


def test_decides_on_the_chosen_metric():
    s = {"2": {"fd": 20.0, "kid": 0.010}, "1": {"fd": 10.0, "kid": 0.020}}
    assert decide(candidate="2", champion="1", metric="fd", scores=s, min_improvement=0.05)[0] == "kept"
    assert decide(candidate="2", champion="1", metric="kid", scores=s, min_improvement=0.05)[0] == "promoted"


def test_first_version_and_non_finite_scores():
    assert decide(candidate="2", champion=None, metric="fd", scores=scores(50.0), min_improvement=0.05)[0] == "first"
    assert decide(candidate="2", champion="1", metric="fd", scores=scores(math.nan, 10.0), min_improvement=0.05)[0] == "kept"
    assert decide(candidate="2", champion="1", metric="fd", scores=scores(10.0, math.inf), min_improvement=0.05)[0] == "promoted"


def test_memorization_bound_refuses_even_a_better_or_first_candidate():
    outcome, reason, _ = decide(candidate="2", champion="1", metric="fd", scores=scores(1.0, 10.0, mem=0.9),
                                min_improvement=0.05, max_memorization=0.5)
    assert outcome == "kept" and "memorization 0.900 is above the bound 0.5" in reason
    assert decide(candidate="2", champion=None, metric="fd", scores=scores(1.0, mem=0.9), min_improvement=0.05, max_memorization=0.5)[0] == "kept"
    assert decide(candidate="2", champion="1", metric="fd", scores=scores(1.0, 10.0, mem=0.1),
                  min_improvement=0.05, max_memorization=0.5)[0] == "promoted"


def test_exit_codes():
    assert Decision("promoted", "2", "1", "", "fd").exit_code == 0
    assert Decision("first", "2", None, "", "fd").exit_code == 0
    assert Decision("kept", "2", "1", "", "fd").exit_code == 3


@pytest.mark.parametrize("kwargs, field", [
    ({"metric": "is"}, "metric"), ({"min_improvement": 1.5}, "min_improvement"),
    ({"min_improvement": -0.1}, "min_improvement"), ({"max_memorization": 2.0}, "max_memorization"),
])
def test_bad_arguments_are_refused_before_any_server_is_contacted(kwargs, field):
    # Port 9 (discard) on localhost: nothing listens; the argument check must come first.
    with pytest.raises(GateError, match=field):
        promote("m", "1", tracking_uri="http://127.0.0.1:9", **kwargs)


def test_an_unreachable_tracking_server_is_a_clear_gate_error():
    with pytest.raises(GateError, match="unreachable"):
        promote("m", "1", tracking_uri="http://127.0.0.1:9")


def test_a_jobs_gate_settings_are_validated_at_the_boundary():
    from pipeline.spec import SpecError, load_job
    from tests.support import REPO

    spec = load_job(REPO / "jobs/quickstart.yaml", ["tracking.promote={metric: kid, min_improvement: 0.1}"])
    assert spec.tracking.promote.metric == "kid" and spec.tracking.promote.max_memorization is None
    assert load_job(REPO / "jobs/quickstart.yaml").tracking.promote is None  # default: no gate, as before
    with pytest.raises(SpecError, match=r"tracking\.promote\.metric.*'fd' or 'kid'"):
        load_job(REPO / "jobs/quickstart.yaml", ["tracking.promote={metric: is}"])
    with pytest.raises(SpecError, match=r"tracking\.patience_s"):
        load_job(REPO / "jobs/quickstart.yaml", ["tracking.patience_s=0"])


def test_registry_verbs_have_help_and_promote_documents_its_exit_codes():
    from typer.testing import CliRunner

    from pipeline.cli import app

    runner = CliRunner()
    for verb in ("promote", "rollback", "models", "register"):
        res = runner.invoke(app, [verb, "--help"], terminal_width=200)
        assert res.exit_code == 0 and "Usage" in res.output, res.output
    out = " ".join(runner.invoke(app, ["promote", "--help"], terminal_width=200).output.split())
    assert "Exit codes: 0 promoted (or first champion) | 3 kept the champion | 2 could not decide" in out


def test_the_contract_includes_the_classes():
    """A conditional champion is never replaced by an unconditional candidate or one with other
    classes: a consumer asking for class 3 must keep getting class 3."""
    from types import SimpleNamespace

    from pipeline.tracking.gate import _check_contract

    def version(v, **tags):
        return SimpleNamespace(version=v, tags={"z_dim": "64", "resolution": "32", **tags})

    cifar = {"num_classes": "10", "class_names": '["airplane", "automobile"]'}
    _check_contract(version("2", **cifar), version("1", **cifar))
    _check_contract(version("2"), version("1"))  # both unconditional
    with pytest.raises(GateError, match="num_classes none, champion version 1 has num_classes 10"):
        _check_contract(version("2"), version("1", **cifar))
    with pytest.raises(GateError, match="class_names"):
        _check_contract(version("2", **{**cifar, "class_names": '["cat", "dog"]'}), version("1", **cifar))


def test_the_champion_itself_is_kept_before_any_evaluator_is_built(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    client.create_registered_model("g")
    client.create_model_version("g", source=str(tmp_path / "model"))  # no job.yaml, no data: nothing to score
    client.set_registered_model_alias("g", "champion", "1")
    d = promote("g", "1", tracking_uri=uri)  # scoring would need the data: GateError "pass --data"
    assert (d.outcome, d.champion, d.reason) == ("kept", "1", "version 1 is the champion already")

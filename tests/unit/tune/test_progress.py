"""The search's progress display (a Tune callback) in plain-line mode, and the results helpers."""
from types import SimpleNamespace

from pipeline.tune.progress import SearchProgress, describe_state
from pipeline.tune.winner import TrialRow, best_of, results_csv


def _trial(trial_id: str, status: str, lr: float):
    return SimpleNamespace(trial_id=trial_id, status=status, config={"params": {"optim.g.lr": lr}})


def test_plain_lines_name_trial_values_step_metric_and_state(capsys):
    p = SearchProgress(params=["optim.g.lr"], metric_key="eval/fd", steps=18, plain=True)
    a, b = _trial("t_00000", "RUNNING", 2e-4), _trial("t_00001", "RUNNING", 0.5)
    p.on_trial_start(0, [a, b], a)
    p.on_trial_result(0, [a, b], a, {"step": 6, "eval/fd": 70.25})
    p.on_trial_result(0, [a, b], b, {"step": 6, "eval/fd": 107.1})
    b.status = "TERMINATED"
    p.on_trial_complete(0, [a, b], b)  # stopped at step 6 of 18
    a.status = "TERMINATED"
    p.on_trial_result(0, [a, b], a, {"step": 18, "eval/fd": 88.7})
    p.on_trial_complete(0, [a, b], a)
    lines = capsys.readouterr().out.splitlines()
    assert "trial t_00000 started" in lines[0] and "optim.g.lr=0.0002" in lines[0]
    assert "trial t_00000 running  step 6/18  eval/fd 70.25" in lines[1]
    assert "trial t_00001 stopped early  step 6/18  eval/fd 107.1  optim.g.lr=0.5" in lines[3]
    assert "trial t_00000 done  step 18/18  eval/fd 88.7" in lines[-1]


def test_states_and_the_best_of_the_finished_trials():
    assert describe_state("TERMINATED", 6, 18) == "stopped early" and describe_state("TERMINATED", 18, 18) == "done"
    assert describe_state("ERROR", None, 18) == "error" and describe_state("PENDING", None, 18) == "pending"
    rows = [
        TrialRow("a", {"x": 1}, "done", 18, 80.0, "r1", "/c/a", {}),
        TrialRow("b", {"x": 2}, "stopped early", 6, 60.0, "r2", "/c/b", {}),  # lower, but only partly trained
        TrialRow("c", {"x": 3}, "done", 18, 70.0, "r3", "/c/c", {}),
        TrialRow("d", {"x": 4}, "error", None, None, "r4", None, {}),
    ]
    assert best_of(rows).trial_id == "c"
    table = results_csv(rows, ["x"], "fd").splitlines()
    assert table[0] == "trial_id,x,state,last_step,fd,run_id" and table[2] == "b,2,stopped early,6,60.0,r2"
    assert best_of([rows[1], rows[3]]) is None


def test_terminal_table_lists_every_trial():
    from rich.console import Console

    p = SearchProgress(params=["optim.g.lr"], metric_key="eval/fd", steps=18, plain=False)
    a, b = _trial("t_00000", "RUNNING", 2e-4), _trial("t_00001", "PENDING", 0.5)
    p.on_trial_result(0, [a, b], a, {"step": 12, "eval/fd": 80.5})
    p.on_experiment_end([a, b])
    console = Console(record=True, width=120)
    console.print(p._table([a, b]))
    text = console.export_text()
    assert "optim.g.lr" in text and "eval/fd" in text
    assert "t_00000" in text and "12/18" in text and "80.5" in text and "running" in text
    assert "t_00001" in text and "pending" in text

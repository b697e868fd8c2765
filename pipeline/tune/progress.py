"""What the driver shows and records while trials run: a live table on a terminal (one plain line per
event elsewhere: Ray job logs, CI), and the trials' child runs closed with their outcome.

Both are Tune callbacks, so they run in the driver's loop. They hold settings only until the search
starts (Tune pickles them with the experiment, and a resumed search gets them back).
"""
from __future__ import annotations

import sys
import time

from ray.tune import Callback

# Tune's trial states, as people read them.
STATE = {"PENDING": "pending", "RUNNING": "running", "PAUSED": "paused", "TERMINATED": "done", "ERROR": "error"}


def describe_state(status: str, last_step: int | None, steps: int) -> str:
    state = STATE.get(status, status.lower())
    if status == "TERMINATED" and last_step is not None and last_step < steps:
        return "stopped early"
    return state


class SearchProgress(Callback):
    """Trial, parameters, last step and metric, state. `plain`: None picks by whether stdout is a TTY."""

    def __init__(self, *, params: list[str], metric_key: str, steps: int, enabled: bool = True, plain: bool | None = None):
        self.params, self.metric_key, self.steps = params, metric_key, steps
        self.enabled, self.plain = enabled, plain
        self._rows: dict[str, dict] = {}
        self._live = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_live"], state["_rows"] = None, {}
        return state

    # -- Tune's hooks ---------------------------------------------------------------------------------
    def on_trial_start(self, iteration, trials, trial, **info):
        self._update(trials, trial, "started")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        row = self._row(trial)
        row["step"], row["metric"] = result.get("step"), result.get(self.metric_key)
        self._update(trials, trial, None)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._update(trials, trial, "ended")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._update(trials, trial, "failed")

    def on_experiment_end(self, trials, **info):
        if self._live is not None:
            self._live.update(self._table(trials))
            self._live.stop()
            self._live = None

    # -- display --------------------------------------------------------------------------------------
    def _row(self, trial) -> dict:
        return self._rows.setdefault(trial.trial_id, {"step": None, "metric": None})

    def _update(self, trials, trial, event: str | None) -> None:
        if not self.enabled:
            return
        if self.plain is None:
            self.plain = not sys.stdout.isatty()
        row = self._row(trial)
        if event in ("ended", "failed"):  # Tune sets TERMINATED or ERROR only after its callbacks ran
            row["final"] = describe_state("TERMINATED" if event == "ended" else "ERROR", row["step"], self.steps)
        if self.plain:
            if event is None and row["metric"] is None:
                return
            metric = "" if row["metric"] is None else f"  {self.metric_key} {row['metric']:.4g}"
            step = "" if row["step"] is None else f"  step {row['step']}/{self.steps}"
            state = {None: "running", "started": "started"}.get(event) or row["final"]
            print(f"{time.strftime('%H:%M:%S')} trial {trial.trial_id} {state}{step}{metric}  {_values(trial, self.params)}", flush=True)
            return
        if self._live is None:
            from rich.live import Live

            self._live = Live(self._table(trials), refresh_per_second=2, transient=False)
            self._live.start()
        self._live.update(self._table(trials))

    def _table(self, trials):
        from rich.table import Table

        table = Table("trial", *self.params, "step", self.metric_key, "state", box=None, title="search")
        for t in trials:
            row = self._rows.get(t.trial_id, {"step": None, "metric": None})
            params = t.config.get("params", {})
            table.add_row(
                t.trial_id, *[_fmt(params.get(p)) for p in self.params],
                "" if row["step"] is None else f"{row['step']}/{self.steps}",
                "" if row["metric"] is None else f"{row['metric']:.4g}",
                row.get("final") or describe_state(t.status, row["step"], self.steps),
            )
        return table


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _values(trial, params: list[str]) -> str:
    values = trial.config.get("params", {})
    return " ".join(f"{p}={_fmt(values.get(p))}" for p in params)


class TrialRunCloser(Callback):
    """Ends each trial's child run when Tune ends the trial: a trial the scheduler stops loses its
    process, so it cannot close its own run. FINISHED for done and stopped-early trials (tagged
    stopped_early), FAILED for errors."""

    def __init__(self, *, tracking_uri: str, experiment: str, search_id: str, steps: int):
        self.tracking_uri, self.experiment, self.search_id, self.steps = tracking_uri, experiment, search_id, steps

    def on_trial_complete(self, iteration, trials, trial, **info):
        from pipeline.tune.tracking import close_trial

        step = (trial.last_result or {}).get("step")
        close_trial(tracking_uri=self.tracking_uri, experiment=self.experiment, search_id=self.search_id,
                    trial_id=trial.trial_id, status="FINISHED", stopped_early=step is not None and step < self.steps)

    def on_trial_error(self, iteration, trials, trial, **info):
        from pipeline.tune.tracking import close_trial

        close_trial(tracking_uri=self.tracking_uri, experiment=self.experiment, search_id=self.search_id,
                    trial_id=trial.trial_id, status="FAILED")

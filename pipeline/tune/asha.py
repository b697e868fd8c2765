"""ASHA whose judgements survive a killed driver.

Tune saves trials and the searcher when it checkpoints an experiment, but not the scheduler: after
`Tuner.restore`, ASHA would start with empty rungs, and the first trial to reach a rung would pass
it unjudged however bad it is. This subclass writes the scores recorded at each rung (trial id →
score, a few bytes per eval) and the trials it stopped next to the experiment after every decision,
and reads them back the first time Tune hands it a trial after a restore. A trial stopped in the
seconds before the driver died (Tune still saved it as running) is stopped again at its next report.
"""
from __future__ import annotations

import json
import logging

from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

log = logging.getLogger(__name__)


class ResumableASHA(AsyncHyperBandScheduler):
    def __init__(self, *, state_path: str, filesystem, **kwargs):
        super().__init__(**kwargs)
        self._state_path, self._fs = state_path, filesystem
        self._loaded = False
        self._stopped: set[str] = set()

    # -- persistence --------------------------------------------------------------------------------
    def _rungs_as_json(self) -> list[list[list]]:
        return [[[milestone, recorded] for milestone, recorded in b._rungs] for b in self._brackets]

    def _save(self) -> None:
        data = json.dumps({"rungs": self._rungs_as_json(), "num_stopped": self._num_stopped,
                           "stopped": sorted(self._stopped)}).encode()
        try:
            with self._fs.open_output_stream(self._state_path) as f:
                f.write(data)
        except OSError as e:  # the search goes on; only a later resume would judge afresh
            log.warning("could not save the scheduler's rungs to %s: %s", self._state_path, e)

    def _load_once(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        try:
            with self._fs.open_input_stream(self._state_path) as f:
                saved = json.loads(f.read().decode())
        except (FileNotFoundError, OSError, ValueError):
            return  # a new search
        for bracket, rungs in zip(self._brackets, saved["rungs"]):
            by_milestone = {float(m): rec for m, rec in rungs}
            for milestone, recorded in bracket._rungs:
                recorded.update(by_milestone.get(float(milestone), {}))
        self._num_stopped = saved.get("num_stopped", 0)
        self._stopped = set(saved.get("stopped", []))

    # -- Tune's hooks ---------------------------------------------------------------------------------
    def on_trial_add(self, tune_controller, trial):
        self._load_once()
        super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result):
        self._load_once()
        if trial.trial_id in self._stopped:  # decided before a restart: the decision stands
            return TrialScheduler.STOP
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP and result.get(self._time_attr, 0) < self._max_t:
            self._stopped.add(trial.trial_id)
        self._save()
        return action

    def on_trial_complete(self, tune_controller, trial, result):
        if trial.trial_id not in self._trial_info:  # a trial restored as finished: nothing to judge
            return
        super().on_trial_complete(tune_controller, trial, result)
        self._save()

    def on_trial_remove(self, tune_controller, trial):
        self._trial_info.pop(trial.trial_id, None)

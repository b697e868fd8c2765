"""Schedule files: validation with named fields, cron times in the schedule's zone, idempotency keys."""
import datetime as dt
from pathlib import Path

import pytest
import yaml

from pipeline.ops.schedule import ScheduleSpec, last_fire, load_schedule, next_fire, submission_id_for
from pipeline.spec import SpecError

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "jobs/schedules/digits-nightly.yaml"


def _write(tmp_path, **changes):
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw.update(changes)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_example_schedule_loads_and_its_job_exists():
    spec = load_schedule(EXAMPLE)
    assert spec.name == "digits-nightly" and spec.trigger == "new-data" and spec.promotion.policy == "gate"
    assert (REPO / spec.job).is_file()
    assert spec.overrides()[-1] == f"data.root={spec.data}"


@pytest.mark.parametrize("field,value,expect", [
    ("cron", "61 * * * *", "cron: not a valid cron expression"),
    ("timezone", "Mars/Olympus", "timezone: unknown time zone"),
    ("trigger", "sometimes", "trigger: Input should be 'new-data' or 'always'"),
    ("max_in_flight", 0, "max_in_flight: Input should be greater than or equal to 1"),
    ("promotion", {"policy": "vote"}, "promotion.policy: Input should be 'gate' or 'manual'"),
    ("surprise", 1, "surprise: Extra inputs are not permitted"),
])
def test_bad_schedule_names_the_field_and_what_is_allowed(tmp_path, field, value, expect):
    with pytest.raises(SpecError) as e:
        load_schedule(_write(tmp_path, **{field: value}))
    assert expect in str(e.value)


def test_cron_times_follow_the_schedules_time_zone():
    spec = load_schedule(EXAMPLE)  # 02:00 Europe/Berlin
    now = dt.datetime(2026, 1, 15, 12, 0, tzinfo=dt.timezone.utc)  # 13:00 in Berlin (CET, +1)
    assert last_fire(spec, now) == dt.datetime(2026, 1, 15, 1, 0, tzinfo=dt.timezone.utc)
    assert next_fire(spec, now) == dt.datetime(2026, 1, 16, 1, 0, tzinfo=dt.timezone.utc)


def test_submission_id_is_a_function_of_schedule_and_snapshot():
    spec = load_schedule(EXAMPLE)
    a, b = "a" * 64, "b" * 64
    assert submission_id_for(spec, a) == submission_id_for(spec, a) == "digits-nightly-" + "a" * 16
    assert submission_id_for(spec, b) != submission_id_for(spec, a)
    assert submission_id_for(spec, a, attempt=2) == "digits-nightly-" + "a" * 16 + "-r2"
    always = ScheduleSpec(**{**spec.model_dump(), "trigger": "always"})
    t1 = dt.datetime(2026, 1, 15, 1, 0, tzinfo=dt.timezone.utc)
    t2 = dt.datetime(2026, 1, 16, 1, 0, tzinfo=dt.timezone.utc)
    assert submission_id_for(always, a, fire=t1) != submission_id_for(always, a, fire=t2)

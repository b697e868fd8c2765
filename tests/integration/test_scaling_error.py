"""A worker group the cluster cannot hold fails with a clear error instead of waiting forever."""
import pytest
from mlflow.tracking import MlflowClient

from pipeline.train.launch import SchedulingError, train
from tests.support import short_job

pytestmark = pytest.mark.integration


def test_more_workers_than_cpus_is_a_clear_error(tmp_path, ray_local):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = short_job(tmp_path, steps=4, batch=6, tracking_uri=uri, registered_model="gan-none",
                     overrides=["scaling.num_workers=3"])  # 3 × 1 CPU on a 2-CPU local Ray
    with pytest.raises(SchedulingError) as e:
        train(spec, show_progress=False)
    msg = str(e.value)
    assert "3 workers" in msg and "'CPU': 3" in msg and "'CPU': 2" in msg and "scaling.num_workers" in msg
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("quickstart").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]  # the run is closed, not left RUNNING

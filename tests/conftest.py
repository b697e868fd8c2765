import os

import pytest
import torch

# 2 cores here: one torch thread per process keeps tests from fighting each other and Ray workers.
torch.set_num_threads(1)
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def repo_root() -> str:
    return REPO


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray instance for the session (2 CPUs: one per worker); stopped at the end."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 1024**2)
    yield ray
    ray.shutdown()

import os

import pytest
import torch

# 2 cores here: one torch thread per process keeps tests from fighting each other and Ray workers.
torch.set_num_threads(1)
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


WORKER_GROUP_START_TIMEOUT_S = 45

_FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    # keep a developer's real ~/.aws out of the tests
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


@pytest.fixture(scope="session")
def fake_aws_env():
    saved = {k: os.environ.get(k) for k in [*_FAKE_AWS, "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"]}
    os.environ.update(_FAKE_AWS)
    os.environ.pop("AWS_ENDPOINT_URL_S3", None)
    os.environ.pop("AWS_PROFILE", None)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def ray_local(fake_aws_env):
    """A real local Ray instance for the session (2 CPUs: one per worker); stopped at the end.
    Started after fake_aws_env so its workers inherit test credentials for the local S3 endpoint."""
    import ray

    # The worker-group start timeout reaches the Train controller through the job's runtime env, as
    # ganpipe's own ray.init sets it; 45 s is ample for 2 local workers, short for the scaling test.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 1024**2,
             runtime_env={"env_vars": {"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": str(WORKER_GROUP_START_TIMEOUT_S)}})
    yield ray
    ray.shutdown()

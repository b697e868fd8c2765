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

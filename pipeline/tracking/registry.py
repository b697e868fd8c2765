"""The registered generator: logged pickle-free (torch.export "pt2"), registered, aliased.

Contract kept by every version: `mlflow.pytorch.load_model("models:/NAME@champion")` gives a module
mapping float32 z (N, z_dim) to float32 images (N, 3, H, W) in [-1, 1] on CPU, with no code of ours
needed by the caller (the exported graph carries the architecture and weights).

A class-conditional generator takes one float32 tensor (N, z_dim + 1): z, then the class index as a
float in the last column (`torch.cat([z, labels[:, None].float()], 1)`). One tensor, not two, because
MLflow's PyTorch pyfunc (what `mlflow models serve` runs) hands the model a single array; so a request
to the server names each row's class in that column, and a class out of range fails the request
(HTTP 400: the embedding refuses the index) without taking the server down. The model's metadata
(`mlflow.models.get_model_info(uri).metadata`) and the version's tags carry `num_classes` and
`class_names` (label order), the signature the input's width.
"""
from __future__ import annotations

import logging

import mlflow
import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from torch import nn

from pipeline.tracking.names import CHAMPION, RUN_ID

log = logging.getLogger(__name__)


class ClassConditionedInput(nn.Module):
    """(N, z_dim + 1): z and the class index in the last column → G(z, class): the exported form of a
    conditional generator (see the module docstring for why one tensor)."""

    def __init__(self, generator: nn.Module, z_dim: int):
        super().__init__()
        self.generator, self.z_dim = generator, z_dim

    def forward(self, z_and_class: torch.Tensor) -> torch.Tensor:
        return self.generator(z_and_class[:, : self.z_dim], z_and_class[:, self.z_dim].long())


def log_generator(generator: nn.Module, *, z_dim: int, run_id: str, tracking_uri: str,
                  class_names: list[str] | None = None) -> str:
    """Export G (eval mode, CPU, float32) into the run; returns the logged model's URI.
    `class_names`: G is class-conditional, G(z, labels), with these classes in label order."""
    generator = generator.to("cpu").float().eval()
    # Batch 2 (not 1): torch.export keeps a size-1 dim static, and the batch dim must stay dynamic.
    example = np.random.default_rng(0).standard_normal((2, z_dim)).astype(np.float32)
    metadata = {"z_dim": z_dim}
    if class_names:
        generator = ClassConditionedInput(generator, z_dim).eval()
        example = np.concatenate([example, np.array([[0.0], [len(class_names) - 1.0]], dtype=np.float32)], axis=1)
        metadata.update({"num_classes": len(class_names), "class_names": list(class_names),
                         "input": f"z ({z_dim} columns) then the class index (0..{len(class_names) - 1})"})
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_id=run_id), torch.no_grad():
        info = mlflow.pytorch.log_model(
            generator,
            name="generator",
            input_example=example,
            serialization_format="pt2",
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            metadata=metadata,
        )
    return info.model_uri


def logged_generator(run_id: str, *, tracking_uri: str) -> str | None:
    """The URI of a generator this run already logged (a retry, or `ganpipe register` after an
    outage, must not log a second copy), or None."""
    client = MlflowClient(tracking_uri=tracking_uri)
    run = client.get_run(run_id)
    found = client.search_logged_models(
        [run.info.experiment_id],
        filter_string=f"source_run_id = '{run_id}' AND name = 'generator' AND status = 'READY'",
        max_results=1,
    )
    return f"models:/{found[0].model_id}" if found else None


def registered_version(name: str, run_id: str, *, tracking_uri: str):
    """The version this run registered under `name`, or None."""
    return _already_registered(MlflowClient(tracking_uri=tracking_uri), name, run_id, None)


def register(model_uri: str, *, name: str, tags: dict[str, str], tracking_uri: str, alias_first: bool = True) -> tuple[str, bool]:
    """Register a new version with `tags`; alias it `champion` when there is none yet (unless
    `alias_first` is False: the job then sends even its first version through the gate).

    Returns (version, became_champion). Promotion over an existing champion is the gate's job.
    """
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    mv = _already_registered(client, name, tags.get(RUN_ID), model_uri)  # a retry after a partial success
    if mv is None:
        mv = mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in tags.items()})
    if not alias_first:
        return mv.version, False
    try:
        client.get_model_version_by_alias(name, CHAMPION)
        return mv.version, False
    except MlflowException:
        client.set_registered_model_alias(name, CHAMPION, mv.version)
        return mv.version, True


def _already_registered(client: MlflowClient, name: str, run_id: str | None, model_uri: str | None):
    if run_id is None:
        return None
    try:
        versions = client.search_model_versions(f"name='{name}'")
    except MlflowException:  # no such registered model yet
        return None
    return next((v for v in versions if v.tags.get(RUN_ID) == run_id and model_uri in (None, v.source)), None)

"""make_batches: a DataSpec and a rank -> an endless, resumable stream of equal-size batches.

    stream = make_batches(spec, rank=r, world_size=n, batch_size=b, seed=s, position=saved)
    for images, labels in stream:      # images float32 (B,3,R,R) in [-1, 1]; labels int64 (B,)
        ...
        checkpoint["data"] = stream.state()   # JSON-serialisable; pass back as position= to resume

Both modes are endless, so every rank gets a batch at every step and DDP never waits on a rank
that ran dry. `heldout=HeldOut(...)` (data/split.py) leaves out the samples an evaluation holds
out. `epoch` mode additionally reads every sample once per epoch (see epoch_plan.py) and
resumes mid-epoch exactly; `resampled` mode draws shards with replacement and resumes with a fresh
seed instead of replaying.
"""

from __future__ import annotations

import logging
from typing import Iterator

import torch
from torch.utils.data import DataLoader

from pipeline.data import epoch_plan as plan
from pipeline.data.config import DataSpec
from pipeline.data.errors import DataError
from pipeline.data.decode import decode_config
from pipeline.data.manifest import load_manifest, manifest_resolution, member_problems, selected_shards, shard_url
from pipeline.data.split import HeldOut
from pipeline.data.worker_stream import EpochDataset, ResampledDataset, StreamConfig

log = logging.getLogger(__name__)


def make_batches(
    spec: DataSpec,
    *,
    rank: int,
    world_size: int,
    batch_size: int,
    seed: int,
    position: dict | None = None,
    with_keys: bool = False,
    mp_context: str | None = None,
    heldout: HeldOut | None = None,
) -> "BatchStream":
    """The batch stream of one rank. `with_keys=True` yields (images, labels, keys) for tests and
    verification; `mp_context` ("fork", "spawn", "forkserver") picks how loader workers start.
    `heldout`: the evaluation's held-out split, never trained on. Resampled mode draws the other
    samples only; epoch mode fills a held-out sample's slot with another sample of its batch
    (worker_stream.EpochDataset). Either way stats()["heldout_skipped"] counts them."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world_size {world_size}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    manifest, snapshot = load_manifest(spec.root, endpoint_url=spec.endpoint_url)
    packed_side = manifest_resolution(manifest)  # None for indexed shards: the transform fits any size
    if packed_side is not None and packed_side != spec.resolution:
        raise DataError(f"spec resolution {spec.resolution} != manifest image size {manifest['image_size']} at {spec.root}")
    if problems := member_problems(spec, manifest):
        raise DataError(f"data spec does not match the shards under {spec.root}: " + "; ".join(problems))
    shards = selected_shards(spec, manifest)
    if heldout is not None and spec.on_corrupt == "skip":
        heldout = heldout.widened(int(spec.max_corrupt_fraction * manifest["num_samples"]))
    config = StreamConfig(
        urls=[shard_url(spec.root, manifest, s) for s in shards],
        counts=[int(s["samples"]) for s in shards],
        resolution=spec.resolution,
        shuffle_buffer=spec.shuffle_buffer,
        endpoint_url=spec.endpoint_url,
        on_corrupt=spec.on_corrupt,
        max_corrupt_fraction=spec.max_corrupt_fraction,
        rank=rank,
        batch_size=batch_size,
        seed=seed,
        with_keys=with_keys,
        decode=decode_config(spec, manifest).as_dict(),
        heldout=(heldout.fraction, heldout.within) if heldout is not None else None,
    )
    return BatchStream(config, spec, world_size=world_size, snapshot=snapshot, position=position, mp_context=mp_context)


class BatchStream:
    def __init__(self, config: StreamConfig, spec: DataSpec, *, world_size: int, snapshot: str, position: dict | None, mp_context: str | None):
        self.config = config
        self.mode = spec.sampling
        self.loader_workers = spec.loader_workers
        self.mp_context = mp_context
        self.snapshot = snapshot
        self.layout = plan.Layout(world_size, max(1, spec.loader_workers), config.batch_size, spec.epoch_tail)
        self.num_samples = sum(config.counts)
        self.batches_per_epoch = plan.batches_per_rank(self.num_samples, self.layout) if self.mode == "epoch" else None
        if self.batches_per_epoch == 0:
            raise DataError(
                f"epoch mode with epoch_tail=drop: {self.num_samples} samples do not fill one batch of "
                f"{config.batch_size} on each of {world_size} ranks; use a smaller batch or epoch_tail=pad"
            )
        self._batches = 0  # batches this rank has yielded, over all epochs and resumes
        self._corrupt = 0
        self._heldout = 0  # held-out samples left out (data/split.py)
        self._upscaled = 0  # images smaller than the resize target, enlarged by the decoder
        self._epoch, self._in_epoch, self._resumes = 0, 0, 0
        if position:
            self._restore(position)

    # -- position ------------------------------------------------------------------------------
    def state(self) -> dict:
        """Where this rank stands; every rank at the same step has the same state, so the one rank 0
        checkpoints resumes all of them."""
        return {
            "mode": self.mode,
            "snapshot": self.snapshot,
            "seed": self.config.seed,
            "batches": self._batches,
            "epoch": self._epoch,
            "batches_in_epoch": self._in_epoch,
            "resumes": self._resumes,
            "layout": self.layout.as_dict(),
        }

    def stats(self) -> dict:
        return {
            "samples": self._batches * self.config.batch_size,
            "batches": self._batches,
            "corrupt_skipped": self._corrupt,
            "heldout_skipped": self._heldout,
            "upscaled": self._upscaled,
            "epoch": self._epoch if self.mode == "epoch" else (self._batches * self.config.batch_size * self.layout.world_size) // self.num_samples,
            "resumes": self._resumes,
        }

    def _restore(self, position: dict) -> None:
        if position.get("mode") != self.mode:
            raise DataError(f"checkpointed data position is for sampling={position.get('mode')!r}, the spec says {self.mode!r}")
        self._batches = int(position.get("batches", 0))
        self._resumes = int(position.get("resumes", 0)) + 1
        self._epoch = int(position.get("epoch", 0))
        self._in_epoch = int(position.get("batches_in_epoch", 0))
        if self.mode != "epoch":
            return
        same_layout = position.get("layout") == self.layout.as_dict() and position.get("seed") == self.config.seed
        if self._in_epoch and (not same_layout or position.get("snapshot") not in (None, self.snapshot)):
            # The consumed set was derived from the old layout (or data); mapping it onto a new one
            # is not exact, so end the epoch early rather than risk showing a sample twice.
            log.warning("data layout, seed or snapshot changed mid-epoch %d; resuming at the start of epoch %d", self._epoch, self._epoch + 1)
            self._epoch, self._in_epoch = self._epoch + 1, 0
        if self._in_epoch >= self.batches_per_epoch:
            self._epoch, self._in_epoch = self._epoch + 1, 0

    # -- iteration -----------------------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple]:
        while True:
            if self.mode == "epoch":
                source = self._loader(EpochDataset(self.config, self.layout, self._epoch, self._in_epoch))
            else:
                source = self._loader(ResampledDataset(self.config, self.layout.workers, self._resumes))
            try:
                yield from self._consume(source)
            except BaseException:  # an error, or the caller stopped iterating (GeneratorExit)
                _stop_workers(source)
                raise

    def _consume(self, source) -> Iterator[tuple]:
        for images, labels, keys, corrupt, upscaled, heldout in source:
            self._batches += 1
            self._corrupt += corrupt
            self._heldout += heldout
            if upscaled and not self._upscaled:
                # Once per stream, not per image: a data set of small images would drown the log.
                # The running count goes on in stats()["upscaled"] (MLflow: data/upscaled).
                log.warning(
                    "%d of the first %d images are smaller than %d px and were upscaled (blurry); counting on as data/upscaled",
                    upscaled, self._batches * self.config.batch_size, self.config.decoder().resize,
                )
            self._upscaled += upscaled
            if self.mode == "epoch":
                self._in_epoch += 1
                if self._in_epoch == self.batches_per_epoch:
                    self._epoch, self._in_epoch = self._epoch + 1, 0
            images = images.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
            yield (images, labels, keys) if self.config.with_keys else (images, labels)
            if self.mode == "epoch" and self._in_epoch == 0:
                return  # the epoch's loader is done; the next one starts with the new epoch
        if self.mode != "epoch":
            raise DataError("resampled stream ended unexpectedly")
        if self._in_epoch != 0:
            raise DataError(f"epoch {self._epoch} ended after {self._in_epoch} of {self.batches_per_epoch} batches")

    def _loader(self, dataset) -> Iterator[tuple]:
        if self.loader_workers == 0:
            return iter(dataset)
        return iter(
            DataLoader(
                dataset,
                batch_size=None,  # batches are formed inside the workers
                num_workers=self.loader_workers,
                multiprocessing_context=self.mp_context,
                worker_init_fn=_one_thread,
                prefetch_factor=4,
            )
        )


def _stop_workers(source) -> None:
    """Stop a DataLoader's workers now. After a worker raised, torch marks it unavailable and never
    sends it the stop signal, so its own shutdown waits 5 s per worker before killing them; the
    batches still in flight are unwanted either way."""
    workers = getattr(source, "_workers", None)
    if not workers:
        return
    for worker in workers:
        if worker.is_alive():
            worker.terminate()
    source._shutdown_workers()


def _one_thread(_worker_id: int) -> None:
    # Decoding is PIL per sample; torch's intra-op threads would only fight the trainer for cores.
    torch.set_num_threads(1)

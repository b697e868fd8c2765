"""What runs inside one loader worker (or in-process when loader_workers == 0): the webdataset
pipeline that turns shard URLs into collated uint8 batches for one (rank, logical worker).

Only plain data crosses into the worker (lists, ints, strings), so spawn and forkserver work.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from pipeline.data import epoch_plan as plan
from pipeline.data.decode import DecodeConfig, SampleDecoder
from pipeline.data.errors import CorruptSampleError, ShardFormatError
from pipeline.data.reader import CorruptPolicy, iter_shard
from pipeline.data.split import HeldOut


@dataclass(frozen=True)
class StreamConfig:
    urls: list[str]
    counts: list[int]  # samples per shard, from the manifest
    resolution: int
    shuffle_buffer: int
    endpoint_url: str | None
    on_corrupt: str
    max_corrupt_fraction: float
    rank: int
    batch_size: int
    seed: int
    with_keys: bool
    # DecodeConfig as a dict (plain data for spawned workers); None = packed png at `resolution`.
    decode: dict | None = None
    # split.HeldOut as (fraction, within): the samples the evaluation holds out, never trained on.
    heldout: tuple[float, int] | None = None

    def decoder(self) -> SampleDecoder:
        return SampleDecoder(self.decode or DecodeConfig(kind="packed", resolution=self.resolution))

    def held_out(self) -> HeldOut | None:
        return HeldOut(*self.heldout) if self.heldout else None

    def offsets(self) -> list[int]:
        """Position (manifest order over the selected shards) of each shard's first sample."""
        return np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(int).tolist() if self.counts else []


def collate(samples: list[tuple[np.ndarray, int, str]], corrupt: int, upscaled: int = 0, heldout: int = 0) -> tuple:
    """Stack one batch. Kept uint8 NHWC: 4x less to pickle between processes than float32; the
    main process converts. `corrupt` = samples skipped while filling this batch, `upscaled` =
    images of it smaller than the resize target, `heldout` = held-out samples left out (for stats)."""
    images = torch.from_numpy(np.stack([s[0] for s in samples]))
    labels = torch.tensor([s[1] for s in samples], dtype=torch.int64)
    return images, labels, [s[2] for s in samples], corrupt, upscaled, heldout


class _HeldOutFilter:
    """Pipeline stage of the resampled stream: {"url": ...} dicts -> raw samples (what
    reader.tar_samples does), without the held-out ones, counted in `skipped`. A sample's position is
    its shard's offset plus its index in the tar, so the filter agrees with the evaluation's split."""

    def __init__(self, config: StreamConfig):
        self.heldout, self.endpoint_url, self.skipped = config.held_out(), config.endpoint_url, 0
        offsets = config.offsets()
        self.offset = {}
        for url, offset in zip(config.urls, offsets):
            self.offset.setdefault(url, offset)

    def __call__(self, src: Iterator[dict]) -> Iterator[dict]:
        for item in src:
            url = item["url"]
            for index, raw in enumerate(iter_shard(url, endpoint_url=self.endpoint_url)):
                if self.heldout is not None and self.heldout.skips(raw["__key__"], self.offset[url] + index):
                    self.skipped += 1
                    continue
                yield raw


class ResampledDataset(IterableDataset):
    """Endless: shards drawn with replacement, seeded by (seed, rank, logical worker, resume count)
    so that a resumed run draws a fresh sequence instead of replaying the batches it already used."""

    def __init__(self, config: StreamConfig, workers: int, resumes: int):
        super().__init__()
        self.config, self.workers, self.resumes = config, workers, resumes

    def __iter__(self) -> Iterator[tuple]:
        c = self.config
        info = get_worker_info()
        worker = info.id if info is not None else 0
        seed = plan.derive_seed(c.seed, c.rank, worker, self.resumes)
        policy = CorruptPolicy(c.on_corrupt, c.max_corrupt_fraction, sum(c.counts))
        kept = _HeldOutFilter(c)
        stages = [
            wds.ResampledShards(c.urls, seed=seed, deterministic=True, worker_seed=lambda: 0),
            kept,
        ]
        if c.shuffle_buffer > 1:
            stages.append(wds.shuffle(c.shuffle_buffer, initial=c.shuffle_buffer, rng=random.Random(seed)))
        decoder = c.decoder()
        stages.append(wds.pipelinefilter(_decoded)(decoder, seed, policy))
        stages.append(wds.pipelinefilter(_batches)(c.batch_size, policy, decoder, kept))
        yield from wds.DataPipeline(*stages)


def _decoded(src: Iterator[dict], decoder: SampleDecoder, aug_seed: int, policy: CorruptPolicy) -> Iterator[tuple]:
    for raw in src:
        try:
            image, label = decoder(raw, aug_seed)
        except CorruptSampleError as exc:
            policy.handle(exc)
            continue
        yield image, label, raw["__key__"]


def _batches(src: Iterator[tuple], batch_size: int, policy: CorruptPolicy, decoder: SampleDecoder,
             kept: _HeldOutFilter) -> Iterator[tuple]:
    # Decoding is the stage right before this one and pulls one sample at a time, so the decoder's
    # counters stand exactly at this batch's end when it is full. The held-out count runs ahead by
    # up to a shuffle buffer (the filter is upstream of it); summed over batches it is exact.
    batch, reported, enlarged, held = [], 0, 0, 0
    for sample in src:
        batch.append(sample)
        if len(batch) == batch_size:
            yield collate(batch, policy.skipped - reported, decoder.upscaled - enlarged, kept.skipped - held)
            reported, enlarged, held, batch = policy.skipped, decoder.upscaled, kept.skipped, []


# Samples read and handed over together when the epoch order inside a shard is the file order.
CHUNK = 256


class EpochDataset(IterableDataset):
    """One epoch of one rank: each logical worker reads its contiguous run of the epoch plan.
    A DataLoader worker i plays logical worker (i + rotate) % W, so that after a resume at k
    consumed batches the round-robin delivery continues at the worker that was next (k % W)."""

    def __init__(self, config: StreamConfig, layout: plan.Layout, epoch: int, consumed: int):
        super().__init__()
        self.config, self.layout, self.epoch, self.consumed = config, layout, epoch, consumed

    def __iter__(self) -> Iterator[tuple]:
        c, layout = self.config, self.layout
        info = get_worker_info()
        worker = ((info.id if info is not None else 0) + self.consumed) % layout.workers
        skip = plan.delivered(self.consumed, worker, layout.workers)
        begin, end = plan.worker_range(sum(c.counts), layout, c.rank, worker, skip)
        policy = CorruptPolicy(c.on_corrupt, c.max_corrupt_fraction, sum(c.counts))
        # Random crop/flip draw from (seed, epoch, shard, key) only: a resumed epoch crops and
        # flips every sample as the uninterrupted one would have, whichever worker reads it.
        self._decoder, self._aug_seed = c.decoder(), plan.derive_seed(c.seed, self.epoch, 0xA06)
        self._heldout = c.held_out()
        batch = []
        for raw in self._raw_samples(begin, end):
            batch.append(raw)
            if len(batch) == c.batch_size:
                yield self._decode_batch(batch, policy)
                batch = []

    def _raw_samples(self, begin: int, end: int) -> Iterator[dict]:
        """Raw samples at global positions [begin, end) of the epoch sequence, in order. A sample
        the shard does not deliver (truncated tar) comes out as a stub that decodes as corrupt.
        Each carries its `__position__` in manifest order (for the held-out split)."""
        c = self.config
        offsets = c.offsets()
        # The window_permutation keeps every file index inside its window, so the positions of one
        # window need only that window's samples: read and hand over a window at a time. (Keeping a
        # whole segment before yielding its first sample held up to a shard of raw bytes: 1 GB per
        # loader worker for the usual webdataset shards of 10k 100 KB JPEGs.) Identity orders
        # (shuffle_buffer <= 1) are windowed the same way, by CHUNK samples.
        step = c.shuffle_buffer if c.shuffle_buffer > 1 else CHUNK
        for seg in plan.segments(c.counts, c.seed, self.epoch, begin, end):
            url = c.urls[seg.shard]
            order = plan.window_permutation(c.counts[seg.shard], c.shuffle_buffer, c.seed, self.epoch, seg.shard)
            shard = _safe_iter(url, c.endpoint_url, c.on_corrupt)
            samples = enumerate(shard)
            read = -1  # file index of the last sample taken from the shard
            try:
                for w_start in range(seg.start - seg.start % step, seg.stop, step):
                    wanted = order[max(seg.start, w_start) : min(seg.stop, w_start + step)]
                    needed, kept = set(int(i) for i in wanted), {}
                    last = int(wanted.max())
                    while read < last:
                        item = next(samples, None)
                        if item is None:
                            break  # a truncated shard: what it lacks becomes corrupt stubs below
                        read, raw = item
                        if read in needed:
                            kept[read] = raw
                    for index in wanted:
                        raw = kept.pop(int(index), None) or {"__url__": url, "__key__": f"#{int(index)}", "__missing__": True}
                        yield {**raw, "__position__": offsets[seg.shard] + int(index)}
            finally:
                shard.close()  # stop reading this shard now (it may have samples past the segment)

    def _decode_batch(self, raws: list[dict], policy: CorruptPolicy) -> tuple:
        # A skipped sample (corrupt, or held out for the evaluation) is replaced by a good one from
        # the same batch: every rank must keep exactly n full batches per epoch, or DDP's collectives
        # fall out of step and hang. The epoch plan counts positions, and which positions are held
        # out is known only once their keys are read, so the plan cannot leave them out in advance:
        # about `fraction` of the slots of the first `within` samples repeat another sample instead.
        # A batch with nothing but held-out (and corrupt) samples, a chance of fraction^B for B per
        # rank (1e-8 at B = 8), is trained on as it is: deterministic, so a resume stays exact.
        good, bad, held, upscaled = [], 0, [], self._decoder.upscaled
        for raw in raws:
            if not raw.get("__missing__") and self._heldout is not None and self._heldout.skips(raw["__key__"], raw["__position__"]):
                held.append(raw)
                continue
            bad += not self._decode_into(good, raw, policy)
        if not good:
            for raw in held:
                bad += not self._decode_into(good, raw, policy)
            held = []
        if not good:
            raise CorruptSampleError.of(raws[0]["__url__"], raws[0]["__key__"], "every sample of this batch is corrupt")
        filled = good + [good[i % len(good)] for i in range(bad + len(held))]
        return collate(filled, bad, self._decoder.upscaled - upscaled, len(held))

    def _decode_into(self, good: list, raw: dict, policy: CorruptPolicy) -> bool:
        try:
            if raw.get("__missing__"):
                raise CorruptSampleError.of(raw["__url__"], raw["__key__"], "missing from the shard (truncated tar?)")
            image, label = self._decoder(raw, self._aug_seed)
        except CorruptSampleError as exc:
            policy.handle(exc)
            return False
        good.append((image, label, raw["__key__"]))
        return True


def _safe_iter(url: str, endpoint_url: str | None, on_corrupt: str) -> Iterator[dict]:
    """Raw samples of a shard; with on_corrupt=skip a damaged tar ends the shard early (the missing
    samples then count as corrupt) instead of ending the run. Storage errors always propagate:
    an unreachable bucket is not bad data."""
    try:
        yield from iter_shard(url, endpoint_url=endpoint_url)
    except ShardFormatError:
        if on_corrupt == "fail":
            raise

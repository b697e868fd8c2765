"""Epoch mode holds one shuffle window of raw samples per loader worker, not a whole shard: with the
usual webdataset shards (10k samples of 100 KB) a shard held whole is a gigabyte per worker."""

from __future__ import annotations

from pipeline.data import epoch_plan as plan
from pipeline.data import worker_stream
from pipeline.data.config import DataSpec
from pipeline.data.stream import make_batches


def test_raw_samples_run_at_most_one_window_ahead(tiny_root, monkeypatch):
    window = 6
    spec = DataSpec(root=tiny_root, resolution=8, sampling="epoch", shuffle_buffer=window)
    stream = make_batches(spec, rank=0, world_size=1, batch_size=5, seed=0)
    read = [0]
    real = worker_stream._safe_iter

    def counted(*args):
        for raw in real(*args):
            read[0] += 1
            yield raw

    monkeypatch.setattr(worker_stream, "_safe_iter", counted)
    dataset = worker_stream.EpochDataset(stream.config, stream.layout, epoch=0, consumed=0)
    begin, end = plan.worker_range(50, stream.layout, rank=0, worker=0)
    ahead, delivered = 0, 0
    for _ in dataset._raw_samples(begin, end):
        delivered += 1
        ahead = max(ahead, read[0] - delivered)  # read from the shards but not handed over yet
    assert delivered == 50
    # Shards of 16: holding a shard whole would put 15 samples ahead at its first delivery.
    assert ahead < window

"""verify: read every shard through the training reader, decode every sample, and compare
counts, sizes and sha256 with the manifest. The report lists every difference found.

Corrupt samples follow the training policy: on_corrupt=fail names each one as a problem; skip
counts them (named in the report's `skipped`) and fails only past max_corrupt_fraction.
Indexed shards decode at VERIFY_SIDE: JPEG draft mode then reads every coefficient of the file
(so truncation and garbage still fail) while skipping most of the pixel work."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from pipeline.data.config import DataSpec
from pipeline.data.decode import SampleDecoder, decode_config
from pipeline.data.errors import CorruptSampleError
from pipeline.data.manifest import load_manifest, manifest_resolution, shard_url
from pipeline.data.reader import iter_shard

VERIFY_SIDE = 16


@dataclass
class ShardReport:
    name: str
    samples: int = 0
    bytes: int = 0
    sha256: str | None = None
    problems: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # corrupt samples tolerated under on_corrupt=skip


@dataclass
class VerifyReport:
    root: str
    snapshot: str
    shards: list[ShardReport]

    @property
    def problems(self) -> list[str]:
        return [p for s in self.shards for p in s.problems]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def samples(self) -> int:
        return sum(s.samples for s in self.shards)

    @property
    def skipped(self) -> list[str]:
        return [k for s in self.shards for k in s.skipped]


def verify(
    root: str,
    endpoint_url: str | None = None,
    *,
    on_shard: Callable[[ShardReport], None] | None = None,
    parallel: int = 4,
    on_corrupt: str = "fail",
    max_corrupt_fraction: float = 0.0,
) -> VerifyReport:
    """Check every shard listed in root's manifest. `on_shard` is called as each shard finishes
    (the CLI's progress bar). A few shards in flight hide S3 latency behind decoding."""
    manifest, snapshot = load_manifest(root, endpoint_url=endpoint_url)
    side = manifest_resolution(manifest) or VERIFY_SIDE
    if on_corrupt not in ("fail", "skip"):
        raise ValueError(f"on_corrupt must be fail or skip, got {on_corrupt!r}")
    spec = DataSpec(root=root, resolution=side)  # keys auto: what the manifest recorded
    decoder = SampleDecoder(decode_config(spec, manifest, for_eval=True))

    def check(entry: dict) -> ShardReport:
        report = check_shard(shard_url(root, manifest, entry), entry, decoder, endpoint_url, skip=on_corrupt == "skip")
        if on_shard is not None:
            on_shard(report)
        return report

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        reports = list(pool.map(check, manifest["shards"]))
    total = sum(r.samples for r in reports)
    if total != manifest["num_samples"] and all(not r.problems for r in reports):
        reports[-1].problems.append(f"manifest num_samples is {manifest['num_samples']}, its shards hold {total}")
    budget = int(max_corrupt_fraction * manifest["num_samples"])
    skipped = sum(len(r.skipped) for r in reports)
    if skipped > budget:
        reports[-1].problems.append(
            f"{skipped} corrupt samples exceed max_corrupt_fraction {max_corrupt_fraction} (budget {budget} of {manifest['num_samples']})"
        )
    return VerifyReport(root=root, snapshot=snapshot, shards=reports)


def check_shard(url: str, entry: dict, decoder: SampleDecoder | int, endpoint_url: str | None = None, *, skip: bool = False) -> ShardReport:
    """One shard against its manifest entry. `decoder` may be a packed resolution (int), as before."""
    if isinstance(decoder, int):
        from pipeline.data.decode import DecodeConfig

        decoder = SampleDecoder(DecodeConfig(kind="packed", resolution=decoder))
    report = ShardReport(name=entry["name"])
    digest = hashlib.sha256()

    def tap(chunk: bytes) -> None:
        digest.update(chunk)
        report.bytes += len(chunk)

    seen: set[str] = set()
    try:
        for raw in iter_shard(url, endpoint_url=endpoint_url, tap=tap):
            report.samples += 1
            key = raw.get("__key__")
            if key in seen:
                report.problems.append(f"{entry['name']}: duplicate key {key!r}")
            seen.add(key)
            try:
                decoder(raw)
            except CorruptSampleError as exc:
                (report.skipped if skip else report.problems).append(f"{entry['name']}: {exc}")
    except FileNotFoundError:
        # Known from the GET itself: a HEAD first would cost one more round trip per shard.
        report.problems.append(f"{entry['name']}: missing ({url})")
        return report
    except Exception as exc:  # a truncated or garbled tar: report it, keep checking the others
        report.problems.append(f"{entry['name']}: unreadable after {report.samples} samples: {type(exc).__name__}: {exc}")
        return report
    report.sha256 = digest.hexdigest()
    if report.samples != entry["samples"]:
        report.problems.append(f"{entry['name']}: {report.samples} samples, manifest says {entry['samples']}")
    if report.bytes != entry["bytes"]:
        report.problems.append(f"{entry['name']}: {report.bytes} bytes, manifest says {entry['bytes']}")
    if report.sha256 != entry["sha256"]:
        report.problems.append(f"{entry['name']}: sha256 {report.sha256[:16]}..., manifest says {entry['sha256'][:16]}...")
    return report

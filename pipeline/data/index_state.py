"""Resume state of `data index`, kept beside its output (the folder or s3:// prefix where
manifest.json goes), so an index interrupted on one machine continues on any other that can reach
the output. Removed once the manifest is written.

    <out>/.index-state/<run>-<part>.jsonl    one JSON line per indexed shard:
        {"name", "size", "version", "keys": [image_key, label_key], "entry": <manifest entry>}

Why parts, not one file: S3 cannot append, and rewriting a whole state file at every save would
send O(shards²) bytes over a long index. Each save writes only the lines new since the last one, as
a new object; a rerun reads every part. Parts are named by a random run id, so two runs never
overwrite each other's. Saves happen at most every FLUSH_EVERY_S and always when the run ends,
however it ends (error, Ctrl-C): a machine that vanishes loses at most that much work.
"""

from __future__ import annotations

import json
import os
import time
import uuid

from pipeline.data import store
from pipeline.data.shard_listing import ShardListing

STATE_DIR = ".index-state"
FLUSH_EVERY_S = 30.0


class IndexState:
    def __init__(self, out: str, endpoint_url: str | None, image_key: str, label_key: str):
        self.folder = store.join(out, STATE_DIR)
        self.endpoint_url = endpoint_url
        self.keys = [image_key, label_key]  # entries depend on them: another choice reads the shards again
        self.run = uuid.uuid4().hex[:12]
        self.parts = 0
        self.lines: list[str] = []
        self.saved_at = time.monotonic()

    def load(self, listing: ShardListing) -> dict[str, dict]:
        """Entries of earlier runs whose shard is still listed with the same size and version."""
        done: dict[str, dict] = {}
        for url in store.list_files(self.folder, ".jsonl", self.endpoint_url):
            try:
                body = store.read_bytes(url, endpoint_url=self.endpoint_url).decode("utf-8", "replace")
            except FileNotFoundError:
                continue  # removed between listing and reading: a run that just finished
            for line in body.splitlines():
                try:
                    item = json.loads(line)
                except ValueError:
                    continue  # a part cut short (a local disk filling up): its other lines still count
                info = listing.shards.get(item.get("name"))
                if (item.get("keys") == self.keys and info is not None
                        and info.size == item.get("size") and info.version == item.get("version")):
                    done[item["name"]] = item["entry"]
        return done

    def add(self, name: str, size: int, version: str | None, entry: dict) -> None:
        self.lines.append(json.dumps({"name": name, "size": size, "version": version, "keys": self.keys, "entry": entry}))
        if time.monotonic() - self.saved_at >= FLUSH_EVERY_S:
            self.save()

    def save(self) -> None:
        """Write the lines added since the last save as one new part."""
        if self.lines:
            self.parts += 1
            url = store.join(self.folder, f"{self.run}-{self.parts:05d}.jsonl")
            store.write_bytes(url, ("\n".join(self.lines) + "\n").encode(), endpoint_url=self.endpoint_url)
            self.lines = []
        self.saved_at = time.monotonic()

    def remove(self) -> None:
        """Every part, of this run and earlier ones: the manifest now holds what they did."""
        self.lines = []
        for url in store.list_files(self.folder, ".jsonl", self.endpoint_url):
            store.remove(url, endpoint_url=self.endpoint_url)
        if not store.is_s3(self.folder):
            try:
                os.rmdir(self.folder)
            except OSError:
                pass  # something else put a file there: leave it

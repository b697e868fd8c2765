"""Errors the data plane raises on purpose, so callers can tell bad data from bugs."""


class DataError(ValueError):
    """The data does not match what the spec or the manifest promises (missing shard, wrong size,
    corrupt sample, unreadable manifest). The message names every offending shard or key."""


class CorruptSampleError(DataError):
    """A sample could not be decoded. The message names the shard URL and the sample key.

    The constructor takes one message argument on purpose: torch's DataLoader re-raises a worker's
    exception in the main process as `type(exc)(message)`, which must keep working."""

    def __init__(self, message: str, *, url: str | None = None, key: str | None = None):
        super().__init__(message)
        self.url = url
        self.key = key

    @classmethod
    def of(cls, url: str, key: str, reason: str) -> "CorruptSampleError":
        return cls(f"corrupt sample {key!r} in shard {url}: {reason}", url=url, key=key)


class ShardFormatError(DataError):
    """A shard's tar structure is damaged (bad header checksum, truncated member). With
    on_corrupt=skip the rest of that shard counts as corrupt; storage errors never do."""


class StorageAccessError(DataError):
    """The store refused the request (S3 401/403: unknown key, bad signature, no permission) or no
    credentials were found. A DataError so that every verb ends with its one-line message; it is no
    corrupt sample, so `on_corrupt: skip` never hides it. The message names the URL and the error
    code, never a key."""

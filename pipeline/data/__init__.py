"""Data plane: pack images into WebDataset shards, check them, stream them as batches.

Import the pieces you need from their modules (config, pack, manifest, stream); this package
file stays empty of imports so that `import pipeline.data.config` never pulls torch or boto3.
"""

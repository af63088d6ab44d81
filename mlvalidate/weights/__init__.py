"""Checkpoint formats and loading: safetensors shards and index, block-FP8, the transformers loader."""

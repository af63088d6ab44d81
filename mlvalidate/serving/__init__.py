"""Serving the model: per-hardware vLLM profiles and their checks, launching vLLM, the host's GPUs and environment."""

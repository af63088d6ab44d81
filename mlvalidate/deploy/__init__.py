"""Deployment side roads: local checkpoints (inspection, loading, tiny fixtures), and later
pulling weights, vLLM profiles, hardware inventory and launching."""

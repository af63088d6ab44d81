"""Defaults that `--help` shows and the code uses, in one light module: building the parser for
any command (`config list`, `--version` ...) imports this, never the engines or the launcher that
use them (their imports bring numpy, scipy, httpx, psutil)."""

DEFAULT_IN_FLIGHT = 4  # queued /generate chunks at a time (validate/fleet --in-flight; engines/poc_http.py)

# `launch` (serving/launch.py)
LAUNCH_PORT = 5000
LAUNCH_HOST = "0.0.0.0"
LAUNCH_SERVER_CMD = "vllm serve"
LAUNCH_STARTUP_TIMEOUT = 1800.0  # cold starts of MiniMax-M2.7 take 20+ min on some rigs

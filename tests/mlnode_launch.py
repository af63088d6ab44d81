"""Start Gonka's real MLNode API, unmodified, with N replicas on a machine without GPUs.

Run with the MLNode's own Python (tests/mlnode_setup.py makes its venv) and its sources on
PYTHONPATH (api/src:common/src:pow/src:train/src): `python mlnode_launch.py REPLICAS PORT`.
The MLNode starts one vLLM per GPU group and counts GPUs with torch.cuda.device_count(); that
count is the one thing set here, before uvicorn imports the app. Binds 127.0.0.1.
With MLNODE_FAKE_GPUS="NAME|COUNT|MIB" its NVML is tests/fake_nvml.py's stand-in for that many
such GPUs (its GPU routes, api/gpu/, then answer for them); without it, the machine's own NVML
(none here: the routes answer `{"devices": [], "count": 0}` and 503).
If the test process that started it goes away, it stops itself (no process is left behind).
"""

import os
import signal
import sys
import threading
import time

import torch
import uvicorn

replicas, port = int(sys.argv[1]), int(sys.argv[2])
torch.cuda.device_count = lambda: replicas
if os.environ.get("MLNODE_FAKE_GPUS"):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from fake_nvml import FakeNVML

    name, count, mib = os.environ["MLNODE_FAKE_GPUS"].split("|")
    sys.modules["pynvml"] = FakeNVML(name, int(count), int(mib))  # what `import pynvml` gives the MLNode


def _orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1)
    os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's own shutdown: it stops its replicas


threading.Thread(target=_orphaned, args=(os.getppid(),), daemon=True).start()
uvicorn.run("api.app:app", host="127.0.0.1", port=port, log_level="warning")

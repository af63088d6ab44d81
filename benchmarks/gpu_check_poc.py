"""Part 1 of benchmarks/gpu_check.py: the PoC math, ours and Gonka's, on CPU and on CUDA, element by element.

Four sources compute the same quantities for the same nonces: ours-cpu, gonka-cpu, ours-cuda and
gonka-cuda ("ours" is mlvalidate.poc; "gonka" is Gonka's own `vllm/poc/gpu_random.py`, imported by
path at run time, never copied). Every pair of sources is compared bit for bit:

  inputs, inputs_stronger  the input embeddings of both RNGs (spec §1.4, §1.5), float32 before the
                           model's cast; how many differences survive the cast to bf16 is counted too
  target                   the unit target vector of f"{bh}_{pk}_target" (§1.6, unused by PoC v2)
  householder              the per-layer reflection vectors (§2.1)
  reflect                  one reflection (§2.2) of the same bf16 activations by the same vector
  pick@B                   the k picked indices per nonce (§3.6), asked for B nonces at a time: same
                           set? same order? (PyTorch's CUDA topk chooses its kernel by the number
                           and width of the rows, as we read its source, not measured: so B is varied)
  haar                     the Haar rotation (§3.7) of the same [N, k] rows
  vectors@B                the whole post-processing (§3.5-3.9) of the same last hidden states, B
                           nonces a batch: the fp16 PoC vectors, Gonka's composed as its model runner does

A difference is named: its count, the largest one (absolute and in ulps), and the first few
elements (nonce or layer, position) with both values; for picks, the first nonces whose order or
set differs, with both orders. What each pair is expected to show is written next to it
(EXPECT): "equal" bit for bit, "same sets" (picks: the order may differ), or "measured".
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import torch

from mlvalidate.poc import rng, transform

BLOCK_HASH, PUBLIC_KEY = "TEST_BLOCK", "test_pub_keys_v2"  # the MiniMax golden values (docs/poc-v2.md)
GONKA_FILE = Path("shared/counterparts/gonka-vllm-poc/vllm/poc/gpu_random.py")
GONKA_ENV = "MLVALIDATE_GONKA_POC"
SHAPES = {  # name: hidden D, seq_len S, k, decoder layers
    "minimax": {"D": 3072, "S": 1024, "k": 12, "layers": 62},  # MiniMax-M2.7 (docs/minimax-m2.md)
    "small": {"D": 128, "S": 256, "k": 12, "layers": 4},  # make-tiny's defaults at the demo's seq_len
}
SOURCES = ("ours-cpu", "gonka-cpu", "ours-cuda", "gonka-cuda")
PAIRS = (("ours-cpu", "gonka-cpu"), ("ours-cpu", "ours-cuda"), ("ours-cpu", "gonka-cuda"),
         ("ours-cuda", "gonka-cuda"), ("gonka-cpu", "gonka-cuda"))
EMBEDDINGS = ("inputs", "inputs_stronger")
FIRST = 5  # differences named per comparison


def pair_label(pair) -> str:
    return f"{pair[0]} vs {pair[1]}"


def expectation(pair, quantity: str) -> str:
    """What a pair should show. Same device: the same arithmetic, so equal bits, except that
    Gonka's pick on a CPU comes in CPU topk's order (docs/poc-v2.md §8.x). Ours on CPU against
    CUDA: the pick order is the claim of §3.6 (equal); float results across devices are measured."""
    if pair == ("ours-cuda", "gonka-cuda"):
        return "equal"
    if quantity.startswith("pick"):
        return "equal" if pair[0] == "ours-cpu" and pair[1].endswith("cuda") else "same sets"
    if quantity.startswith("vectors"):
        return "measured"  # follows the pick order and the float results above
    same_device = pair[0].split("-")[1] == pair[1].split("-")[1]
    return "equal" if same_device else "measured"


# ----------------------------------------------------------------------------------------
# Gonka's gpu_random.py, by path
# ----------------------------------------------------------------------------------------
def find_gonka(explicit: str | None, repo: Path) -> tuple[Path | None, list[str]]:
    """(path, where it looked): --gonka, else $MLVALIDATE_GONKA_POC, else shared/counterparts/...
    in the checkout or the first folder above it that has one."""
    if explicit or os.environ.get(GONKA_ENV):
        p = Path(explicit or os.environ[GONKA_ENV])
        return (p if p.is_file() else None), [str(p)]
    looked = [str(d / GONKA_FILE) for d in (repo, *repo.parents)]
    return next((Path(p) for p in looked if Path(p).is_file()), None), looked


def load_gonka(path: Path):
    spec = importlib.util.spec_from_file_location("gonka_gpu_random", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------------------
# the two implementations, one call per quantity
# ----------------------------------------------------------------------------------------
class Ours:
    def __init__(self, device: torch.device):
        self.dev = device

    def inputs(self, nonces, D, S, stronger=False):
        return rng.input_embeddings(BLOCK_HASH, PUBLIC_KEY, nonces, S, D, dtype=torch.float32, device=self.dev,
                                    stronger_rng=stronger)

    def target(self, D):
        v = rng.normal(rng.seed_from_string(f"{BLOCK_HASH}_{PUBLIC_KEY}_target"), D, device=self.dev)
        return (v / torch.linalg.vector_norm(v)).reshape(1, D)

    def householder(self, D, layers):
        return torch.stack([rng.householder_vector(BLOCK_HASH, i, D, device=self.dev) for i in range(layers)])

    def reflect(self, x, v):
        return transform.householder_reflect(x.to(self.dev), v.to(self.dev))

    def pick(self, nonces, D, k):
        return transform.pick_indices(BLOCK_HASH, PUBLIC_KEY, nonces, D, k, device=self.dev)

    def haar(self, nonces, x):
        return transform.haar_rotate(BLOCK_HASH, PUBLIC_KEY, nonces, x.to(self.dev))

    def vectors(self, nonces, h, k):
        return torch.from_numpy(transform.poc_vectors(h.to(self.dev), BLOCK_HASH, PUBLIC_KEY, nonces, k))


class Gonka:
    def __init__(self, module, device: torch.device):
        self.g, self.dev = module, device

    def inputs(self, nonces, D, S, stronger=False):
        fn = self.g.generate_inputs_concat_murmur if stronger else self.g.generate_inputs
        return fn(BLOCK_HASH, PUBLIC_KEY, list(nonces), D, S, self.dev, dtype=torch.float32)

    def target(self, D):
        return self.g.generate_target(BLOCK_HASH, PUBLIC_KEY, D, self.dev).reshape(1, D)

    def householder(self, D, layers):
        return torch.stack([self.g.generate_householder_vector(rng.householder_seed_string(BLOCK_HASH, i), D, self.dev)
                            for i in range(layers)])

    def reflect(self, x, v):
        x = x.to(self.dev)
        return self.g.apply_householder(x, v.to(self.dev).to(x.dtype))  # as its layer hook calls it

    def pick(self, nonces, D, k):
        return self.g.random_pick_indices(BLOCK_HASH, PUBLIC_KEY, list(nonces), D, k, self.dev)

    def haar(self, nonces, x):
        return self.g.apply_haar_rotation(BLOCK_HASH, PUBLIC_KEY, list(nonces), x.to(self.dev), self.dev)

    def vectors(self, nonces, h, k):
        """The steps of its model runner after the forward (normalise, pick, gather, Haar, normalise, fp16)."""
        x = h.to(self.dev).float()
        x = x / (x.norm(dim=-1, keepdim=True) + 1e-8)
        idx = self.pick(nonces, x.shape[-1], k)
        y = self.haar(nonces, torch.gather(x, 1, idx))
        y = y / (y.norm(dim=-1, keepdim=True) + 1e-8)
        return y.half().cpu()


# ----------------------------------------------------------------------------------------
# comparisons that name their differences
# ----------------------------------------------------------------------------------------
_INT_VIEW = {4: torch.int32, 2: torch.int16}


def _ordered(bits: torch.Tensor, width: int) -> torch.Tensor:
    """A float's bit pattern as an integer whose order is the float's (so a difference counts ulps)."""
    i = bits.to(torch.int64)
    return torch.where(i < 0, -(2 ** (width - 1)) - i, i)


class FloatDiff:
    """Bit-for-bit comparison of two float tensors, added a block of rows at a time."""

    def __init__(self, axes: tuple[str, ...], bf16: bool = False, row_l2: bool = False):
        self.axes, self.bf16, self.row_l2 = axes, bf16, row_l2
        self.n = self.n_differ = self.rows = self.rows_differ = self.max_ulp = 0
        self.n_differ_bf16 = 0
        self.max_abs = self.max_l2 = 0.0
        self.first: list[dict] = []

    def add(self, a: torch.Tensor, b: torch.Tensor, labels) -> None:
        if a.shape != b.shape or a.dtype != b.dtype:
            raise ValueError(f"cannot compare {tuple(a.shape)} {a.dtype} with {tuple(b.shape)} {b.dtype}")
        b = b.to(a.device)
        width = a.element_size() * 8
        ia, ib = a.contiguous().view(_INT_VIEW[a.element_size()]), b.contiguous().view(_INT_VIEW[a.element_size()])
        ne = ia != ib
        self.n += a.numel()
        self.rows += a.shape[0]
        n_ne = int(ne.sum())
        if self.bf16:
            self.n_differ_bf16 += int((a.to(torch.bfloat16).view(torch.int16) != b.to(torch.bfloat16).view(torch.int16)).sum())
        if not n_ne:
            return
        self.n_differ += n_ne
        self.rows_differ += int(ne.reshape(a.shape[0], -1).any(dim=1).sum())
        d = a.float() - b.float()
        self.max_abs = max(self.max_abs, float(d.abs().max()))
        self.max_ulp = max(self.max_ulp, int((_ordered(ia, width) - _ordered(ib, width)).abs().max()))
        if self.row_l2:
            self.max_l2 = max(self.max_l2, float(torch.linalg.vector_norm(d.reshape(a.shape[0], -1), dim=1).max()))
        for idx in ne.nonzero()[: FIRST - len(self.first)].tolist():
            where = {self.axes[0]: int(labels[idx[0]]), **dict(zip(self.axes[1:], idx[1:]))}
            self.first.append({**where, "a": float(a[tuple(idx)]), "b": float(b[tuple(idx)])})

    def as_dict(self) -> dict:
        out = {"compared": self.n, "rows": self.rows, "differ": self.n_differ, "rows_differ": self.rows_differ,
               "max_abs": self.max_abs, "max_ulp": self.max_ulp}
        if self.bf16:
            out["differ_after_bf16_cast"] = self.n_differ_bf16
        if self.row_l2:
            out["max_row_l2"] = self.max_l2
        return {**out, "first": self.first}


class PickDiff:
    """The k picked indices per nonce: rows whose set differs, rows whose order differs."""

    def __init__(self):
        self.rows = self.rows_set_differ = self.rows_order_differ = 0
        self.first_set: list[dict] = []
        self.first_order: list[dict] = []

    def add(self, a: torch.Tensor, b: torch.Tensor, labels) -> None:
        a, b = a.cpu(), b.cpu()
        same_order = (a == b).all(dim=1)
        same_set = (a.sort(dim=1).values == b.sort(dim=1).values).all(dim=1)
        self.rows += a.shape[0]
        self.rows_set_differ += int((~same_set).sum())
        self.rows_order_differ += int((~same_order).sum())
        for r in (~same_set).nonzero().flatten().tolist()[: FIRST - len(self.first_set)]:
            self.first_set.append({"nonce": int(labels[r]), "a": a[r].tolist(), "b": b[r].tolist()})
        order_only = same_set & ~same_order
        for r in order_only.nonzero().flatten().tolist()[: FIRST - len(self.first_order)]:
            self.first_order.append({"nonce": int(labels[r]), "a": a[r].tolist(), "b": b[r].tolist()})

    def as_dict(self) -> dict:
        return {"rows": self.rows, "rows_set_differ": self.rows_set_differ, "rows_order_differ": self.rows_order_differ,
                "first_set": self.first_set, "first_order": self.first_order}


def judge(expect: str, d: dict) -> str:
    if expect == "measured":
        return "measured"
    if "rows_order_differ" in d:  # picks
        ok = d["rows_order_differ" if expect == "equal" else "rows_set_differ"] == 0
    else:
        ok = d["differ"] == 0
    return "ok" if ok else "UNEXPECTED"


# ----------------------------------------------------------------------------------------
# one shape
# ----------------------------------------------------------------------------------------
def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _batched(fn, nonces: list[int], batch: int):
    """fn(nonces of one batch, their rows) over batches of `batch`, concatenated on the first dim."""
    return torch.cat([fn(nonces[a: a + batch], slice(a, a + batch)).cpu() for a in range(0, len(nonces), batch)])


def run_shape(name: str, shape: dict, *, gonka, cuda: torch.device | None, nonces: int, embed_nonces: int,
              gonka_cpu_embed_nonces: int, batch: int, pick_batches=(1, 32, 256), vector_batch: int = 32,
              log=print) -> dict:
    D, S, k, layers = shape["D"], shape["S"], shape["k"], shape["layers"]
    cpu = torch.device("cpu")
    impls = {"ours-cpu": Ours(cpu)}
    if gonka is not None:
        impls["gonka-cpu"] = Gonka(gonka, cpu)
    if cuda is not None:
        impls["ours-cuda"] = Ours(cuda)
        if gonka is not None:
            impls["gonka-cuda"] = Gonka(gonka, cuda)
    cmp_dev = cuda or cpu
    skipped = {}
    for pair in PAIRS:
        missing = [s for s in pair if s not in impls]
        if missing:
            skipped[pair] = ("skipped: no CUDA" if any(s.endswith("cuda") for s in missing) and cuda is None
                             else "skipped: Gonka's gpu_random.py not found")
    pairs = [p for p in PAIRS if p not in skipped]
    seconds = {s: {} for s in impls}

    def timed(source: str, quantity: str, fn):
        _sync(impls[source].dev)
        t = time.perf_counter()
        out = fn(impls[source])
        _sync(impls[source].dev)
        seconds[source][quantity] = seconds[source].get(quantity, 0.0) + time.perf_counter() - t
        return out

    all_nonces = list(range(nonces))
    quantity_names = [*EMBEDDINGS, "target", "householder", "reflect", *(f"pick@{b}" for b in pick_batches), "haar",
                      f"vectors@{vector_batch}"]
    diffs = {q: {} for q in quantity_names}
    for q in EMBEDDINGS:
        for pair in pairs:
            diffs[q][pair] = FloatDiff(("nonce", "position", "dim"), bf16=True)
    # fixed operands, the same bits for every source: drawn once on the CPU
    gen = torch.Generator().manual_seed(0)
    x_reflect = torch.randn(2, S, D, generator=gen).to(torch.bfloat16)
    x_haar = torch.randn(nonces, k, generator=gen)
    h_last = torch.randn(nonces, D, generator=gen)
    v_reflect = Ours(cpu).householder(D, 1)[0]

    log(f"  {name}: D {D}, seq_len {S}, k {k}, {layers} layers, {nonces} nonces ({embed_nonces} with input "
        f"embeddings, Gonka on the CPU {min(gonka_cpu_embed_nonces, embed_nonces)}); sources: {', '.join(impls)}")
    for a in range(0, embed_nonces, batch):
        chunk = all_nonces[a: min(a + batch, embed_nonces)]
        for q in EMBEDDINGS:
            got = {}
            for s in impls:
                rows = chunk if s != "gonka-cpu" else chunk[: max(0, gonka_cpu_embed_nonces - a)]
                if rows:
                    got[s] = timed(s, q, lambda m, rows=rows: m.inputs(rows, D, S, stronger=q == "inputs_stronger"))
                    got[s] = got[s].to(cmp_dev)
            for pair in pairs:
                if pair[0] in got and pair[1] in got:
                    n = min(got[pair[0]].shape[0], got[pair[1]].shape[0])
                    diffs[q][pair].add(got[pair[0]][:n], got[pair[1]][:n], chunk[:n])
            del got
    one_off = {
        "target": (lambda m: m.target(D), ("row", "dim"), [0], {}),
        "householder": (lambda m: m.householder(D, layers), ("layer", "dim"), list(range(layers)), {}),
        "reflect": (lambda m: m.reflect(x_reflect, v_reflect), ("row", "position", "dim"), [0, 1], {}),
        "haar": (lambda m: m.haar(all_nonces, x_haar), ("nonce", "dim"), all_nonces, {"row_l2": True}),
        f"vectors@{vector_batch}": (lambda m: _batched(lambda ns, rows: m.vectors(ns, h_last[rows], k), all_nonces,
                                                       vector_batch), ("nonce", "dim"), all_nonces, {"row_l2": True}),
    }
    for q, (fn, axes, labels, opts) in one_off.items():
        got = {s: timed(s, q, fn).to(cmp_dev) for s in impls}
        for pair in pairs:
            diffs[q][pair] = FloatDiff(axes, **opts)
            diffs[q][pair].add(got[pair[0]], got[pair[1]], labels)
    for b in pick_batches:
        q = f"pick@{b}"
        got = {s: timed(s, q, lambda m: _batched(lambda ns, rows: m.pick(ns, D, k), all_nonces, b)) for s in impls}
        for pair in pairs:
            diffs[q][pair] = PickDiff()
            diffs[q][pair].add(got[pair[0]], got[pair[1]], all_nonces)

    quantities = {}
    for q in quantity_names:
        cells = {}
        for pair in PAIRS:
            if pair in skipped:
                cells[pair_label(pair)] = skipped[pair]
                continue
            d = diffs[q][pair].as_dict()
            expect = expectation(pair, q)
            cells[pair_label(pair)] = {**d, "expect": expect, "status": judge(expect, d)}
        quantities[q] = cells
    return {**shape, "nonces": nonces, "embed_nonces": embed_nonces,
            "gonka_cpu_embed_nonces": min(gonka_cpu_embed_nonces, embed_nonces), "sources": list(impls),
            "quantities": quantities,
            "seconds": {s: {q: round(t, 4) for q, t in v.items()} for s, v in seconds.items()}}


def cell_text(cell) -> str:
    """One table cell: 'equal', what differs, or 'skipped'; '!' marks an UNEXPECTED result."""
    if isinstance(cell, str):
        return "skipped"
    mark = " !" if cell["status"] == "UNEXPECTED" else ""
    if "rows_order_differ" in cell:
        if cell["rows_set_differ"]:
            return f"set≠ {cell['rows_set_differ']}/{cell['rows']}{mark}"
        return (f"order≠ {cell['rows_order_differ']}/{cell['rows']}" if cell["rows_order_differ"] else "equal") + mark
    if not cell["differ"]:
        return "equal" + mark
    if "max_row_l2" in cell:
        return f"{cell['rows_differ']}/{cell['rows']} rows, L2≤{cell['max_row_l2']:.2g}{mark}"
    bf16 = f", bf16 {cell['differ_after_bf16_cast']}" if "differ_after_bf16_cast" in cell else ""
    return f"{cell['differ']}/{cell['compared']:.3g} ≤{cell['max_ulp']}ulp{bf16}{mark}"


def first_differences(shape: dict) -> list[str]:
    """For the table: the first difference of every UNEXPECTED comparison, and of each pair's picks once."""
    out, picks_named = [], set()
    for q, cells in shape["quantities"].items():
        for label, cell in cells.items():
            pick = q.startswith("pick")
            if isinstance(cell, str) or (cell["status"] != "UNEXPECTED" and (not pick or label in picks_named)):
                continue
            if pick and (cell["rows_set_differ"] or cell["rows_order_differ"]):
                picks_named.add(label)  # a pair's known pick difference is named once
            first = (cell.get("first_set") or cell.get("first_order")) if pick else cell.get("first")
            if first:
                a, b = label.split(" vs ")
                f = first[0]
                what = (f"nonce {f['nonce']}: {a} {f['a']}, {b} {f['b']}" if pick else
                        ", ".join(f"{k} {v}" for k, v in f.items() if k not in ("a", "b")) + f": {a} {f['a']!r}, {b} {f['b']!r}")
                out.append(f"  {q} ({label}, {cell['status']}): first at {what}")
    return out

"""`mlvalidate inspect`: summarise a golden reference."""

from __future__ import annotations

import json

from ._common import EXIT_PASS, Formatter


def register(sub) -> None:
    p = sub.add_parser(
        "inspect",
        help="summarise a golden reference, or list them all",
        description="Print a golden reference's model, nonces, PoC params, stat test (with the "
        "mismatch count at which fraud is declared), vector norms and pairwise distances. Without "
        "REFERENCE: list every reference in the lookup folders ($MLVALIDATE_ARTIFACTS, ./artifacts, "
        "the shipped ones), one line each.\n\n"
        "exit codes: 0 printed; 2 the reference cannot be found or read",
        formatter_class=Formatter,
    )
    p.add_argument("reference", nargs="?", default=None,
                   help="reference JSON file, or a model id looked up in artifacts/ (none: list them all)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of text")

    def run(args) -> int:
        from ..inspect_ref import list_references, reference_summary

        if args.reference is None:
            rows = list_references()
            print(json.dumps(rows, indent=2) if args.json else "\n".join(listing(rows)))
            return EXIT_PASS
        s = reference_summary(args.reference)
        ref, pw, st = s.pop("_ref"), s.pop("_pairwise"), s.pop("_st")
        print(json.dumps(s, indent=2) if args.json else "\n".join(text(s, ref, pw, st)))
        return EXIT_PASS

    p.set_defaults(func=run)


def _nonce_range(nonces) -> str:
    lo, hi = int(nonces.min()), int(nonces.max())
    contiguous = hi - lo + 1 == nonces.size
    return f"{lo}..{hi}" + (" (contiguous)" if contiguous else f" ({nonces.size} distinct, with gaps)")


def text(s: dict, ref, pw, st) -> list[str]:
    from ..report.text import cutoff_line, histogram, percentiles_line, stat_test_line

    p = s["poc_params"]
    bs = ref.collection_batch_size
    lines = [f"reference     {s['path']}"]
    if s["other_references"]:  # a model id that several files name: which one, why, and the others
        lines.append(f"              chosen for {ref.model}: {s['chosen_because']}")
        lines += [f"              also for this model: {o['file']} ({o['n_vectors'] if o['n_vectors'] is not None else '?'} "
                  "vectors): pass its path to inspect it" for o in s["other_references"]]
    lines += [
        f"model         {ref.model}",
        f"vectors       {ref.n}, nonces {_nonce_range(ref.nonces)}",
        f"PoC params    seq_len {p['seq_len']} · k_dim {p['k_dim']} · block_hash {p['block_hash']!r} · "
        f"public_key {p['public_key']!r} · block_height {p['block_height']} · node {p['node_id']}/{p['node_count']}",
        f"stat test     {stat_test_line(st)}",
        f"              {cutoff_line(ref.n, st.values.p_mismatch, st.values.fraud_threshold)}",
    ]
    if s["ignored_stat_test_dist_threshold"] is not None:
        lines.append(
            f"              note: stat_test.dist_threshold {s['ignored_stat_test_dist_threshold']} is ignored; "
            "the top-level dist_threshold is the gate"
        )
    lines += [
        f"vector norms  {s['norm_min']:.5f} .. {s['norm_max']:.5f}  (unit vectors up to fp16 rounding)",
        f"pairwise L2   {percentiles_line(pw)}  ({pw.size} pairs; random unit vectors in R^{ref.k_dim} average ≈ 1.41)",
    ]
    if s["pairwise_l2"]["sampled"]:
        lines.append(f"              pairwise L2 over a sample of {s['pairwise_l2']['n_vectors']} of {ref.n} vectors "
                     "(fixed seed)")
    lines += histogram(pw, 0.0, 2.0, bins=10, mark=st.values.dist_threshold)
    lines += [
        f"batch size    {bs if bs is not None else 'not recorded (numerics depend on it; nodes default to 32)'}",
        f"deploy args   {' '.join(ref.additional_args) or 'none'}",
        f"source        {ref.source or 'n/a'}",
        f"generated at  {ref.generated_at or 'n/a'}",
    ]
    return lines


def listing(rows: list[dict]) -> list[str]:
    lines = [f"{'model':<42}{'nonces':>7}{'seq':>6}  {'gate / p_mismatch / fraud':<26}  file"]
    for r in rows:
        if "error" in r:
            lines.append(f"{'(unreadable)':<42}{'':>7}{'':>6}  {'':<26}  {r['file']}: {r['error']}")
            continue
        v = r["stat_test"]
        gate = f"{v['dist_threshold']:g} / {v['p_mismatch']:g} / {v['fraud_threshold']:g}"
        mark = "  " if r.get("opened_by_model_id", True) else "* "
        lines.append(f"{r['model']:<42}{r['n_vectors']:>7}{r['seq_len']:>6}  {gate:<26}{mark}{r['file']}")
    if any(r.get("opened_by_model_id") is False for r in rows):
        lines.append("* not opened by its model id (another file for that model is): pass its path to use it")
    return lines

"""`mlvalidate bake`: compute a golden reference with the reference engine."""

from __future__ import annotations

from ..errors import MlvalidateError
from ._common import EXIT_PASS, Formatter, require_extra


def register(sub) -> None:
    p = sub.add_parser(
        "bake",
        help="compute a golden reference with the reference engine",
        description="Compute PoC vectors for nonces 0..N-1 with a local checkpoint and write them in the "
        "golden-reference schema, recording the engine, device, dtype and batch size.\n\n"
        "exit codes: 0 written; 2 it could not be (the checkpoint, the arguments, a missing extra)",
        formatter_class=Formatter,
    )
    p.add_argument("--model", required=True, metavar="DIR", help="local checkpoint directory (bf16 or block-FP8)")
    p.add_argument("--model-id", required=True, help="model id written into the reference (e.g. org/name)")
    p.add_argument("--out", required=True, metavar="FILE", help="reference JSON to write")
    p.add_argument("--nonces", type=int, default=200, help="number of nonces (0..N-1)")
    p.add_argument("--batch-size", type=int, default=32, help="nonces per forward (numerics depend on it)")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"], help="activation dtype")
    p.add_argument("--seq-len", type=int, default=1024, help="PoC sequence length")
    p.add_argument("--block-hash", default="TEST_BLOCK",
                   help="the block hash that seeds the PoC inputs (spec §1); written into the reference")
    p.add_argument("--public-key", default="test_pub_keys_v2",
                   help="the node's public key that seeds the PoC inputs (spec §1); written into the reference")
    p.add_argument("--k-dim", type=int, default=12, help="dimensions kept per PoC vector (spec §3.6; PoC v2 uses 12)")
    p.add_argument("--stronger-rng", action="store_true",
                   help="inputs from the stronger RNG (poc_stronger_rng, spec §1.5); written into the reference, and "
                   "every node is then asked for it")
    p.add_argument("--dist-threshold", type=float, default=0.75, help="L2 gate written into the reference")
    p.add_argument("--p-mismatch", type=float, default=0.1, help="written into the reference's stat_test")
    p.add_argument("--fraud-threshold", type=float, default=0.05, help="written into the reference's stat_test")

    def run(args) -> int:
        require_extra("reference", "bake")
        from ..bake import bake_reference
        from ..engines.base import PocParams
        from ..engines.reference import ReferenceEngine

        if args.nonces < 1 or args.batch_size < 1 or args.seq_len < 1:
            raise MlvalidateError("--nonces, --batch-size and --seq-len must be >= 1")
        engine = ReferenceEngine(args.model, device=args.device, dtype=args.dtype, model_id=args.model_id)
        params = PocParams(block_hash=args.block_hash, public_key=args.public_key, seq_len=args.seq_len, k_dim=args.k_dim,
                           stronger_rng=args.stronger_rng)
        path, res = bake_reference(
            engine, model_id=args.model_id, out=args.out, n_nonces=args.nonces, batch_size=args.batch_size,
            params=params, stat_test={"dist_threshold": args.dist_threshold, "p_mismatch": args.p_mismatch,
                                      "fraud_threshold": args.fraud_threshold},
        )
        print(f"wrote {path}: {len(res.nonces)} vectors in {res.elapsed_s:.1f} s ({res.nonces_per_second:.2f} nonces/s)")
        return EXIT_PASS

    p.set_defaults(func=run)

"""`mlvalidate hw`: GPU inventory, the matching profile, the VRAM fit."""

from __future__ import annotations

from ._common import Formatter


def register(sub) -> None:
    p = sub.add_parser(
        "hw",
        help="GPU inventory (NVML), the matching profile, and the VRAM fit per profile",
        description="Read this host's GPUs through NVML (names, memory, driver, CUDA, clocks, power, processes "
        "holding GPU memory), name the profile that matches (GPU model and count), and estimate per GPU whether "
        "the model fits: weights/TP + fp8 KV cache for one max-model-len sequence + headroom against GPU memory x "
        "gpu-memory-utilization. Without an NVIDIA driver: a one-line error, exit 2. --profiles-only prints the "
        "fit table from the profiles' own GPU memory figures, without NVML.",
        formatter_class=Formatter,
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--profiles-only", action="store_true", help="only the fit table; do not query NVML")
    p.add_argument("--profile", action="append", default=None, metavar="PROFILE",
                   help="limit to these profiles (repeatable; default: all under configs/)")  # fmt: skip
    p.add_argument("--headroom-gib", type=float, default=4.0,
                   help="per-GPU allowance for activations, CUDA graphs, NCCL and the CUDA context")  # fmt: skip

    def run(args) -> int:
        from ..serving.hardware import run_hw

        return run_hw(as_json=args.json, profiles_only=args.profiles_only, profiles=args.profile,
                      headroom_gib=args.headroom_gib)  # fmt: skip

    p.set_defaults(func=run)

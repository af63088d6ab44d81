"""`mlvalidate hw`: GPU inventory, the matching profile, the VRAM fit.

The report is serving.hardware's (`hw_report`, plain data); this module prints it as text
(`render_report`) or JSON. Exit 0 with a report; a HardwareError (exit 2) when NVML cannot start.
"""

from __future__ import annotations

from ._common import EXIT_PASS, Formatter


def register(sub) -> None:
    p = sub.add_parser(
        "hw",
        help="GPU inventory (NVML), the matching profile, and the VRAM fit per profile",
        description="Read this host's GPUs through NVML (names, memory, driver, CUDA, clocks, power, processes "
        "holding GPU memory), name the profile that matches (GPU model and count), and estimate per GPU whether "
        "the model fits: weights/TP + fp8 KV cache for one max-model-len sequence + headroom against GPU memory x "
        "gpu-memory-utilization. Without an NVIDIA driver: a one-line error, exit 2. --profiles-only prints the "
        "fit table from the profiles' own GPU memory figures, without NVML.\n\n"
        "exit codes: 0 the report printed; 2 NVML cannot answer (no driver) or a profile cannot be read",
        formatter_class=Formatter,
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--profiles-only", action="store_true", help="only the fit table; do not query NVML")
    p.add_argument("--profile", action="append", default=None, metavar="PROFILE",
                   help="limit to these profiles (repeatable; default: all under configs/)")  # fmt: skip
    p.add_argument("--headroom-gib", type=float, default=4.0,
                   help="per-GPU allowance for activations, CUDA graphs, NCCL and the CUDA context")  # fmt: skip

    def run(args) -> int:
        import json

        from ..serving.hardware import hw_report

        rep = hw_report(args.profile, profiles_only=args.profiles_only, headroom_gib=args.headroom_gib)
        print(json.dumps(rep, indent=2) if args.json else render_report(rep))
        return EXIT_PASS

    p.set_defaults(func=run)


def _mhz(cur, mx) -> str:
    return f"{cur if cur is not None else '?'}/{mx if mx is not None else '?'} MHz"


def _gib(n_bytes: int) -> float:
    from ..serving.hardware import GIB

    return n_bytes / GIB


def _fit_rows(rows: list[dict]) -> list[str]:
    head = (f"{'profile':<9} {'GPUs':<9} {'TP':>2} {'memory':>7} {'x util':>7} {'weights':>8} "
            f"{'KV@len':>7} {'headroom':>8} {'needed':>7} {'spare':>7}  fits  KV capacity")  # fmt: skip
    out = [head]
    for r in rows:
        if r.get("fits") is None:
            out.append(f"{r['profile']:<9} {r.get('note', '')}")
            continue
        gpus = f"{r['gpu_count']}x{r['gpu_memory_gib']:.0f}G" if r.get("gpu_count") else "-"
        out.append(
            f"{r['profile']:<9} {gpus:<9} {r['tensor_parallel_size']:>2} {r['gpu_memory_gib']:>7.1f} "
            f"{r['budget_gib']:>7.1f} {r['weights_gib']:>8.1f} {r['kv_max_len_gib']:>7.1f} {r['headroom_gib']:>8.1f} "
            f"{r['needed_gib']:>7.1f} {r['spare_gib']:>+7.1f}  {'yes ' if r['fits'] else 'NO  '}  "
            f"{r['kv_capacity_tokens']:,} tokens ({r['kv_capacity_sequences']:.1f} x {r['max_model_len']:,})"
        )
    return out


def render_report(rep: dict) -> str:
    lines: list[str] = []
    if "gpus" in rep:
        lines.append(f"NVIDIA driver {rep['driver_version'] or '?'} · CUDA {rep['cuda_version'] or '?'} · "
                     f"{len(rep['gpus'])} GPU(s)")  # fmt: skip
        for g in rep["gpus"]:
            power = (f"{g['power_w']:.0f}/{g['power_limit_w']:.0f} W" if g["power_w"] is not None
                     and g["power_limit_w"] is not None else "power ?")  # fmt: skip
            lines.append(
                f"  GPU {g['index']}  {g['name']}  memory {g['memory_used_gib']:.1f} / "
                f"{g['memory_total_gib']:.1f} GiB used  SM {_mhz(g['sm_clock_mhz'], g['sm_clock_max_mhz'])}  "
                f"mem {_mhz(g['mem_clock_mhz'], g['mem_clock_max_mhz'])}"
                f"  {power}"
            )
            for p in g["processes"]:
                used = f"{_gib(p['used_bytes']):.1f} GiB" if p["used_bytes"] is not None else "? GiB"
                lines.append(f"         pid {p['pid']} {p['name'] or '?'} holds {used}")
        m = rep["matched_profile"]
        if m:
            lines.append(f"matching profile: {m}")
        else:
            lines.append("matching profile: none of the shipped profiles —")
            lines += [f"  {x['profile']}: {x['why']}" for x in rep["matches"]]
        if rep.get("fit_measured"):
            f = rep["fit_measured"]
            verdict = "fits" if f["fits"] else "DOES NOT FIT"
            lines.append(
                f"{m} on these GPUs ({f['gpu_memory_gib']:.1f} GiB measured): needs {f['needed_gib']:.1f} of "
                f"{f['budget_gib']:.1f} GiB per GPU — {verdict} ({f['spare_gib']:+.1f} GiB)"
            )
            for s in rep.get("startup", []):
                if not s["ok"]:
                    lines.append(
                        f"  GPU {s['gpu']}: only {s['free_gib']:.1f} GiB free, vLLM wants {s['wanted_gib']:.1f} GiB at "
                        f"start and will refuse to start — held by {', '.join(s['holders']) or 'unknown processes'}"
                    )
        lines.append("")
    lines.append(f"VRAM per GPU, one vLLM instance (GiB): weights/TP + fp8 KV cache for one max-model-len "
                 f"sequence + {rep['headroom_gib']:.1f} headroom vs memory x gpu-memory-utilization")  # fmt: skip
    lines += _fit_rows(rep["fit"])
    return "\n".join(lines)

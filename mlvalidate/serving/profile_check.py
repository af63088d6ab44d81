"""`mlvalidate config check`: the checks on a profile's vLLM args, as typed results.

Checks that always run (no vLLM needed):
* chain ModelArgs: every chain flag is in the effective args (argparse's last-wins view) with
  the chain's value; the profile's merge-rule violations (dropping / changing one) are
  reported here instead of raised;
* revision: --revision is the chain's hf_commit;
* parallelism: tensor x pipeline parallel size = the layout's GPUs per instance; the effective
  layout (tensor, pipeline, data parallel, expert parallel, executor, CPU thread binding) is
  reported for every profile, a chain: null one included;
* --max-num-batched-tokens, where set, >= PoC batch x seq_len (below it PoC returns nothing or
  the engine dies — docs/minimax-m2.md §4); --gpu-memory-utilization within (0, 1].

When vLLM is importable, also (serving.vllm_parser):
* vLLM's own CLI parser (the `serve` / api_server parser) accepts the args, and its serve-args
  validation and engine-args construction pass;
* --tool-call-parser / --reasoning-parser name a parser in vLLM's registries, and
  --attention-backend names one of its attention backends (vLLM's CLI accepts any string for
  these and only fails when the server starts).

`check_profiles` returns one `CheckResult` per profile; the command prints them and decides
the exit code (0 only when every profile is `clean`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..shipped import cite
from .config_files import ProfileError
from .profiles import list_profiles, load_profile
from .vllm_flags import effective_flags, flag_value, parallel_layout, parse_flags
from .vllm_parser import vllm_checks


@dataclass
class CheckResult:
    profile: str
    path: str | None
    is_chain: bool = False
    chain: str | None = None
    passed: list[str] = field(default_factory=list)  # "check: detail" lines that ran and passed
    problems: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    layout: str | None = None  # the effective layout vLLM gets (serving.vllm_flags.parallel_layout)

    @property
    def status(self) -> str:
        if self.problems:
            return "PROBLEMS"
        return "OK" if self.is_chain else "NOT A CHAIN DEPLOYMENT"

    @property
    def clean(self) -> bool:
        """No problems and a chain deployment: the only state that counts as passing."""
        return not self.problems and self.is_chain

    def as_dict(self) -> dict:
        return {"profile": self.profile, "path": self.path, "status": self.status, "chain": self.chain,
                "layout": self.layout, "passed": self.passed, "problems": self.problems, "skipped": self.skipped,
                "warnings": self.warnings}  # fmt: skip



def _int_or_none(v: str | None) -> int | None:
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


def check_profile(name_or_path: str, *, use_vllm: bool = True) -> CheckResult:
    """Run every check on one profile; nothing raises for a bad profile, it becomes a problem."""
    arg = Path(str(name_or_path))
    if arg.suffix in (".yaml", ".yml"):  # a path: name it as load_profile would
        res = CheckResult(profile=arg.parent.name if arg.name == "profile.yaml" else arg.stem, path=str(arg))
    else:
        res = CheckResult(profile=str(name_or_path), path=None)
    try:
        prof = load_profile(name_or_path)
    except ProfileError as e:
        res.problems.append(f"load: {e.one_line()}")
        return res
    res.profile, res.path, res.is_chain = prof.name, str(prof.path) if prof.path else None, prof.is_chain
    args = prof.vllm_args()
    eff = effective_flags(args)
    res.layout = parallel_layout(args, prof.env) + (f", over {prof.nodes} machines" if prof.nodes > 1 else "")

    if prof.chain is not None:
        chain = prof.chain
        res.chain = chain.id
        bad = []
        for want in parse_flags(chain.model_args):
            got = eff.get(want.name)
            if got is None:
                bad.append(f"{want.name} missing")
            elif got.values != want.values:
                bad.append(f"{want.name} is {got.show()!r}, chain pins {want.show()!r}")
        if bad:
            res.problems.append("chain ModelArgs: " + "; ".join(bad))
        else:
            res.passed.append(f"chain ModelArgs: all {len(chain.chain_flags())} present and unchanged ({chain.id})")
        rev = flag_value(args, "--revision")
        if rev != chain.hf_commit:
            res.problems.append(f"revision: --revision is {rev!r}, the chain pins {chain.hf_commit}")
        else:
            res.passed.append(f"revision: --revision {rev}")
        tp = _int_or_none(flag_value(args, "--tensor-parallel-size")) or 1
        pp = _int_or_none(flag_value(args, "--pipeline-parallel-size")) or 1
        per_instance = prof.gpu_count // max(1, prof.instances_per_host)
        if tp * pp != per_instance or per_instance * prof.instances_per_host != prof.gpu_count:
            res.problems.append(
                f"parallelism: tensor {tp} x pipeline {pp} = {tp * pp} GPUs per instance, but the layout has "
                f"{prof.gpu_count} GPUs for {prof.instances_per_host} instance(s)"
            )
        else:
            res.passed.append(f"parallelism: tensor {tp} x pipeline {pp} = {prof.gpu_count // prof.instances_per_host} "
                              f"GPUs per instance, {prof.instances_per_host} instance(s)")  # fmt: skip
    else:
        res.skipped.append("chain ModelArgs: skipped — not a chain deployment (chain: null)")

    batch, seq_len = prof.effective_batch(), prof.seq_len()
    need = batch * seq_len
    mnbt_raw = flag_value(args, "--max-num-batched-tokens")
    if mnbt_raw is None:
        res.passed.append(f"--max-num-batched-tokens: not set (if set, it must be >= batch {batch} x seq_len "
                          f"{seq_len} = {need})")  # fmt: skip
    else:
        mnbt = _int_or_none(mnbt_raw)
        if mnbt is None or mnbt < need:
            res.problems.append(
                f"--max-num-batched-tokens {mnbt_raw} < PoC batch {batch} x seq_len {seq_len} = {need}: PoC returns "
                f"nothing or the engine dies — raise it to >= {need} or lower the PoC batch"
            )
        else:
            res.passed.append(f"--max-num-batched-tokens {mnbt} >= batch {batch} x seq_len {seq_len} = {need}")
    if batch >= 64 and prof.is_chain:
        res.warnings.append(cite(f"PoC batch {batch}: batch 64 hung on every MiniMax rig tested (docs/minimax-m2.md §4)"))
    gmu = flag_value(args, "--gpu-memory-utilization")
    if gmu is not None:
        try:
            ok = 0 < float(gmu) <= 1
        except ValueError:
            ok = False
        if not ok:
            res.problems.append(f"--gpu-memory-utilization {gmu} is not a fraction in (0, 1]")
    q = flag_value(args, "--quantization")
    if prof.is_chain and q not in (None, "fp8"):
        res.warnings.append(f"--quantization {q}: the chain's checkpoint is FP8; another quantization fails validation")

    if use_vllm:
        found = vllm_checks(args, prof.model_id or "model")
        res.passed += found.passed
        res.problems += found.problems
        res.skipped += found.skipped
    else:
        res.skipped.append("vLLM parser: skipped — --no-vllm")
    return res


def check_profiles(profiles: list[str] | None = None, *, use_vllm: bool = True) -> list[CheckResult]:
    """Every check on each profile (default: all under configs/); ProfileError when there is none."""
    names = profiles or list_profiles()
    if not names:
        raise ProfileError("no profiles to check", "pass profile names or paths, or set MLVALIDATE_CONFIGS")
    return [check_profile(n, use_vllm=use_vllm) for n in names]

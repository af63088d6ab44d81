"""vLLM argument lists: flags as argparse sees them, and the merge rule.

A profile can ADD vLLM args but never drop or change a pinned one (the chain's ModelArgs,
--revision, --tensor-parallel-size): `merge_args` raises a ProfileError naming the flag.
`--flag value`, `--flag=value`, `--flag_name` spellings and the `-tp` / `-pp` short forms are
recognised.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .config_files import ProfileError

# flags whose value is fixed by the profile's own fields or by serve_command, never by args
_SERVE_OWNED = ("--model", "--host", "--port")
_SHORT_FLAGS = {"-tp": "--tensor-parallel-size", "-pp": "--pipeline-parallel-size",
                "-dp": "--data-parallel-size", "-q": "--quantization"}  # fmt: skip


@dataclass(frozen=True)
class Flag:
    """One flag of an argument list: canonical name, its value tokens, and how it was written."""

    name: str  # canonical: long form, '-' not '_', e.g. --max-model-len
    values: tuple[str, ...]  # () for a boolean flag
    tokens: tuple[str, ...]  # as written, e.g. ("--max-model-len=180000",)

    @property
    def value(self) -> str | None:
        return " ".join(self.values) if self.values else None

    @property
    def negates(self) -> str | None:
        """`--no-X` -> `--X` (argparse BooleanOptionalAction's negative form), else None."""
        return "--" + self.name[5:] if self.name.startswith("--no-") else None

    def show(self) -> str:
        return self.name if not self.values else f"{self.name} {self.value}"


def _is_flag(token: str) -> bool:
    # "-1", "-0.5" are values; "-" alone is a value (stdin convention)
    return token.startswith("-") and len(token) > 1 and not re.match(r"^-\.?\d", token)


def canonical_flag(token: str) -> str:
    """'--max_model_len' / '--max-model-len=1' / '-tp' -> '--max-model-len' / '--tensor-parallel-size'."""
    name = token.split("=", 1)[0]
    if name in _SHORT_FLAGS:
        return _SHORT_FLAGS[name]
    if name.startswith("--"):
        return "--" + name[2:].replace("_", "-")
    return name


def parse_flags(args: list[str]) -> list[Flag]:
    """Split an argument list into flags. A flag takes every following token that is not itself
    a flag (so `--x v`, `--x v1 v2` and boolean `--x` all work); `--x=v` carries its value."""
    flags: list[Flag] = []
    i = 0
    while i < len(args):
        tok = args[i]
        if not _is_flag(tok):
            raise ProfileError(
                f"vLLM argument {tok!r} does not follow a flag (position {i} of {args!r})",
                "write args as a YAML list of flags and values, e.g. ['--max-num-seqs', '128']",
            )
        name = canonical_flag(tok)
        if "=" in tok and tok.startswith("--"):
            flags.append(Flag(name, (tok.split("=", 1)[1],), (tok,)))
            i += 1
            continue
        j = i + 1
        while j < len(args) and not _is_flag(args[j]):
            j += 1
        flags.append(Flag(name, tuple(args[i + 1 : j]), tuple(args[i:j])))
        i = j
    return flags


def effective_flags(args: list[str]) -> dict[str, Flag]:
    """What argparse ends up with: the last occurrence of each flag wins."""
    return {f.name: f for f in parse_flags(args)}


def flag_value(args: list[str], flag: str) -> str | None:
    """The effective value of `flag` in an argument list (None when absent or boolean)."""
    f = effective_flags(args).get(canonical_flag(flag))
    return f.value if f else None


def merge_args(pinned: list[str], extra: list[str], *, source: str = "profile",
               owner: dict[str, str] | None = None) -> list[str]:  # fmt: skip
    """`pinned` then `extra`, where `extra` may add flags but never drop or change a pinned one.

    owner: flag -> where the pinned value comes from (for the error's hint)."""
    owner = owner or {}
    fixed = {f.name: f for f in parse_flags(pinned)}
    out = list(pinned)
    for f in parse_flags(extra):
        if f.name in _SERVE_OWNED:
            raise ProfileError(
                f"{source} sets {f.name} in its vLLM args",
                "the model, host and port are given to the launcher (serve_command / --model), not in args",
            )
        target = f.negates if f.negates in fixed else f.name
        if target not in fixed:
            out += f.tokens
            continue
        want = fixed[target]
        where = owner.get(target, "the chain's ModelArgs")
        if target != f.name:  # --no-X against a pinned --X
            raise ProfileError(
                f"{source} drops {target} ({' '.join(f.tokens)}), which is pinned by {where}",
                f"remove {f.name} from the profile's args: a profile can add vLLM args, never drop a chain one",
            )
        if f.values != want.values:
            if target in ("--tensor-parallel-size", "--pipeline-parallel-size"):
                field = target[2:].replace("-", "_")
                hint = f"set `{field}: N` in the profile instead of {f.name}"
            else:
                hint = (f"remove {f.name} from the profile's args "
                        "(a profile can add vLLM args, never change one the chain fixes)")
            raise ProfileError(
                f"{source} changes {target} ({' '.join(f.tokens)!r}), which is pinned to {want.show()!r} by {where}",
                hint,
            )
        # same flag, same value: already in `pinned`, not repeated
    return out



def parallel_layout(args: list[str], env: dict | None = None) -> str:
    """The layout an argument list gives vLLM, in one line: tensor x pipeline (x data) parallel
    workers, expert parallelism, the executor, and the CPU thread binding where the env sets it."""
    eff = effective_flags(args)

    def size(flag: str) -> str:
        f = eff.get(flag)
        return f.value if f is not None and f.value else "1"

    tp, pp, dp = size("--tensor-parallel-size"), size("--pipeline-parallel-size"), size("--data-parallel-size")
    try:
        workers = f" = {int(tp) * int(pp) * int(dp)} worker(s)"
    except ValueError:
        workers = ""
    out = f"tensor {tp} x pipeline {pp}" + (f" x data {dp}" if dp != "1" else "") + workers
    out += ", expert parallel" if "--enable-expert-parallel" in eff else ""
    backend = eff.get("--distributed-executor-backend")
    out += f", executor {backend.value}" if backend is not None and backend.value else ", vLLM's default executor"
    bind = (env or {}).get("VLLM_CPU_OMP_THREADS_BIND")
    return out + (f", VLLM_CPU_OMP_THREADS_BIND={bind}" if bind is not None else "")

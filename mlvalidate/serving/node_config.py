"""`mlvalidate config check --node-config FILE`: a host's real Gonka node-config.json against the
chain's ModelArgs and the matching profile.

The file is the network node's admin API shape (docs/chain-api.md, last section): a JSON list of
node entries, or one entry, each
`{"id", "host", "inference_port", "poc_port", "max_concurrent", "models": {MODEL_ID: {"args": [...]}}}`.
Every entry that serves a chain model (a model id of a chain definition under configs/chain/) is
checked:

* ERROR — the chain registers different args: a chain ModelArg missing or with another value
  (e.g. `--reasoning-parser minimax_m2` where the chain says `minimax_m2_append_think`, or
  `--max-model-len 131072` where it says 180000), `--revision` not the chain's commit, or
  `--max-num-batched-tokens` below PoC batch x seq_len (PoC returns nothing or the engine dies);
* WARNING — operator choice: an arg, or a node field (max_concurrent, ports), that differs from
  the matching profile, is missing from it or is only in it; `--revision` not set at all.

The matching profile is `--profile P`, else the one chain profile whose tensor_parallel_size is
the entry's `--tensor-parallel-size` (default 1). None or several → an ERROR that lists them and
asks for --profile (the chain args are still compared).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MlvalidateError
from .config_files import ProfileError
from .profiles import NODE_DEFAULTS, Profile, list_profiles, load_profile
from .vllm_flags import Flag, effective_flags, parse_flags

# why a chain-arg difference matters, where the documents say (docs/minimax-m2.md §4, §4.1)
_HINTS = {
    ("--reasoning-parser", "minimax_m2"): "the plain minimax_m2 reasoning parser is broken for M2.5+",
}


class NodeConfigError(MlvalidateError):
    """The node-config file cannot be read, is not the admin API shape, or has no chain model."""


@dataclass
class EntryCheck:
    entry: str  # the entry's id (or its position)
    host: str | None
    model: str
    profile: str | None = None
    profile_why: str = ""
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    ok: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"entry": self.entry, "host": self.host, "model": self.model, "profile": self.profile,
                "profile_why": self.profile_why, "errors": self.errors, "warnings": self.warnings,
                "ok": self.ok, "notes": self.notes}  # fmt: skip


@dataclass
class NodeConfigCheck:
    file: str
    entries: list[EntryCheck]

    @property
    def n_errors(self) -> int:
        return sum(len(e.errors) for e in self.entries)

    @property
    def n_warnings(self) -> int:
        return sum(len(e.warnings) for e in self.entries)

    def as_dict(self) -> dict:
        return {"node_config": self.file, "errors": self.n_errors, "warnings": self.n_warnings,
                "entries": [e.as_dict() for e in self.entries]}  # fmt: skip


def read_node_config(path: str | Path) -> list[dict]:
    """The node entries of a node-config.json (a list of entries, or one entry)."""
    from ..jsonio import JsonProblem, loads

    p = Path(path)
    try:
        data = p.read_bytes()
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        raise NodeConfigError(f"cannot read node-config {p}: {getattr(e, 'strerror', None) or e}",
                              "pass the path of the host's node-config.json") from None
    try:
        doc = loads(data)
    except JsonProblem as e:
        raise NodeConfigError(f"node-config {p} is not JSON the check can use: {e}",
                              "fix the file (a JSON list of node entries, or one entry)") from None
    entries = doc if isinstance(doc, list) else [doc]
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not isinstance(e.get("models"), dict):
            raise NodeConfigError(f"node-config {p}: entry {i} is not a node entry with a `models` object",
                                  'expected {"id", "host", ..., "models": {MODEL_ID: {"args": [...]}}}')  # fmt: skip
    return entries


def _chain_profiles() -> list[Profile]:
    out = []
    for name in list_profiles():
        try:
            p = load_profile(name)
        except ProfileError:
            continue  # `config check PROFILE` reports a broken profile; here it cannot match
        if p.chain is not None:
            out.append(p)
    return out


def _choose_profile(res: EntryCheck, eff: dict[str, Flag], candidates: list[Profile]) -> Profile | None:
    f = eff.get("--tensor-parallel-size")
    tp_text = f.value if f else "1"
    try:
        tp = int(tp_text or "")
    except ValueError:
        res.errors.append(f"--tensor-parallel-size {tp_text!r} is not an integer")
        return None
    given = f"--tensor-parallel-size {tp}" if f else "no --tensor-parallel-size (vLLM's default 1)"
    same = [p for p in candidates if p.tensor_parallel_size == tp]
    if len(same) == 1:
        res.profile, res.profile_why = same[0].name, f"{given}: the only profile with TP {tp}"
        return same[0]
    known = ", ".join(f"{p.name} (TP {p.tensor_parallel_size})" for p in candidates) or "none"
    if same:
        res.profile_why = f"{given} matches {', '.join(p.name for p in same)}"
        res.errors.append(f"profile: ambiguous — {given} matches {', '.join(p.name for p in same)}; "
                          f"say which with --profile {'|'.join(p.name for p in same)}")  # fmt: skip
    else:
        res.profile_why = f"{given} matches no profile"
        res.errors.append(f"profile: no profile has TP {tp} — pass --profile P (known: {known})")
    return None


def _compare_chain(res: EntryCheck, eff: dict[str, Flag], prof_chain) -> None:
    bad = 0
    for want in parse_flags(prof_chain.model_args):
        got = eff.get(want.name)
        if got is None:
            bad += 1
            res.errors.append(f"{want.show()} missing: the chain registers it ({prof_chain.id} ModelArgs)")
        elif got.values != want.values:
            bad += 1
            hint = _HINTS.get((want.name, got.value or ""))
            res.errors.append(f"{got.show()}: the chain registers {want.show()!r}"
                              + (f" ({hint})" if hint else ""))  # fmt: skip
    if not bad:
        res.ok.append(f"chain ModelArgs: all {len(prof_chain.chain_flags())} present and unchanged ({prof_chain.id})")
    rev = eff.get("--revision")
    if rev is None:
        res.warnings.append(f"--revision not set: vLLM loads the hub's default branch, not the chain's commit "
                            f"{prof_chain.hf_commit}")  # fmt: skip
    elif rev.value != prof_chain.hf_commit:
        res.errors.append(f"--revision {rev.value}: the chain pins {prof_chain.hf_commit}")
    else:
        res.ok.append(f"--revision {rev.value}")


def _compare_layout(res: EntryCheck, eff: dict[str, Flag], entry: dict, prof: Profile) -> None:
    assert prof.chain is not None
    skip = set(prof.chain.chain_flags()) | {"--revision"}
    want = {k: v for k, v in effective_flags(prof.vllm_args()).items() if k not in skip}
    have = {k: v for k, v in eff.items() if k not in skip}
    for name in [*want, *(k for k in have if k not in want)]:
        w, h = want.get(name), have.get(name)
        if w and h and w.values == h.values:
            res.ok.append(f"{h.show()} as in profile {prof.name}")
        elif w and h:
            res.warnings.append(f"{h.show()}: profile {prof.name} has {w.show()!r} (operator choice)")
        elif h:
            res.warnings.append(f"{h.show()}: not in profile {prof.name} (operator choice)")
        else:
            res.warnings.append(f"{w.show()} from profile {prof.name} is not set here (operator choice)")
    node = {**NODE_DEFAULTS, **prof.node}
    for k in NODE_DEFAULTS:
        if k in entry and entry[k] != node[k]:
            res.warnings.append(f"{k} {entry[k]!r}: profile {prof.name} has {node[k]} (operator choice)")
    for k, v in prof.env.items():
        res.notes.append(f"profile {prof.name} sets env {k}={v}; node-configs carry no env — MLNode's "
                         "docker-compose must set it")  # fmt: skip
    mnbt = eff.get("--max-num-batched-tokens")
    if mnbt is not None:
        need = prof.effective_batch() * prof.seq_len()
        try:
            low = int(mnbt.value or "") < need
        except ValueError:
            low = True
        if low:
            res.errors.append(f"{mnbt.show()} < PoC batch {prof.effective_batch()} x seq_len {prof.seq_len()} = "
                              f"{need}: PoC returns nothing or the engine dies")  # fmt: skip


def check_node_config(path: str | Path, *, profile: str | None = None) -> NodeConfigCheck:
    """Check every chain-model entry of a node-config.json (module docstring)."""
    entries = read_node_config(path)
    chosen = load_profile(profile) if profile else None
    if chosen is not None and chosen.chain is None:
        raise NodeConfigError(f"profile {chosen.name} is not a chain deployment (chain: null)",
                              "pass a chain profile with --profile")  # fmt: skip
    profiles = [chosen] if chosen else _chain_profiles()
    chains = {p.chain.model_id: p.chain for p in profiles if p.chain is not None}
    if not chains:
        raise NodeConfigError("no chain profile to compare with", "check configs/ (config list)")
    out = []
    for i, entry in enumerate(entries):
        for model, body in entry["models"].items():
            if model not in chains:
                continue
            res = EntryCheck(entry=str(entry.get("id", f"#{i}")), host=entry.get("host"), model=model)
            out.append(res)
            args = body.get("args") if isinstance(body, dict) else None
            if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
                res.errors.append(f"models[{model!r}].args is not a list of strings")
                continue
            try:
                eff = effective_flags(args)
            except ProfileError as e:
                res.errors.append(f"args: {e.one_line()}")
                continue
            _compare_chain(res, eff, chains[model])
            if chosen is not None:
                res.profile, res.profile_why = chosen.name, f"--profile {chosen.name}"
                prof = chosen
            else:
                prof = _choose_profile(res, eff, [p for p in profiles if p.chain and p.chain.model_id == model])
            if prof is not None:
                _compare_layout(res, eff, entry, prof)
    if not out:
        found = sorted({m for e in entries for m in e["models"]})
        raise NodeConfigError(f"node-config {path}: no entry serves {', '.join(sorted(chains))} "
                              f"(models there: {', '.join(found) or 'none'})",
                              "check the model id in `models` (it is the chain's model id)")  # fmt: skip
    return NodeConfigCheck(file=str(path), entries=out)


def node_config_text(check: NodeConfigCheck) -> str:
    """The text report: per entry the matching profile and why, then ERROR / WARN / note / ok lines."""
    lines = []
    for e in check.entries:
        host = f" (host {e.host})" if e.host else ""
        lines.append(f"node-config {check.file}: entry {e.entry}{host}, model {e.model}")
        lines.append(f"  profile: {e.profile or '(none)'} — {e.profile_why}")
        lines += [f"  ERROR {x}" for x in e.errors]
        lines += [f"  WARN  {x}" for x in e.warnings]
        lines += [f"  note  {x}" for x in e.notes]
        lines += [f"  ok    {x}" for x in e.ok]
    lines.append(f"{check.n_errors} error(s) (the chain registers different args, or PoC breaks), "
                 f"{check.n_warnings} warning(s) (operator choices)")  # fmt: skip
    return "\n".join(lines)

"""What a nonce costs: `compare --prices FILE` and the figures that need no price.

The prices file (YAML, read strictly like every other file: an unknown key, a price that is not a
positive finite number or a GPU model that is not text is one line naming the file and the key):

    gpu_hour_usd:        # $ per GPU-hour of rental, by GPU model
      H100: 2.49         # matched against the runs' GPU model names ("NVIDIA H100 80GB HBM3"):
      A100 80GB: 1.39    # every word of the key must be a word of the name (case apart; "-" and "_"
      B200: 5.99         # split words); the key with the most words wins, a tie of prices is refused
    kwh_usd: 0.12        # $ per kWh of the GPUs' energy

Per run: nonces per GPU-hour (rate x 3600 / GPUs) and per kWh (3.6e6 J / joules per nonce) always;
with prices, $ per million nonces — the rental (GPU-hour price x GPUs / nonces per hour) and the
energy (kWh per million nonces x the kWh price) apart, and their sum — and nonces per $ for each.
A part whose price is given but whose figure is missing (no energy measured: a remote node) leaves
the sum unknown rather than cheaper than it is.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MlvalidateError
from ..serving.energy import J_PER_KWH

_KEYS = {"gpu_hour_usd", "kwh_usd"}


class PricesError(MlvalidateError):
    """The --prices file cannot be used."""


@dataclass(frozen=True)
class Prices:
    path: str
    gpu_hour_usd: dict[str, float] = field(default_factory=dict)
    kwh_usd: float | None = None

    def describe(self) -> str:
        parts = [f"{k} ${v:g}/GPU-hour" for k, v in self.gpu_hour_usd.items()]
        if self.kwh_usd is not None:
            parts.append(f"${self.kwh_usd:g}/kWh")
        return f"{self.path}: " + ", ".join(parts)


def _positive(v) -> bool:
    """A positive finite number (an integer too large for a float is not one)."""
    return (type(v) is float and math.isfinite(v) or type(v) is int and v < 2**1000) and v > 0


def read_prices(path: str | Path) -> Prices:
    """The prices file, strictly (module docstring)."""
    from ..serving.config_files import read_yaml

    p = Path(path)
    doc = read_yaml(p, "prices file")
    fix = "see `mlvalidate compare --help` for the layout"
    unknown = sorted(set(map(str, doc)) - _KEYS)
    if unknown:
        raise PricesError(f"prices file {p} has unknown key(s) {', '.join(unknown)}", f"known keys: gpu_hour_usd, kwh_usd")
    hours = doc.get("gpu_hour_usd") or {}
    if not isinstance(hours, dict):
        raise PricesError(f"prices file {p}: `gpu_hour_usd` must be a mapping of GPU model to $ per GPU-hour", fix)
    for k, v in hours.items():
        if not isinstance(k, str) or not k.strip() or not k.isprintable() or len(k) > 100:
            raise PricesError(f"prices file {p}: `gpu_hour_usd` key {str(k)[:40]!r} is not a GPU model name", fix)
        if not _positive(v):
            raise PricesError(f"prices file {p}: `gpu_hour_usd.{k}` must be a positive number of $, got {str(v)[:40]!r}",
                              fix)
    kwh = doc.get("kwh_usd")
    if kwh is not None and not _positive(kwh):
        raise PricesError(f"prices file {p}: `kwh_usd` must be a positive number of $, got {str(kwh)[:40]!r}", fix)
    if not hours and kwh is None:
        raise PricesError(f"prices file {p} sets no price", "give gpu_hour_usd (by GPU model), kwh_usd, or both")
    return Prices(str(p), {k.strip(): float(v) for k, v in hours.items()}, float(kwh) if kwh is not None else None)


def _words(text: str) -> set[str]:
    return {w for w in re.split(r"[\s_\-/]+", text.lower()) if w}


def gpu_price(prices: Prices, model: str | None) -> tuple[float | None, str]:
    """($ per GPU-hour, the key that priced it) or (None, why not)."""
    if not model:
        return None, "no GPU model"
    if "," in model:
        return None, f"mixed GPU models ({model})"
    words = _words(model)
    hits = [(len(_words(k)), k, v) for k, v in prices.gpu_hour_usd.items() if _words(k) <= words]
    if not hits:
        return None, f"no price for {model} in {Path(prices.path).name}"
    best = max(n for n, _, _ in hits)
    top = {v for n, _, v in hits if n == best}
    if len(top) > 1:
        return None, f"{model} matches several prices ({', '.join(k for n, k, _ in hits if n == best)})"
    return top.pop(), next(k for n, k, _ in hits if n == best)


def run_costs(rate: float | None, gpus: int | None, joules_per_nonce: float | None, model: str | None,
              prices: Prices | None) -> dict:
    """One run's figures (nonces/s in, None where a figure cannot be had), module docstring."""
    per_gpu = rate / gpus if rate and gpus else None
    out = {"per_gpu": per_gpu, "per_gpu_hour": per_gpu * 3600 if per_gpu else None,
           "per_kwh": J_PER_KWH / joules_per_nonce if joules_per_nonce else None, "joules_per_nonce": joules_per_nonce,
           "rental_usd_per_m": None, "energy_usd_per_m": None, "usd_per_m": None, "per_usd": None,
           "per_usd_rental": None, "per_usd_energy": None, "why_usd": None}
    if prices is None:
        return out
    why = []
    if prices.gpu_hour_usd:
        usd, key = gpu_price(prices, model)
        if usd is not None and rate and gpus:
            out["rental_usd_per_m"] = usd * gpus / (rate * 3600) * 1e6
            out["gpu_price_key"] = key
        else:
            why.append(key if usd is None else "no GPU count or rate")
    if prices.kwh_usd is not None:
        if joules_per_nonce:
            out["energy_usd_per_m"] = joules_per_nonce * 1e6 / J_PER_KWH * prices.kwh_usd
        else:
            why.append("no energy measured")
    parts = [out["rental_usd_per_m"], out["energy_usd_per_m"]]
    out["per_usd_rental"], out["per_usd_energy"] = (1e6 / x if x else None for x in parts)
    asked = [bool(prices.gpu_hour_usd), prices.kwh_usd is not None]
    if not why and all(p is not None for p, a in zip(parts, asked) if a):
        out["usd_per_m"] = sum(p for p in parts if p is not None)
        out["per_usd"] = 1e6 / out["usd_per_m"]
    out["why_usd"] = "; ".join(why) or None
    return out

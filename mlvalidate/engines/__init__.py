"""Systems under test: each answers "the PoC vectors for these nonces with these params"."""

from .base import Engine, EngineResult, PocParams

__all__ = ["Engine", "EngineResult", "PocParams"]

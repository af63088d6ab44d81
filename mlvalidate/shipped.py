"""The data that ships with mlvalidate: the golden references (artifacts/) and the chain and
hardware profiles (configs/). In the repository they stay top-level, where users know them;
the package reaches them through mlvalidate/data/ (links in a checkout, real files in a wheel),
read with importlib.resources so an installed wheel and an editable checkout behave alike."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def _folder(name: str) -> Path:
    return Path(str(resources.files("mlvalidate").joinpath("data", name)))


ARTIFACTS_DIR = _folder("artifacts")
CONFIGS_DIR = _folder("configs")

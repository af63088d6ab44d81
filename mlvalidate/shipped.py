"""The data that ships with mlvalidate: the golden references (artifacts/), the chain and
hardware profiles (configs/) and our own account of the spec, the model and the chain API
(docs/, cited by section in what the commands print). In the repository they stay top-level,
where users know them; the package reaches them through mlvalidate/data/ (links in a checkout,
real files in a wheel), read with importlib.resources so an installed wheel and an editable
checkout behave alike."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path


def _folder(name: str) -> Path:
    return Path(str(resources.files("mlvalidate").joinpath("data", name)))


ARTIFACTS_DIR = _folder("artifacts")
CONFIGS_DIR = _folder("configs")
DOCS_DIR = _folder("docs")
_CITED = re.compile(r"(?<![\w/.])docs/([\w.-]+\.md)")


def cite(text: str) -> str:
    """`text` with each document of docs/ it cites made the path of that document in this install (a
    wheel's site-packages/mlvalidate/data/docs/, a checkout's docs/): what a user can open. A name
    this install does not hold is left as written."""

    def path(m: re.Match) -> str:
        doc = DOCS_DIR / m.group(1)
        return str(doc.resolve()) if doc.is_file() else m.group(0)

    return _CITED.sub(path, text)

"""Read LAMA's T-REx facts in the official release layout.

The layout (https://github.com/facebookresearch/LAMA, archive ``data.zip``): a ``relations.jsonl``
with one relation per line (``relation``, ``template`` such as ``"[X] was born in [Y] ."``) and a
``TREx/<relation>.jsonl`` per relation with one fact per line (``sub_label``, ``obj_label``,
``uuid``, ...). The source is a folder holding that layout (at any depth), a zip of it, or an
``http(s)`` URL of such a zip, downloaded once into a cache folder.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

LAMA_URL = "https://dl.fbaipublicfiles.com/LAMA/data.zip"
FACT_FIELDS = ("relation", "template", "sub_label", "obj_label", "uuid")


def cache_dir() -> Path:
    """Where downloaded archives are kept: ``$LM_EVAL_CALIBRATION_CACHE`` or ~/.cache/..."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return Path(os.environ.get("LM_EVAL_CALIBRATION_CACHE", default / "lm_eval_calibration"))


def fetch(url: str) -> Path:
    """The cached copy of ``url``, downloaded first if absent (atomically: no partial files)."""
    target = cache_dir() / PurePosixPath(url.split("?")[0]).name
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310
                shutil.copyfileobj(response, tmp)
        except OSError as err:
            os.unlink(tmp.name)
            raise OSError(
                f"could not download LAMA from {url} ({err}); pass a local folder or zip "
                "of the LAMA data instead"
            ) from err
    os.replace(tmp.name, target)
    return target


class _Layout:
    """The .jsonl files of a folder or zip, read one at a time (LAMA's zip is large)."""

    def __init__(self, source: Path) -> None:
        self.source = source
        if source.is_dir():
            self.names = sorted(p.relative_to(source).as_posix() for p in source.rglob("*.jsonl"))
        elif zipfile.is_zipfile(source):
            with zipfile.ZipFile(source) as archive:
                self.names = sorted(n for n in archive.namelist() if n.endswith(".jsonl"))
        else:
            raise ValueError(f"LAMA source {source} is neither a folder nor a zip file")

    def read(self, name: str) -> list[dict[str, Any]]:
        if self.source.is_dir():
            content = (self.source / name).read_bytes()
        else:
            with zipfile.ZipFile(self.source) as archive:
                content = archive.read(name)
        return _jsonl(name, content)


def _jsonl(name: str, content: bytes) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(content.decode("utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{name}:{number}: not valid JSON ({err.msg})") from err
    return rows


def read_trex(source: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All T-REx facts of ``source`` as dicts with ``FACT_FIELDS``, relation by relation.

    Relations listed in relations.jsonl without a TREx file (LAMA lists Google-RE ones too) are
    skipped; a TREx file whose relation has no template is an error.
    """
    source = str(source)
    path = fetch(source) if source.startswith(("http://", "https://")) else Path(source)
    if not path.exists():
        raise FileNotFoundError(f"LAMA source {path} does not exist")
    layout = _Layout(path)
    relation_files = [n for n in layout.names if PurePosixPath(n).name == "relations.jsonl"]
    if not relation_files:
        raise ValueError(f"LAMA source {path} has no relations.jsonl")
    root = PurePosixPath(relation_files[0]).parent
    templates = {r["relation"]: r["template"] for r in layout.read(relation_files[0])}
    trex = [n for n in layout.names if PurePosixPath(n).parent == root / "TREx"]
    if not trex:
        raise ValueError(f"LAMA source {path} has no TREx/<relation>.jsonl files")
    facts: list[dict[str, Any]] = []
    for name in trex:
        relation = PurePosixPath(name).stem
        if relation not in templates:
            raise ValueError(f"{name}: relation {relation} has no template in relations.jsonl")
        for number, row in enumerate(layout.read(name), start=1):
            facts.append(
                {
                    "relation": relation,
                    "template": templates[relation],
                    "sub_label": row.get("sub_label"),
                    "obj_label": row.get("obj_label"),
                    "uuid": str(row.get("uuid", f"{relation}-{number}")),
                }
            )
    return facts

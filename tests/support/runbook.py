"""The repository's runbook.yaml, and copies of it with some sections replaced."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def write_runbook(folder: Path, **sections: dict) -> Path:
    """A copy of the repo's runbook.yaml with some top-level sections merged/replaced."""
    data = yaml.safe_load((REPO / "runbook.yaml").read_text())
    for key, value in sections.items():
        if isinstance(data.get(key), dict) and isinstance(value, dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    path = folder / "runbook.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path

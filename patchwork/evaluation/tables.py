"""Paper-style tables as Markdown text and JSON files."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path


def markdown_table(rows: Sequence[Mapping[str, object]], columns: Sequence[str], floats: str = ".1f") -> str:
    """Render ``rows`` as a GitHub Markdown table with the given column order."""

    def cell(value: object) -> str:
        return format(value, floats) if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: str | os.PathLike[str], payload: object) -> Path:
    """Write ``payload`` as indented JSON atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
        json.dump(payload, handle, indent=2)
        handle.write("\n")
    os.replace(handle.name, path)
    return path

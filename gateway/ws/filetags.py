"""`<file:/path>` tags in an agent's answer: parsed into the `files` list of a `result` frame."""

from __future__ import annotations

import os
import re
from typing import TypedDict

_TAG = re.compile(r"<file:([^<>\x00\n]+)>")
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".svg", ".heic"})


class FileRef(TypedDict):
    path: str
    name: str
    is_image: bool


def parse_file_tags(text: str) -> list[FileRef]:
    """Every distinct `<file:…>` path in `text`, in order of first appearance."""
    out: list[FileRef] = []
    seen: set[str] = set()
    for match in _TAG.finditer(text):
        path = match.group(1).strip()
        if not path or path in seen:
            continue
        seen.add(path)
        name = os.path.basename(path.rstrip("/")) or path
        out.append({"path": path, "name": name, "is_image": os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS})
    return out

"""The rendered pictures match their committed Graphviz sources.

Readers see the PNG/SVG; contributors edit the `.dot`. `hack/pictures.sh` renders both and writes
`sources.sha256`; if a source changes without a new render, the picture in the docs is stale.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

PICTURES = Path(__file__).resolve().parents[3] / "docs" / "pictures"


def test_every_source_is_rendered_from_its_current_text() -> None:
    stamp = dict(
        reversed(line.split(maxsplit=1)) for line in (PICTURES / "sources.sha256").read_text().splitlines()
    )
    sources = sorted(PICTURES.glob("*.dot"))
    assert sources, "no Graphviz sources under docs/pictures"
    for src in sources:
        digest = hashlib.sha256(src.read_bytes()).hexdigest()
        stale = f"{src.name} changed since it was rendered: run hack/pictures.sh"
        assert stamp.get(src.name) == digest, stale
        for ext in (".svg", ".png"):
            out = src.with_suffix(ext)
            assert out.is_file() and out.stat().st_size > 1000, f"{out.name} missing: run hack/pictures.sh"

"""End to end with the shipped model: ingest sample_images/, search a word of a caption."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

import capindex
from capindex.cli import main
from helpers import check_library

DEFAULT_MODEL = Path(capindex.__file__).resolve().parent / "weights" / "default.pt"

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.exists(),
                                reason="the shipped model capindex/weights/default.pt is not there yet")


def test_ingest_then_search_with_the_shipped_model(samples, capindex_home):
    from whoosh.analysis import STOP_WORDS

    result = CliRunner().invoke(main, ["ingest", str(samples), "--device", "cpu", "--workers", "1",
                                       "--batch-size", "4"])  # the real Captioner.load()
    assert result.exit_code == 0, result.output
    rows = check_library(capindex_home)
    assert len(rows) == 5
    for row in rows.values():
        assert row["status"] == "ok" and row["caption"] and row["tags"]
        assert row["model_id"] and len(row["weights_hash"]) == 64

    def words(caption: str) -> set[str]:
        return {w for w in re.findall(r"[a-z]+", caption.lower())
                if len(w) > 2 and w not in STOP_WORDS}

    counts = Counter(w for row in rows.values() for w in words(row["caption"]))
    # the rarest caption word of any image, and that image
    word, path = min((counts[w], w, p) for p, r in rows.items() for w in words(r["caption"]))[1:]
    result = CliRunner().invoke(main, ["search", word, "--json"])
    assert result.exit_code == 0
    found = [hit["path"] for hit in json.loads(result.stdout)]
    assert path in found[:3], (word, path, found)

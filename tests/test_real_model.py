"""End to end with the shipped model: ingest sample_images/, search a word of a caption."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import check_library

import capindex
from capindex.cli import main

DEFAULT_MODEL = Path(capindex.__file__).resolve().parent / "weights" / "default.pt"

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.exists(),
                                reason="the shipped model capindex/weights/default.pt is not there yet")


def test_ingest_then_search_with_the_shipped_model(samples, capindex_home):
    from capindex.store.keyword_query import STOP_WORDS

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

    # Found also by words a caption may lack: detected objects, ImageNet tags and their
    # WordNet words.
    for query, photo in [("cat", "chelsea.jpg"), ("animal", "chelsea.jpg"), ("pet", "chelsea.jpg"),
                         ("coffee", "coffee.jpg"), ("cup", "coffee.jpg")]:
        result = CliRunner().invoke(main, ["search", query, "--json", "--mode", "keyword"])
        assert result.exit_code == 0, result.output
        first = json.loads(result.stdout)[0]
        assert Path(first["path"]).name == photo, (query, first)
    cat = rows[str(samples / "chelsea.jpg")]
    assert "cat" in {o["label"] for o in cat["objects"]} and cat["detector_id"]
    assert cat["alt_captions"] and cat["caption"] not in cat["alt_captions"]

    # By meaning, and by likeness to a photo (its stored vector), with the shipped embedding.
    assert cat["embedding"] and cat["embedding_model"].startswith("embedding@")
    assert "cat" in cat["concepts"]  # the embedding's words: found by `concepts:cat` below
    result = CliRunner().invoke(main, ["search", "concepts:cat", "--json", "--mode", "keyword"])
    assert result.exit_code == 0, result.output
    assert Path(json.loads(result.stdout)[0]["path"]).name == "chelsea.jpg"
    # A short query's vector score is its cosine less the photo's typical best cosine to any
    # concept word (the hubness correction): above 0, "cat" is one of this photo's best words.
    for args, least in ((["a cat", "--mode", "semantic"], 0.0),
                        (["--like", str(samples / "chelsea.jpg")], 0.3)):
        result = CliRunner().invoke(main, ["search", *args, "--json"])
        assert result.exit_code == 0, result.output
        first = json.loads(result.stdout)[0]
        assert Path(first["path"]).name == "chelsea.jpg", (args, first)
        assert first["vector_score"] > least, (args, first)


def test_a_run_with_nothing_to_caption_loads_no_model(samples, capindex_home):
    result = CliRunner().invoke(main, ["ingest", str(samples), "--device", "cpu", "--workers", "0"])
    assert result.exit_code == 0, result.output
    # Again, in a fresh process: every file is unchanged, so neither torch nor the model
    # is loaded (the run took 2.8 s with them, 0.9 s without, over 600 files).
    code = ("import sys\nfrom capindex.cli import main\n"
            "try:\n    main(['ingest', sys.argv[1]])\nexcept SystemExit as end:\n"
            "    assert end.code == 0, end.code\n"
            "print([m for m in ('torch', 'capindex.model.captioner') if m in sys.modules])\n")
    again = subprocess.run([sys.executable, "-c", code, str(samples)], capture_output=True,
                           text=True, env={**os.environ, "CAPINDEX_HOME": str(capindex_home)})
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "[]"
    assert "0 new, 5 unchanged" in again.stderr

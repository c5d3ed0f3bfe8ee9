"""Objects and broader words in the library: a library from before them gains them on its
next ingest without captioning again; a detector failing on one image costs that image's
objects only; search finds a photo by a broader word."""

from __future__ import annotations

import json
import sqlite3

import pyarrow.parquet as pq
from helpers import check_library, make_whoosh_era

import capindex
from capindex.model.detector import Detection
from capindex.pipeline.detect import DeferredDetector, load_detector
from capindex.pipeline.report import Events
from capindex.store.schema import SCHEMA_VERSION

NEW_COLUMNS = ("alt_captions", "objects", "detector_id", "embedding", "embedding_model")


class FakeDetectorModel:
    """Finds one cat in every image, except in images it is told to fail on."""

    input_size = 416

    def __init__(self, fail_widths=()):
        self.fail_widths = set(fail_widths)
        self.calls = 0

    def detect_batch(self, pixels, ratios, sizes):
        self.calls += 1
        if any(w in self.fail_widths for w, _ in sizes):
            raise RuntimeError("the model broke")
        return [[Detection("cat", 0.9, (0.0, 0.0, float(w), float(h)))] for w, h in sizes]


def fake_detector(model=None) -> DeferredDetector:
    return DeferredDetector("fake-detector@1", lambda: model or FakeDetectorModel())


def downgrade_to_schema_1(root) -> None:
    """Make `root` look as a library written before objects and vectors: the catalogue
    without their columns, an index without their fields, Parquet parts of version 1."""
    db = sqlite3.connect(root / "catalog.sqlite")
    db.execute("DROP INDEX ix_images_plan")  # newer than those columns, and made of some
    for column in NEW_COLUMNS:
        db.execute(f'ALTER TABLE images DROP COLUMN "{column}"')
    db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    make_whoosh_era(root)  # the index of that time: Whoosh's, with fewer fields
    for part in (root / "parquet").glob("*.parquet"):
        table = pq.read_table(part).drop_columns(list(NEW_COLUMNS))
        pq.write_table(table.replace_schema_metadata({"capindex.schema_version": "1"}), part)


def test_an_older_library_gains_objects_without_captioning_again(tmp_path, photos, fake):
    lib = capindex.Library(tmp_path / "lib")
    lib.ingest([photos], captioner=fake, objects=False, workers=0)
    before = {r["path"]: r for r in json.loads(_jsonl(lib))}
    downgrade_to_schema_1(lib.root)
    batches = len(fake.batches)

    summary = lib.ingest([photos], captioner=fake, detector=fake_detector(), workers=0)
    assert (summary.enriched, summary.captioned, summary.new) == (4, 0, 0)
    assert len(fake.batches) == batches  # the captioner was not called
    rows = check_library(lib.root)  # the index and the mirror were rebuilt with the new fields
    for path, row in rows.items():
        assert row["caption"] == before[path]["caption"] and row["id"] == before[path]["id"]
        assert [o["label"] for o in row["objects"]] == ["cat"]
        assert row["detector_id"] == "fake-detector@1"
    assert pq.read_table(next((lib.root / "parquet").glob("*.parquet"))).schema.metadata[
        b"capindex.schema_version"] == str(SCHEMA_VERSION).encode()
    # found by the object and by its broader words
    assert len(lib.search("objects:cat", 10, mode="keyword")) == 4
    assert len(lib.search("pet", 10, mode="keyword")) == 4
    again = lib.ingest([photos], captioner=fake, detector=fake_detector(), workers=0)
    assert (again.enriched, again.unchanged) == (0, 4)


def test_a_detector_failing_on_one_image_loses_only_its_objects(tmp_path, photos, fake):
    from fakes import solid

    solid(photos / "wide.jpg", (10, 200, 10), size=(77, 48))
    notes = []

    class Record(Events):
        def notice(self, text):
            notes.append(text)

    lib = capindex.Library(tmp_path / "lib")
    model = FakeDetectorModel(fail_widths={77})
    summary = lib.ingest([photos], captioner=fake, detector=fake_detector(model), events=Record(),
                         workers=0, batch_size=8)
    assert (summary.new, summary.failed) == (5, 0)
    rows = check_library(lib.root)
    wide = rows[str(photos / "wide.jpg")]
    assert wide["caption"] and wide["objects"] is None and wide["detector_id"] is None
    assert all(r["objects"] for p, r in rows.items() if not p.endswith("wide.jpg"))
    assert notes == [f"{photos / 'wide.jpg'}: object detection failed (RuntimeError: the model broke)"]
    # the next run tries that image again, and only it
    model.fail_widths.clear()
    again = lib.ingest([photos], captioner=fake, detector=fake_detector(model), workers=0)
    assert (again.enriched, again.captioned) == (1, 0)


def test_search_finds_the_sample_cat_by_a_broader_word_of_its_detected_object(cli, samples):
    assert load_detector().detector_id.startswith("yolox-nano@")
    result = cli("ingest", samples, "--workers", "0")  # the fake captioner, the real detector
    assert result.exit_code == 0, result.output
    found = json.loads(cli("search", "animal", "--json").stdout)
    assert [h["path"].rsplit("/", 1)[-1] for h in found][:1] == ["chelsea.jpg"]
    assert found[0]["objects"][0]["label"] == "cat"


def _jsonl(lib) -> str:
    import io

    out = io.StringIO()
    lib.export(out, format="jsonl")
    return "[" + ",".join(out.getvalue().splitlines()) + "]"

"""A file whose content is already catalogued (touched, moved, renamed, swapped) keeps its
row's caption without being captioned again; when that row's objects or vector were made
by another model than this run's, they are made again in the same run, from the file's
pixels; when they are current, the file is not decoded at all."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from fakes import FakeCaption, FakeCaptioner
from helpers import check_library

import capindex
from capindex.model import EMBEDDING_DIM
from capindex.model.detector import Detection
from capindex.model.preprocess import normalize
from capindex.pipeline.detect import DeferredDetector


class CountingDetector:
    """Finds one cat in every image; counts the images it saw and its loads."""

    input_size = 416

    def __init__(self):
        self.images = 0
        self.loads = 0

    def deferred(self, detector_id: str) -> DeferredDetector:
        def load():
            self.loads += 1
            return self

        return DeferredDetector(detector_id, load)

    def detect_batch(self, pixels, ratios, sizes):
        self.images += len(sizes)
        return [[Detection("cat", 0.9, (0.0, 0.0, float(w), float(h)))] for w, h in sizes]


@dataclass(frozen=True)
class VectorCaption(FakeCaption):
    embedding: np.ndarray | None = None


class EmbeddingCaptioner(FakeCaptioner):
    """The fake captioner with a vector per image (its mean colour) from the embedding
    `embedding_id`; `embed_batch` gives the vector alone, as the real one for an enrich."""

    def __init__(self, embedding_id: str) -> None:
        super().__init__()
        self.embedding_id = embedding_id
        self.embedded = 0

    def caption_batch(self, images):
        captions = super().caption_batch(images)
        return [VectorCaption(c.text, c.score, c.tags, v)
                for c, v in zip(captions, self._vectors(self.batches[-1]))]

    def embed_batch(self, images):
        self.embedded += len(images)
        return self._vectors(normalize(images))

    @staticmethod
    def _vectors(images) -> list[np.ndarray]:
        out = []
        for image in images:
            vector = np.zeros(EMBEDDING_DIM, np.float32)
            vector[:3] = image.float().mean(dim=(1, 2)).numpy() + 2
            out.append(vector / np.linalg.norm(vector))
        return out


def touch(path) -> None:
    info = path.stat()
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 5 * 10**9))


def swap(a, b) -> None:
    a.rename(a.with_name("swap.tmp"))
    b.rename(a)
    a.with_name("swap.tmp").rename(b)


def test_touched_and_moved_files_with_outdated_objects_are_enriched_in_the_same_run(
        tmp_path, samples, fake):
    lib = capindex.Library(tmp_path / "lib")
    lib.ingest([samples], captioner=fake, detector=CountingDetector().deferred("old@1"), workers=0)
    touched, moved = samples / "chelsea.jpg", samples / "coffee.jpg"
    lib.edit_caption(str(touched), "my cat on a chair")
    before = check_library(lib.root)
    touch(touched)
    moved.rename(samples / "renamed.jpg")
    batches = len(fake.batches)

    model = CountingDetector()
    summary = lib.ingest([samples], captioner=fake, detector=model.deferred("new@2"), workers=0)
    assert len(fake.batches) == batches  # nothing captioned again
    assert model.images == 5  # each file detected once: the touched and moved ones too
    assert (summary.enriched, summary.moved, summary.unchanged, summary.captioned,
            summary.new, summary.deleted) == (4, 1, 0, 0, 0, 0)
    rows = check_library(lib.root)
    assert {r["detector_id"] for r in rows.values()} == {"new@2"}
    assert all([o["label"] for o in r["objects"]] == ["cat"] for r in rows.values())
    for path, was in ((touched, touched), (samples / "renamed.jpg", moved)):
        row, old = rows[str(path)], before[str(was)]
        assert (row["id"], row["caption"], row["user_caption"]) == (
            old["id"], old["caption"], old["user_caption"])
        assert row["mtime_ns"] == path.stat().st_mtime_ns
    assert rows[str(touched)]["user_caption"] == "my cat on a chair"
    assert lib.search("chair", 10, mode="keyword")[0].path == str(touched)

    again = lib.ingest([samples], captioner=fake, detector=model.deferred("new@2"), workers=0)
    assert (again.enriched, again.unchanged, model.images) == (0, 5, 5)


def test_touched_moved_and_swapped_files_with_an_outdated_vector_get_a_new_one(tmp_path, samples):
    lib = capindex.Library(tmp_path / "lib")
    lib.ingest([samples], captioner=EmbeddingCaptioner("embedding@1"), objects=False, workers=0)
    touched, moved = samples / "chelsea.jpg", samples / "coffee.jpg"
    lib.edit_caption(str(samples / "rocket.jpg"), "launch day")
    before = check_library(lib.root)
    touch(touched)
    moved.rename(samples / "renamed.jpg")
    swap(samples / "rocket.jpg", samples / "camera.jpg")

    captioner = EmbeddingCaptioner("embedding@2")
    summary = lib.ingest([samples], captioner=captioner, objects=False, workers=0)
    assert (captioner.captioned, captioner.embedded) == (0, 5)
    assert (summary.moved, summary.captioned, summary.deleted) == (1, 0, 0)
    rows = check_library(lib.root)
    assert {r["embedding_model"] for r in rows.values()} == {"embedding@2"}
    for path, was in ((touched, touched), (samples / "renamed.jpg", moved),
                      (samples / "camera.jpg", samples / "rocket.jpg"),
                      (samples / "rocket.jpg", samples / "camera.jpg")):
        row, old = rows[str(path)], before[str(was)]
        assert (row["sha256"], row["caption"], row["user_caption"]) == (
            old["sha256"], old["caption"], old["user_caption"])
        # the vector of the file's own pixels, as a captioning run would have made it
        assert np.array_equal(np.frombuffer(row["embedding"], "<f2"),
                              np.frombuffer(old["embedding"], "<f2"))
    assert rows[str(samples / "camera.jpg")]["user_caption"] == "launch day"
    again = lib.ingest([samples], captioner=captioner, objects=False, workers=0)
    assert (again.enriched, again.unchanged, captioner.embedded) == (0, 5, 5)


def test_files_whose_row_is_current_are_reused_without_decoding(tmp_path, samples):
    lib = capindex.Library(tmp_path / "lib")
    captioner = EmbeddingCaptioner("embedding@1")
    lib.ingest([samples], captioner=captioner, detector=CountingDetector().deferred("det@1"),
               workers=0)
    lib.edit_caption(str(samples / "rocket.jpg"), "launch day")
    before = check_library(lib.root)
    touch(samples / "chelsea.jpg")
    (samples / "coffee.jpg").rename(samples / "renamed.jpg")
    swap(samples / "rocket.jpg", samples / "camera.jpg")
    batches = len(captioner.batches)

    model = CountingDetector()
    summary = lib.ingest([samples], captioner=captioner, detector=model.deferred("det@1"),
                         workers=0)
    assert (len(captioner.batches), captioner.embedded, model.loads) == (batches, 0, 0)
    assert (summary.moved, summary.enriched, summary.captioned) == (1, 0, 0)
    rows = check_library(lib.root)
    by_hash = {r["sha256"]: r for r in before.values()}
    for row in rows.values():  # every row as its content's was, whatever file holds it now
        old = by_hash[row["sha256"]]
        for column in ("caption", "user_caption", "objects", "detector_id", "embedding",
                       "embedding_model"):
            assert row[column] == old[column], (row["path"], column)
    assert rows[str(samples / "camera.jpg")]["user_caption"] == "launch day"


def test_an_outdated_file_whose_content_also_moved_is_enriched(tmp_path, samples, fake):
    """An unchanged file's enrich is not lost when a moved copy of it is reused."""
    import shutil

    lib = capindex.Library(tmp_path / "lib")
    cat = samples / "chelsea.jpg"
    lib.ingest([cat], captioner=fake, detector=CountingDetector().deferred("old@1"), workers=0)
    copy = shutil.copy(cat, samples / "copy.jpg")
    lib.ingest([copy], captioner=fake, detector=CountingDetector().deferred("new@2"), workers=0)
    (samples / "copy.jpg").rename(samples / "moved.jpg")  # its row is current; the cat's is not

    model = CountingDetector()
    summary = lib.ingest([samples], captioner=fake, detector=model.deferred("new@2"), workers=0)
    rows = check_library(lib.root)
    assert rows[str(cat)]["detector_id"] == "new@2"
    assert (summary.enriched, summary.moved) == (1, 1)

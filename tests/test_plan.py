"""Planning against a real catalogue, in chunks: every rule gives the same plan whatever the
chunk size (one file per catalogue lookup, or all of them in one)."""

from __future__ import annotations

import pytest

from capindex.pipeline.discover import Found
from capindex.pipeline.options import IngestOptions
from capindex.pipeline.plan import plan_ingest
from capindex.pipeline.report import Events
from capindex.store.catalog import Catalog, Changes, create_catalog, utcnow

HASH, DETECTOR, EMBEDDING = "w1", "d1", "e1"


def row(path, size=10, mtime_ns=1, sha="a", status="ok", error=None, weights_hash=HASH,
        embedding_model=EMBEDDING):
    return {"path": path, "size": size, "mtime_ns": mtime_ns, "sha256": sha, "status": status,
            "error": error, "model_id": "m", "weights_hash": weights_hash,
            "detector_id": DETECTOR, "embedding_model": embedding_model,
            "ingested_at": utcnow()}


@pytest.fixture
def catalog(tmp_path):
    create_catalog(tmp_path / "catalog.sqlite")
    with Catalog(tmp_path / "catalog.sqlite") as catalog:
        catalog.write(Changes(upserts=[
            row("/r/same.jpg"),
            row("/r/touched.jpg", mtime_ns=2, sha="b"),
            row("/r/gone.jpg", sha="c"),
            row("/r/gone2.jpg", sha="c"),  # same content as gone.jpg
            row("/r/failed.jpg", status="error", error="not a readable image"),
            row("/r/old-model.jpg", weights_hash="w0"),
            row("/r/no-vector.jpg", embedding_model=None),
            row("/r/locked/kept.jpg"),  # under a folder that cannot be listed now
            row("/r/link/kept.jpg"),  # under a link that cannot be followed now
            row("/r/a/gone.jpg", sha="d"),
            row("/r/a-b/elsewhere.jpg"),  # sorts between /r/a/ and /r/a0: not under /r/a
            row("/other/outside.jpg"),  # not under the path ingested
        ]))
        yield catalog


FOUND = [
    Found("/r/same.jpg", "/r/same.jpg", 10, 1),
    Found("/r/touched.jpg", "/r/touched.jpg", 10, 3),
    Found("/r/new.jpg", "/r/new.jpg", 5, 1),
    Found("/r/failed.jpg", "/r/failed.jpg", 10, 1),
    Found("/r/old-model.jpg", "/r/old-model.jpg", 10, 1),
    Found("/r/no-vector.jpg", "/r/no-vector.jpg", 10, 1),
    Found("/r/locked", "/r/locked", error="permission denied", is_dir=True),
    Found("/r/link", "/r/link", error="target missing", is_dir=True, maybe_dir=True),
    Found("/r/dangling", "/r/dangling", error="target missing", is_dir=True, maybe_dir=True),
    Found("/r/a-b/elsewhere.jpg", "/r/a-b/elsewhere.jpg", 10, 1),
    Found("/r/broken.jpg", "/r/broken.jpg", error="broken symbolic link"),
]


def plan(catalog, chunk, roots=("/r",), **options):
    made = plan_ingest(catalog, FOUND, list(roots), HASH, IngestOptions(**options), Events(),
                       DETECTOR, EMBEDDING, chunk=chunk)
    return ([(t.found.key, t.reason) for t in made.tasks], [f.key for f in made.failures],
            list(made.orphans), sorted(made.reuse_hashes), made.summary)


@pytest.mark.parametrize("options", [{}, {"retry_failed": True}, {"recaption": True}])
def test_chunked_planning_gives_the_same_plan(catalog, options):
    whole = plan(catalog, chunk=10_000, **options)
    assert plan(catalog, chunk=1, **options) == whole
    assert plan(catalog, chunk=3, **options) == whole


def test_what_each_file_becomes(catalog):
    tasks, failures, orphans, reuse, summary = plan(catalog, chunk=2)
    assert tasks == [("/r/touched.jpg", "changed"), ("/r/new.jpg", "new"),
                     ("/r/no-vector.jpg", "enrich")]
    assert failures == ["/r/broken.jpg"]
    # not found now: gone.jpg and gone2.jpg (ids order); kept: under the unreadable folder
    # and the dead link, a sibling folder whose name starts alike, a path not ingested
    assert orphans == ["/r/gone.jpg", "/r/gone2.jpg", "/r/a/gone.jpg"]
    assert reuse == ["b", "c", "d"]  # touched.jpg (changed), the orphans
    assert (summary.unchanged, summary.previously_failed, summary.other_model,
            summary.failed) == (3, 1, 1, 2)  # failed: the two folders that cannot be read

    tasks = plan(catalog, chunk=2, retry_failed=True, recaption=True)[0]
    assert ("/r/failed.jpg", "retry") in tasks and ("/r/old-model.jpg", "recaption") in tasks
    assert plan(catalog, chunk=2, roots=("/r/a",))[2] == ["/r/a/gone.jpg"]


def test_nothing_gone_is_known_from_a_count(catalog):
    """When as many rows lie under the paths as files found with a row, none is an orphan
    (the paths are not read); one row more and it is found."""
    found = [Found("/r/a-b/elsewhere.jpg", "/r/a-b/elsewhere.jpg", 10, 1)]
    made = plan_ingest(catalog, found, ["/r/a-b"], HASH, IngestOptions(), Events(),
                       DETECTOR, EMBEDDING, chunk=1)
    assert made.orphans == {} and made.summary.unchanged == 1
    made = plan_ingest(catalog, [], ["/r/a-b"], HASH, IngestOptions(), Events(),
                       DETECTOR, EMBEDDING, chunk=1)
    assert list(made.orphans) == ["/r/a-b/elsewhere.jpg"]


def test_a_root_per_photo_and_nested_roots_are_counted_once(catalog):
    # evaluate-search gives one root per photo: 1,500 OR-ed ranges once passed SQLite's
    # 1,000-deep expression limit; a root inside another must not count its rows twice
    many = [f"/r/photo-{n}.jpg" for n in range(1500)]
    assert catalog.count_under([*many, "/r/same.jpg", "/r/touched.jpg"]) == 2
    assert catalog.count_under(["/r", "/r/a", "/r/a/gone.jpg", "/r/same.jpg"]) == 11
    assert sorted(catalog.paths_under(["/r/a", "/r/a/gone.jpg", *many])) == ["/r/a/gone.jpg"]
    assert catalog.count_under(["/r/a"]) == 1  # /r/a-b/ sorts inside /r/a's range: not under

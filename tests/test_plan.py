"""Planning against a real catalogue, in chunks: every rule gives the same plan whatever the
chunk size (one file per catalogue lookup, or all of them in one)."""

from __future__ import annotations

import pytest

from capindex.pipeline.discover import Found
from capindex.pipeline.options import IngestOptions
from capindex.pipeline.plan import plan_ingest
from capindex.pipeline.report import Events
from capindex.store.catalog import _PLAN_ROWS, Catalog, Changes, create_catalog, utcnow

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


def test_a_row_not_found_under_the_path_is_an_orphan(catalog):
    found = [Found("/r/a-b/elsewhere.jpg", "/r/a-b/elsewhere.jpg", 10, 1)]
    made = plan_ingest(catalog, found, ["/r/a-b"], HASH, IngestOptions(), Events(),
                       DETECTOR, EMBEDDING, chunk=1)
    assert made.orphans == {} and made.summary.unchanged == 1
    made = plan_ingest(catalog, [], ["/r/a-b"], HASH, IngestOptions(), Events(),
                       DETECTOR, EMBEDDING, chunk=1)
    assert list(made.orphans) == ["/r/a-b/elsewhere.jpg"]


@pytest.mark.parametrize("order", ["reversed", "shuffled"])
def test_files_out_of_path_order_give_the_same_plan(catalog, order):
    """The merge expects path order (one walk gives it); files out of it (a second PATH
    sorting first, names that are not UTF-8) are looked up by path: the same tasks,
    failures, orphans and counts, the tasks in the order found."""
    import random

    found = sorted(FOUND, key=lambda f: f.key)
    expected = plan_ingest(catalog, found, ["/r"], HASH, IngestOptions(), Events(),
                           DETECTOR, EMBEDDING, chunk=2)
    other = found[::-1] if order == "reversed" else random.Random(1).sample(found, len(found))
    made = plan_ingest(catalog, other, ["/r"], HASH, IngestOptions(), Events(),
                       DETECTOR, EMBEDDING, chunk=2)
    keys = [f.key for f in other]
    assert [(t.found.key, t.reason) for t in made.tasks] == sorted(
        [(t.found.key, t.reason) for t in expected.tasks], key=lambda t: keys.index(t[0]))
    assert sorted(f.key for f in made.failures) == sorted(f.key for f in expected.failures)
    assert list(made.orphans) == list(expected.orphans) == [
        "/r/gone.jpg", "/r/gone2.jpg", "/r/a/gone.jpg"]
    assert made.summary == expected.summary and made.reuse_hashes == expected.reuse_hashes


def test_a_folder_reported_after_its_rows_were_passed_keeps_them(catalog):
    """A PATH whose folder cannot be read, given after one sorting later: its rows were
    passed over by the merge before the folder was reported, and are kept all the same."""
    found = [Found("/r/same.jpg", "/r/same.jpg", 10, 1),
             Found("/r/a", "/r/a", error="permission denied", is_dir=True)]
    made = plan_ingest(catalog, found, ["/r/same.jpg", "/r/a"], HASH, IngestOptions(),
                       Events(), DETECTOR, EMBEDDING)
    assert made.orphans == {} and made.summary.unchanged == 1 and made.summary.failed == 1


def test_plan_rows_in_path_order_each_once(catalog):
    # evaluate-search gives one root per photo (1,500 OR-ed ranges once passed SQLite's
    # 1,000-deep expression limit); a root inside another must not give its rows twice;
    # "/r/a-b/..." sorts between "/r/a" and "/r/a/...".
    def paths(roots):
        return [row[0] for row in catalog.plan_rows(roots, HASH, DETECTOR, EMBEDDING)]

    many = [f"/r/photo-{n}.jpg" for n in range(1500)]
    assert paths([*many, "/r/touched.jpg", "/r/same.jpg"]) == ["/r/same.jpg", "/r/touched.jpg"]
    everything = paths(["/r", "/r/a", "/r/a/gone.jpg", "/r/same.jpg"])
    assert everything == sorted(everything) and len(everything) == 11
    assert paths(["/r/a", "/r/a/gone.jpg", *many]) == ["/r/a/gone.jpg"]
    assert paths(["/r/a-b", "/r/a"]) == ["/r/a-b/elsewhere.jpg", "/r/a/gone.jpg"]
    assert paths(["/"]) == sorted(paths(["/"])) and len(paths(["/"])) == 12


def test_plan_rows_say_what_is_current(catalog):
    rows = {row[0]: row[1:] for row in catalog.plan_rows(["/r"], HASH, DETECTOR, EMBEDDING)}
    assert rows["/r/same.jpg"] == (10, 1, 1, 1)
    assert rows["/r/old-model.jpg"] == (10, 1, 1, 0)  # another captioner: not the same
    assert rows["/r/no-vector.jpg"][2] == 0 and rows["/r/failed.jpg"][2] == 0
    rows = dict((row[0], row[3]) for row in catalog.plan_rows(["/r"], HASH, "other", None))
    assert rows["/r/same.jpg"] == 0 and rows["/r/no-vector.jpg"] == 0
    rows = dict((row[0], row[3]) for row in catalog.plan_rows(["/r"], HASH, None, None))
    assert rows["/r/no-vector.jpg"] == 1  # no embedding asked for: nothing missing


def test_planning_reads_the_planning_index_alone(catalog, tmp_path):
    """A catalogue without the index (written by an older capindex) gets it when opened
    for writing; planning's query is answered from that index, never the wide rows."""
    path = tmp_path / "catalog.sqlite"
    with catalog.engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ix_images_plan")
    with Catalog(path) as upgraded, upgraded.engine.begin() as conn:
        assert "ix_images_plan" in {row[1] for row in
                                    conn.exec_driver_sql("PRAGMA index_list(images)")}
        plans = [row[3] for row in conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN " + _PLAN_ROWS.format("path >= ?4 AND path < ?5"),
            (None, None, "h", "/r/", "/r0"))]
    assert plans == ["SEARCH images USING COVERING INDEX ix_images_plan (path>? AND path<?)"]

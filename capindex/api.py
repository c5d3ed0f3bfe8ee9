"""The Python API: one `Library` with ingest, search, export and info.

    import capindex
    lib = capindex.Library("~/capindex-library")     # or Library() for the default location
    lib.ingest(["~/Pictures"])                       # -> Summary (new, moved, failed, ...)
    for hit in lib.search("dog on a beach", limit=5):
        print(hit.score, hit.path, hit.caption)

The CLI is a thin layer over this class; collaborators (the captioner, the progress
events) can be passed in, so a test or another program can hand in its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from capindex.store.library_dir import LibraryDir

# Where `ingest` reads files and runs the models: this machine, or a Ray cluster.
ENGINES = ("local", "ray")

if TYPE_CHECKING:
    from capindex.pipeline.caption import CaptionerLike
    from capindex.pipeline.detect import DeferredDetector
    from capindex.pipeline.report import Events, Summary
    from capindex.search import Hit


class Library:
    """A capindex library: a directory holding the catalogue, its Parquet mirror and the
    search index. `path` None: $CAPINDEX_HOME, else the user data directory."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.dir = LibraryDir(path)

    @property
    def root(self) -> Path:
        return self.dir.root

    def __repr__(self) -> str:
        return f"Library({str(self.root)!r})"

    def ingest(self, paths: Sequence[str | Path], *, model: str | Path | None = None,
               device: str = "auto", precision: str = "auto",
               captioner: CaptionerLike | None = None, objects: bool = True,
               detector: DeferredDetector | None = None, events: Events | None = None,
               should_stop: Callable[[], bool] = lambda: False, engine: str = "local",
               address: str | None = None, **options) -> Summary:
        """Caption the images under `paths` into the library, incrementally.

        `model`: a checkpoint (default: the shipped one), loaded on `device` only when
        something needs captioning; or pass a ready `captioner`. `objects`: find the objects
        in each image with the shipped detector (or `detector`). `options` are the fields
        of `capindex.pipeline.options.IngestOptions` (batch_size, workers, exclude,
        recaption, retry_failed, rebuild: start over, keeping the old catalogue aside, ...).
        Raises CapindexError subclasses (library busy, model unreadable, catalogue damaged,
        ...); files that cannot be read become error rows instead. A damaged search index
        or Parquet mirror is rebuilt from the catalogue.

        `engine` "local" reads the files and runs the models on this machine; "ray" on a Ray
        cluster (the `[ray]` extra): `address` "auto" or HOST:PORT joins one, None starts a
        local Ray for the run. The plan, the rows and the commits are the same.
        """
        from capindex.pipeline.caption import load_captioner
        from capindex.pipeline.detect import load_detector
        from capindex.pipeline.ingest import ingest
        from capindex.pipeline.options import IngestOptions

        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
        if address is not None and engine != "ray":
            raise ValueError("address is for engine='ray'")
        runner = None
        if engine == "ray":  # EngineError at once when Ray is not installed
            from capindex.pipeline.ray_engine import RayEngine

            runner = RayEngine(address, device)
        if captioner is None:
            captioner = load_captioner(model, device, precision)
        if objects and detector is None:
            detector = load_detector()
        return ingest(self.dir, [str(p) for p in paths], captioner, IngestOptions(**options),
                      events, should_stop, detector if objects else None, runner)

    def search(self, query: str, limit: int = 10, **options) -> list[Hit]:
        """The best `limit` images for `query`, best first (see `capindex search --help`)."""
        from capindex.search import search

        return search(self.dir, query, limit, **options)

    def export(self, out: str | Path | TextIO, format: str | None = None) -> int:
        """Write the whole catalogue to `out`: a path (a file is replaced atomically, a
        symbolic link's target is written, a device or FIFO gets csv/jsonl streamed into
        it; see `capindex.store.export.export`), or a text stream for csv/jsonl; `format`
        parquet|csv|jsonl, default from out's suffix. Returns the number of rows; raises
        CapindexError when OUT cannot be written (and leaves no partial file)."""
        from capindex.store.export import FORMATS, export, format_from_suffix, write_text

        stream = not isinstance(out, (str, Path))
        fmt = format or (None if stream else format_from_suffix(str(out)))
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
        if stream and fmt == "parquet":
            raise ValueError("Parquet needs a file name, not a stream")
        with self.dir.open_catalog(read_only=True) as catalog:
            if stream:
                return write_text(catalog.rows(), fmt, out)
            return export(catalog, Path(out), fmt)

    def info(self) -> dict:
        """Where the library is, counts, the models that wrote captions, the first failures,
        the size of the Parquet mirror and the index, and `index_problem`: why the search
        index needs a rebuild ("missing", "damaged: ..."; the next ingest rebuilds it), or
        None."""
        from capindex.errors import EmptyLibraryError
        from capindex.store.keyword import KeywordIndex
        from capindex.store.parquet import ParquetMirror

        report = {"library": str(self.root), "images": 0, "ok": 0, "failed": 0, "models": [],
                  "last_ingest": None, "failures": []}
        try:
            with self.dir.open_catalog(read_only=True) as catalog:
                report.update(catalog.stats())
                report["failures"] = [{"path": p, "error": e} for p, e in catalog.failures()]
        except EmptyLibraryError:
            pass
        mirror = ParquetMirror(self.dir.parquet_dir)
        report["parquet_files"] = len(mirror.parts())
        report["parquet_rows"] = mirror.row_count()
        report["parquet_unreadable"] = len(mirror.unreadable())  # rewritten by the next ingest
        index = KeywordIndex(self.dir.index_dir)
        problem = index.problem()
        if problem is None and report["ok"] and not index.exists():
            problem = "missing"
        report["index_documents"] = 0 if problem else index.doc_count()
        report["index_problem"] = problem
        report["vectors"], report["vector_model"] = _vector_counts(self.dir)
        return report


def _vector_counts(library: LibraryDir) -> tuple[int | None, str | None]:
    """(vectors in the vector index, its embedding's id); (None, None) when it is damaged."""
    from capindex.store.vectors import VectorIndex, VectorIndexDamaged

    vectors = VectorIndex(library.vectors_dir)
    try:
        return vectors.count(), vectors.model_id()
    except VectorIndexDamaged:
        return None, None

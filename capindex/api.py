"""The Python API: one `Library` with ingest, search, export and info, and what a photo
browser needs (photo records, thumbnails, similar photos, filter menus, caption edits,
captioning an upload).

    import capindex
    lib = capindex.Library("~/capindex-library")     # or Library() for the default location
    lib.ingest(["~/Pictures"])                       # -> Summary (new, moved, failed, ...)
    for hit in lib.search("dog on a beach", limit=5):
        print(hit.score, hit.path, hit.caption)
    lib.edit_caption(hit.id, "Rex on Brighton beach")  # the user's caption wins

The CLI is a thin layer over this class; collaborators (the captioner, the progress
events) can be passed in, so a test or another program can hand in its own. A Library
may be shared by threads (a web server's): reads open their own connections, and
`describe` loads its models once, under a lock.
"""

from __future__ import annotations

import threading
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
    from capindex.search.filters import Filters

THUMBNAIL_SIZE = 320


class Library:
    """A capindex library: a directory holding the catalogue, its Parquet mirror and the
    search index. `path` None: $CAPINDEX_HOME, else the user data directory."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.dir = LibraryDir(path)
        self._models_lock = threading.Lock()  # describe's models, loaded once
        self._captioner: CaptionerLike | None = None
        self._detector: DeferredDetector | None = None
        self._facets: tuple[int, dict] | None = None  # (catalogue's next seq, facets)

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

    def search(self, query: str = "", limit: int = 10, *, offset: int = 0,
               filters: Filters | None = None, **options) -> list[Hit]:
        """The best `limit` images for `query` after the first `offset`, best first, of
        those passing `filters` (applied before the limit, in every mode); `query` "" lists
        the images passing `filters` newest taken first. `options`: mode, like, notes, ...
        (`capindex.search.ranking.search`; `capindex search --help`)."""
        from capindex.search.ranking import search

        return search(self.dir, query, limit, offset=offset, filters=filters, **options)

    def count(self, query: str = "", *, filters: Filters | None = None, **options) -> int:
        """How many images the pages (`offset`) of that search go through: keyword mode,
        the matches; semantic (and `like`), every image with a vector; hybrid, the keyword
        matches and vector candidates it fuses (at most 100 of each, or `limit` when
        larger); "" every image; all of them passing `filters`."""
        from capindex.search.ranking import count

        return count(self.dir, query, filters=filters, **options)

    def search_page(self, query: str = "", limit: int = 10, *, offset: int = 0,
                    filters: Filters | None = None, **options) -> tuple[list[Hit], int]:
        """`search` and `count` together, from one ranking (a results page shows both):
        (hits, how many images the pages go through)."""
        from capindex.search.ranking import search_page

        return search_page(self.dir, query, limit, offset=offset, filters=filters, **options)

    def similar(self, image_id: int, limit: int = 12, *,
                filters: Filters | None = None) -> list[Hit]:
        """The photos most alike to photo `image_id` by their vectors, best first, itself
        left out; [] when it or the library has no vector."""
        from capindex.search.ranking import similar

        return similar(self.dir, image_id, limit, filters)

    def photo(self, image_id: int) -> dict | None:
        """The catalogue row of `image_id` as a dict (no embedding bytes; dates as ISO
        text): `caption` is the one shown (the user's, when set), `generated_caption` the
        model's. None when the id is unknown."""
        from capindex.store.keyword import shown_caption

        row = self._row(image_id)
        if row is None:
            return None
        row.pop("embedding", None)
        row["generated_caption"] = row["caption"]
        row["caption"] = shown_caption(row)
        for name in ("taken_at", "ingested_at"):
            if row[name] is not None:
                row[name] = row[name].isoformat()
        return row

    def photo_path(self, image_id: int) -> Path | None:
        """The file of captioned photo `image_id` (by the catalogue alone), or None when
        the id is unknown, failed, or its file is not there now."""
        from capindex.pipeline.discover import os_path

        row = self._row(image_id)
        if row is None or row["status"] != "ok":
            return None
        path = Path(os_path(row["path"]))
        return path if path.is_file() else None

    def thumbnail(self, image_id: int, size: int = THUMBNAIL_SIZE) -> Path | None:
        """A JPEG of photo `image_id` no larger than size x size (`pipeline/thumbnail.py`),
        kept in the library's thumbs/ folder by content hash and made on first request (in
        the user cache folder when the library is read-only). None when the id is unknown
        or its file cannot be read or decoded now (gone, damaged, a decompression bomb)."""
        from capindex.errors import UnusableFile
        from capindex.pipeline.options import DEFAULT_MAX_FILE_SIZE
        from capindex.pipeline.thumbnail import make_thumbnail

        if not 16 <= size <= 2048:
            raise ValueError(f"size must be 16 to 2048 pixels, not {size}")
        path = self.photo_path(image_id)
        if path is None:
            return None
        sha256 = self._row(image_id)["sha256"]
        for folder in (self.dir.thumbs_dir, _cache_thumbs_dir()):
            try:
                return make_thumbnail(str(path), folder, size, sha256, DEFAULT_MAX_FILE_SIZE)
            except UnusableFile:
                return None
            except PermissionError:
                continue  # a read-only library: the user's cache folder
            except Exception:  # the OS and Pillow raise many kinds for a bad or gone file
                return None
        return None

    def facets(self) -> dict:
        """What search filters can choose from: {"cameras", "objects", "tags": [(name,
        images)...] most frequent first, "taken": (first date, last date) ISO or None}.
        Kept until the catalogue changes."""
        with self.dir.read_catalog() as catalog:  # SQLAlchemy only when they must be made
            seq = catalog.next_seq()
            if self._facets is None or self._facets[0] != seq:
                self._facets = (seq, catalog.facets())
        return self._facets[1]

    def edit_caption(self, image: int | str, text: str) -> int:
        """Set the user's caption of `image` (an id, or a catalogued file's path): shown
        and searched instead of the model's, kept when the photo is captioned again or
        by another model, exported beside it. The catalogue, the Parquet mirror and the
        search index change together, under the library's writer lock. ValueError for
        blank text; PhotoNotFound, LibraryBusyError (an ingest is writing) or
        CapindexError (a read-only library) in one line. Returns the photo's id."""
        text = " ".join(str(text).split())
        if not text:
            raise ValueError("the caption is empty; give some words, or revert to the "
                             "generated caption")
        return self._set_user_caption(image, text)

    def revert_caption(self, image: int | str) -> int:
        """Drop the user's caption of `image`: the model's is shown and searched again.
        Returns the photo's id."""
        return self._set_user_caption(image, None)

    def describe(self, image: bytes | str | Path, *, captioner: CaptionerLike | None = None,
                 detector: DeferredDetector | None = None) -> dict:
        """Caption an image that is not in the library (an upload) and store nothing:
        {"caption", "alt_captions", "tags", "objects", "width", "height", "format"}. Read
        and decoded as ingest does (the same size and pixel limits); ImageUnreadable in
        one line when it cannot be. The shipped captioner and detector (or those given)
        are loaded on first use and kept for this Library's later calls."""
        from capindex.errors import ImageUnreadable, UnusableFile, describe_failure
        from capindex.pipeline.caption import caption_images
        from capindex.pipeline.decode import decode_image, read_file
        from capindex.pipeline.detect import detect_objects
        from capindex.pipeline.options import DEFAULT_MAX_FILE_SIZE

        name = "the image" if isinstance(image, (bytes, bytearray)) else str(image)
        try:
            data = bytes(image) if isinstance(image, (bytes, bytearray)) else \
                read_file(str(image), DEFAULT_MAX_FILE_SIZE)[0]
            if not data:
                raise UnusableFile("empty file")
            meta, pixels = decode_image(data)
        except Exception as exc:  # the OS and Pillow raise many kinds for a bad image
            raise ImageUnreadable(f"{name}: {describe_failure(exc)}") from exc
        with self._models_lock:
            captioner, detector = self._describe_models(captioner, detector)
            size = (meta["width"], meta["height"])
            objects = detect_objects(detector, pixels.unsqueeze(0), [size])[0][0] \
                if detector is not None else None
            guided = detector is not None and getattr(captioner, "guide", None) is not None
            # as ingest does (pipeline/infer.py): a guided captioner words after the objects
            (caption,) = caption_images(captioner, pixels.unsqueeze(0),
                                        [objects or []] if guided else None)
        return {"caption": caption["caption"], "alt_captions": caption["alt_captions"],
                "tags": caption["tags"], "objects": objects or [], "width": meta["width"],
                "height": meta["height"], "format": meta["format"]}

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
        index = KeywordIndex(self.dir.keyword_path)
        problem = index.problem()
        if problem is None and report["ok"] and not index.exists():
            problem = index.absence()
        report["index_documents"] = 0 if problem else index.doc_count()
        report["index_problem"] = problem
        report["vectors"], report["vector_model"] = _vector_counts(self.dir)
        return report


    # -- helpers ---------------------------------------------------------------

    def _row(self, image_id: int) -> dict | None:
        with self.dir.read_catalog() as catalog:  # sqlite3 alone: a photo page's reads
            return next(catalog.rows([int(image_id)]), None)

    def _describe_models(self, captioner, detector):
        """The models `describe` uses: those given, else this Library's (loaded once)."""
        if captioner is None:
            if self._captioner is None:
                from capindex.pipeline.caption import load_captioner

                self._captioner = load_captioner(embedding=False)
            captioner = self._captioner
        if detector is None:
            if self._detector is None:
                from capindex.pipeline.detect import load_detector

                self._detector = load_detector()
            detector = self._detector
        return captioner, detector

    def _set_user_caption(self, image: int | str, text: str | None) -> int:
        import os

        from capindex.errors import PhotoNotFound
        from capindex.pipeline.discover import catalog_path
        from capindex.store.catalog import Changes
        from capindex.store.keyword import KeywordIndex
        from capindex.store.parquet import ParquetMirror
        from capindex.store.sinks import Sinks
        from capindex.store.vectors import VectorIndex

        # open_catalog (for writing) brings a catalogue from an older capindex up to date
        with self.dir.ingest_lock("editing a caption"), self.dir.open_catalog() as catalog:
            if isinstance(image, int):
                row = next(catalog.rows([image]), None)
                row_id = row["id"] if row is not None and row["status"] == "ok" else None
            else:
                row_id = catalog.id_of(catalog_path(os.path.abspath(image)))
            if row_id is None:
                raise PhotoNotFound(image, str(self.root))
            mirror = ParquetMirror(self.dir.parquet_dir)
            sinks = Sinks(catalog, mirror, KeywordIndex(self.dir.keyword_path))
            try:
                written = sinks.write(Changes(updates=[(row_id, {"user_caption": text})]))
            except BaseException:
                sinks.abandon()
                raise
            sinks.close()
            mirror.reconcile(catalog)  # drops the row's superseded copy
            VectorIndex(self.dir.vectors_dir).update_seqs(
                {row["id"]: row["seq"] for row in written.rows})
        return row_id

def _cache_thumbs_dir() -> Path:
    """Where thumbnails go when the library cannot be written: the user's cache folder."""
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("capindex")) / "thumbs"


def _vector_counts(library: LibraryDir) -> tuple[int | None, str | None]:
    """(vectors in the vector index, its embedding's id); (None, None) when it is damaged."""
    from capindex.store.vectors import VectorIndex, VectorIndexDamaged

    vectors = VectorIndex(library.vectors_dir)
    try:
        return vectors.count(), vectors.model_id()
    except VectorIndexDamaged:
        return None, None

"""The image row, declared once.

`COLUMNS` is the single definition. The SQLAlchemy table (`images_table`) and the
Arrow schema (`ARROW_SCHEMA`, used by the Parquet mirror and by `capindex export`)
are both derived from it, so the catalogue, the Parquet files and every export
always carry the same columns in the same order. docs/architecture.md documents
each column; a test keeps the two in step. pyarrow (0.3-0.4 s to import) loads on
the first use of the Arrow side, so a search, which reads only the catalogue, never
loads it.

A row in Python is a plain dict keyed by column name, with these values:
int, float, str, `datetime` (naive, see the column docs), and for `tags` a list
of `{"label": str, "prob": float}` dicts. `None` where a value is absent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

if TYPE_CHECKING:
    import pyarrow as pa

# Bump when COLUMNS change; Parquet parts written with another version are rebuilt, and
# a catalogue missing columns gets them added (`catalog.py`).
SCHEMA_VERSION = 3


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # a key of SQL_TYPES and of arrow_types()
    doc: str
    nullable: bool = True


# kind -> SQLAlchemy type; arrow_types() gives the Arrow type of each kind.
SQL_TYPES: dict[str, Any] = {
    "int": sa.Integer(),
    "float": sa.Float(),
    "text": sa.Text(),
    "datetime": sa.DateTime(),
    "tags": sa.JSON(none_as_null=True),
    "texts": sa.JSON(none_as_null=True),
    "vector": sa.LargeBinary(),
    "objects": sa.JSON(none_as_null=True),
}


@cache
def arrow_types() -> dict[str, pa.DataType]:
    """kind -> Arrow type (pyarrow imported here, on first use)."""
    import pyarrow as pa

    return {
        "int": pa.int64(),
        "float": pa.float64(),
        "text": pa.string(),
        "datetime": pa.timestamp("us"),
        "tags": pa.list_(pa.struct([("label", pa.string()), ("prob", pa.float64())])),
        "texts": pa.list_(pa.string()),
        "vector": pa.binary(),
        "objects": pa.list_(pa.struct([("label", pa.string()), ("score", pa.float64()),
                                       ("box", pa.list_(pa.float64()))])),
    }

COLUMNS: tuple[Column, ...] = (
    Column("id", "int", "Row id, assigned once and never reused; kept when a file moves.", False),
    Column("seq", "int", "Change number: a fresh, library-wide unique value each time the row "
           "is written. The Parquet mirror and the search index are reconciled on it.", False),
    Column("path", "text", "Absolute path of the file; bytes of the name that are not UTF-8 "
           "are written as `\\xNN`.", False),
    Column("size", "int", "File size in bytes."),
    Column("mtime_ns", "int", "File modification time, nanoseconds since the Unix epoch."),
    Column("sha256", "text", "SHA-256 of the file's bytes (hex); recognises moved files."),
    Column("width", "int", "Width in pixels as displayed (after EXIF orientation)."),
    Column("height", "int", "Height in pixels as displayed (after EXIF orientation)."),
    Column("format", "text", "Image format as Pillow names it: JPEG, PNG, GIF, WEBP, ..."),
    Column("caption", "text", "The generated caption."),
    Column("user_caption", "text", "The user's caption (`capindex edit`); wins over `caption` "
           "in display and search; kept across re-captioning and model changes."),
    Column("caption_score", "float", "Mean token log-probability of the caption "
           "(closer to 0 is surer)."),
    Column("alt_captions", "texts", "The beam search's next best distinct captions, best "
           "first; searched with a lower weight than the caption."),
    Column("tags", "tags", "Top ImageNet labels of the encoder's classifier, each "
           "{label, prob}, most probable first."),
    Column("objects", "objects", "Objects the detector found, each {label, score, box: "
           "[x0, y0, x1, y1] in pixels of the image as stored}, surest first; null: not "
           "looked for yet."),
    Column("detector_id", "text", "Id of the object detector that filled `objects`."),
    Column("embedding", "vector", "The image's point in the text-image embedding space: "
           "float16 values, little-endian (384 of them, 768 bytes); base64 in CSV and JSON."),
    Column("embedding_model", "text", "Id of the embedding model that wrote `embedding`."),
    Column("concepts", "texts", "Words the embedding places nearest the image (each above "
           "its own threshold), best first; searched with a low weight. Written with "
           "`embedding`."),
    Column("taken_at", "datetime", "EXIF DateTimeOriginal, camera local time as recorded."),
    Column("camera_make", "text", "EXIF Make."),
    Column("camera_model", "text", "EXIF Model."),
    Column("gps_lat", "float", "EXIF GPS latitude, decimal degrees (south negative)."),
    Column("gps_lon", "float", "EXIF GPS longitude, decimal degrees (west negative)."),
    Column("model_id", "text", "Id of the captioning model that wrote the caption."),
    Column("weights_hash", "text", "SHA-256 of that model's checkpoint file."),
    Column("decoding", "text", "Decoding settings as a JSON object, e.g. "
           "{\"beam_size\": 3, \"max_len\": 20, \"method\": \"beam\"}."),
    Column("ingested_at", "datetime", "When the image was captioned (or failed), UTC.", False),
    Column("status", "text", "'ok', or 'error' when the file could not be read.", False),
    Column("error", "text", "Why the file could not be read (status 'error' only)."),
)

COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)


metadata = sa.MetaData()


def _sql_column(column: Column) -> sa.Column:
    sql_type = SQL_TYPES[column.kind]
    if column.name == "id":
        return sa.Column("id", sql_type, primary_key=True, autoincrement=True, comment=column.doc)
    return sa.Column(column.name, sql_type, nullable=column.nullable, comment=column.doc)


images_table = sa.Table(
    "images",
    metadata,
    *(_sql_column(c) for c in COLUMNS),
    sa.Index("ix_images_path", "path", unique=True),
    sa.Index("ix_images_sha256", "sha256"),
    sa.Index("ix_images_seq", "seq", unique=True),
    sa.Index("ix_images_taken_at", "taken_at"),  # browsing newest-taken first
    # Planning a re-run reads this alone, in path order (`Catalog.plan_rows`), never the
    # wide rows (each holds its 768-byte vector): about 200 bytes a row.
    sa.Index("ix_images_plan", "path", "size", "mtime_ns", "status", "weights_hash",
             "detector_id", "embedding_model"),
    sqlite_autoincrement=True,  # ids are never reused, even after deletes
)

# Library bookkeeping: the seq counter and the schema version.
meta_table = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


@cache
def arrow_schema() -> pa.Schema:
    """The Arrow schema of a row (also `ARROW_SCHEMA`, built on first use)."""
    import pyarrow as pa

    return pa.schema(
        [pa.field(c.name, arrow_types()[c.kind], nullable=c.nullable) for c in COLUMNS],
        metadata={"capindex.schema_version": str(SCHEMA_VERSION)},
    )


def __getattr__(name: str):
    if name == "ARROW_SCHEMA":  # `from capindex.store.schema import ARROW_SCHEMA` works
        return arrow_schema()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def to_arrow(rows: Iterable[dict]) -> pa.Table:
    """Row dicts -> an Arrow table with exactly ARROW_SCHEMA."""
    import pyarrow as pa

    rows = list(rows)
    return pa.Table.from_pydict(
        {name: [row.get(name) for row in rows] for name in COLUMN_NAMES}, schema=arrow_schema()
    )


def columns_markdown() -> str:
    """The column table of docs/architecture.md (a test keeps the two identical)."""
    lines = ["| column | type | meaning |", "| --- | --- | --- |"]
    for c in COLUMNS:
        required = "" if c.nullable else ", never null"
        lines.append(f"| `{c.name}` | `{arrow_types()[c.kind]}`{required} | {c.doc} |")
    return "\n".join(lines)

"""The image row, defined once (see `capindex.schemas.image`)."""

from capindex.schemas.image import (
    ARROW_SCHEMA,
    COLUMN_NAMES,
    COLUMNS,
    SCHEMA_VERSION,
    ImageRecord,
    images_table,
    meta_table,
    to_arrow,
)

__all__ = [
    "ARROW_SCHEMA",
    "COLUMN_NAMES",
    "COLUMNS",
    "SCHEMA_VERSION",
    "ImageRecord",
    "images_table",
    "meta_table",
    "to_arrow",
]

"""The docs say what the code does: the column table, the Whoosh choice, sample licences."""

from __future__ import annotations

import re
from pathlib import Path

from capindex.store.schema import ARROW_SCHEMA, COLUMN_NAMES, ImageRecord, columns_markdown

REPO = Path(__file__).resolve().parent.parent
ARCHITECTURE = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")


def test_column_table_in_the_docs_is_generated_from_the_schema():
    table = re.search(r"<!-- columns:.*?-->\n(.*?)\n<!-- /columns -->", ARCHITECTURE, re.S)
    assert table, "docs/architecture.md lost its column table markers"
    assert table.group(1) == columns_markdown(), (
        "regenerate the table with: python -c 'from capindex.store.schema import "
        "columns_markdown; print(columns_markdown())'")


def test_sql_and_arrow_schemas_come_from_one_definition():
    assert tuple(ImageRecord.__table__.columns.keys()) == COLUMN_NAMES
    assert tuple(ARROW_SCHEMA.names) == COLUMN_NAMES
    assert {"path", "caption"} <= set(COLUMN_NAMES)


def test_docs_name_the_whoosh_distribution_and_why():
    assert "whoosh3" in ARCHITECTURE and "warning" in ARCHITECTURE


def test_every_sample_image_has_a_licence_line():
    licence = (REPO / "sample_images" / "LICENSE.md").read_text(encoding="utf-8")
    for image in sorted((REPO / "sample_images").glob("*.jpg")):
        assert f"`{image.name}`" in licence

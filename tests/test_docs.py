"""The docs say what the code does: the column table, the module map, licences."""

from __future__ import annotations

import re
from pathlib import Path

from capindex.store.schema import columns_markdown

REPO = Path(__file__).resolve().parent.parent
ARCHITECTURE = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")


def test_column_table_in_the_docs_is_generated_from_the_schema():
    table = re.search(r"<!-- columns:.*?-->\n(.*?)\n<!-- /columns -->", ARCHITECTURE, re.S)
    assert table, "docs/architecture.md lost its column table markers"
    assert table.group(1) == columns_markdown(), (
        "regenerate the table with: python -c 'from capindex.store.schema import "
        "columns_markdown; print(columns_markdown())'")


def test_architecture_names_every_module_and_only_modules_that_exist():
    modules = {p.relative_to(REPO / "capindex").as_posix() for p in (REPO / "capindex").rglob("*.py")
               if p.name not in ("__init__.py", "__main__.py")}
    missing = sorted(m for m in modules if Path(m).name not in ARCHITECTURE)
    assert not missing, f"docs/architecture.md does not mention: {missing}"
    named = set(re.findall(r"`((?:capindex/)?(?:[a-z_]+/)+[a-z_]+\.py)", ARCHITECTURE))
    gone = sorted(n for n in named if not any((REPO / base / n).is_file()
                                               for base in ("", "capindex", "benchmarks")))
    assert not gone, f"docs/architecture.md names files that do not exist: {gone}"


def test_every_sample_image_has_a_licence_line():
    licence = (REPO / "sample_images" / "LICENSE.md").read_text(encoding="utf-8")
    for image in sorted((REPO / "sample_images").glob("*.jpg")):
        assert f"`{image.name}`" in licence

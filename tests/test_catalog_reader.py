"""Search's catalogue reads without SQLAlchemy: the same rows as Catalog, the rest handed on."""

from __future__ import annotations

import pytest
from fakes import FakeCaptioner

import capindex
from capindex.errors import CatalogDamaged
from capindex.store.catalog_reader import CatalogReader
from capindex.store.library_dir import LibraryDir


def test_reader_rows_equal_the_catalogue_rows(tmp_path, photos):
    capindex.Library(tmp_path / "lib").ingest([photos], captioner=FakeCaptioner(), objects=False,
                                              workers=0)
    library = LibraryDir(tmp_path / "lib")
    with library.open_catalog(read_only=True) as catalog:
        expected = list(catalog.rows())
        stats = catalog.stats()
    assert len(expected) == 4
    ids = [row["id"] for row in expected]
    with library.read_catalog() as reader:
        assert isinstance(reader, CatalogReader)
        assert list(reader.rows(list(reversed(ids)))) == expected  # decoded alike, by id
        assert list(reader.rows([ids[1], 10**9])) == [expected[1]]
        assert reader.has_ok_rows()
        assert reader.id_of(expected[0]["path"]) == ids[0] and reader.id_of("/nowhere") is None
        assert reader._catalog is None  # no SQLAlchemy so far
        assert reader.stats() == stats  # anything else: the full Catalog
    assert isinstance(expected[0]["tags"], list) and expected[0]["ingested_at"].year > 2000


def test_reader_of_a_damaged_catalogue_says_so(tmp_path, photos):
    capindex.Library(tmp_path / "lib").ingest([photos], captioner=FakeCaptioner(), objects=False,
                                              workers=0)
    library = LibraryDir(tmp_path / "lib")
    library.catalog_path.write_bytes(b"this is not SQLite" * 100)
    for suffix in ("-wal", "-shm"):
        library.catalog_path.with_name(library.catalog_path.name + suffix).unlink(missing_ok=True)
    with pytest.raises(CatalogDamaged):
        library.read_catalog()

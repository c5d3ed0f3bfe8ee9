"""Persistence, one module per store. SQLite (`catalog.py`) is the source of truth; the
Parquet mirror (`parquet.py`) and the keyword index (`keyword.py`) are rebuilt from it.

    library_dir.py   where a library lives, its paths, the writer lock
    schema.py        the image row, declared once (SQL table and Arrow schema)
    catalog.py       all SQL on catalog.sqlite
    parquet.py       the Parquet mirror
    keyword.py       the keyword index, SQLite FTS5 (keyword_query.py: its query language)
    sinks.py         one ingest batch -> catalogue commit -> derived stores
    export.py        the whole catalogue as Parquet, CSV or JSON Lines

Modules are imported where used (SQLAlchemy and pyarrow load on demand).
"""

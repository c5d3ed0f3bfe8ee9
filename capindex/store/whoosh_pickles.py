"""Whoosh's pickles read with an allowlist (whoosh3 3.54), installed by `apply()`.

Whoosh keeps parts of an index as pickles: the table of contents (`_MAIN_N.toc`: the
schema and the segment list), postings block headers and data, inlined postings and the
stored fields. A plain unpickler calls whatever a pickle names, so a crafted index file
would run code on `capindex search`. `apply()` points every place where Whoosh 3.54
unpickles index data at `load` and `loads` here, whose unpickler admits only:

- Whoosh's own classes from the modules that describe an index (fields, analysis,
  formats, codecs, columns, id sets, languages but the WordNet thesaurus), and its
  stemming functions (`whoosh.lang.*`): what a schema and a segment list are made of;
- a few built-in types and harmless functions a pickle of them refers to (`frozenset`,
  `collections.defaultdict`, `re._compile`, `_codecs.encode` for bytes, ...).

Anything else (a module outside these, a name with a dot, a function elsewhere in Whoosh,
such as `whoosh.util.loading.find_object`) raises `pickle.UnpicklingError`, which the
keyword index reports as a damaged index. The loader of Whoosh's old -110 index format,
which has its own unpickler, is removed: capindex never wrote that format.

Not covered, because they never read a library's files: the writer's temporary sort runs
(`whoosh.externalsort`, `whoosh.multiproc`), written and read back by the same ingest.
A test walks Whoosh's modules and checks that no other holds pickle's own loaders.
"""

from __future__ import annotations

import importlib
import io
import pickle
import types

from capindex.store.whoosh_fixes import check_version

# Where Whoosh 3.54 reads pickles from index files: module -> its names for pickle's loaders.
PATCHED = {
    "whoosh.index": ("pickle",),  # the TOC's schema: pickle.loads
    "whoosh.filedb.structfile": ("load",),  # read_pickle: segments, block headers, tables
    "whoosh.filedb.fileindex": ("pickle",),
    "whoosh.codec.whoosh3": ("loads",),  # postings block data, inlined postings
    "whoosh.codec.whoosh2": ("loads",),
    "whoosh.codec.plaintext": ("loads",),
    "whoosh.columns": ("loads",),  # stored fields (PickleColumn)
    "whoosh.formats": ("loads",),  # posting values of some formats
}

# Whoosh modules whose classes describe an index; functions only from whoosh.lang (stemmers).
_WHOOSH_DATA = ("whoosh.fields", "whoosh.analysis", "whoosh.formats", "whoosh.codec",
                "whoosh.columns", "whoosh.idsets", "whoosh.lang")
_FUNCTIONS = ("whoosh.lang",)
_EXCLUDED = ("whoosh.lang.wordnet",)  # builds and parses thesaurus files: not index data
_OTHERS = {
    ("builtins", name) for name in ("set", "frozenset", "int", "float", "complex", "bool",
                                    "str", "bytes", "bytearray", "list", "dict", "tuple")
} | {("__builtin__", name) for name in ("set", "frozenset", "int", "float", "long", "bool",
                                          "unicode", "str", "bytearray", "list", "dict",
                                          "tuple")} | {
    ("_codecs", "encode"), ("codecs", "encode"), ("re", "_compile"),
    ("collections", "defaultdict"), ("collections", "OrderedDict"),
    ("array", "array"), ("array", "_array_reconstructor"),
}


class RestrictedUnpickler(pickle.Unpickler):
    """Admits only the globals of a Whoosh index (see the module docstring)."""

    def find_class(self, module: str, name: str):
        if (module, name) in _OTHERS:
            return super().find_class(module, name)
        if "." not in name and module not in _EXCLUDED and any(
                module == prefix or module.startswith(prefix + ".") for prefix in _WHOOSH_DATA):
            try:
                found = getattr(importlib.import_module(module), name, None)
            except ImportError:
                found = None
            own = getattr(found, "__module__", None) == module
            function = isinstance(found, types.FunctionType) and module.startswith(_FUNCTIONS)
            if own and (isinstance(found, type) or function):
                return found
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a Whoosh index")


def loads(data: bytes, **_ignored):
    return RestrictedUnpickler(io.BytesIO(data)).load()


def load(file, **_ignored):
    return RestrictedUnpickler(file).load()


def _pickle_module() -> types.ModuleType:
    """pickle as Whoosh's modules see it: the same, but for the loaders."""
    module = types.ModuleType("pickle")
    module.__dict__.update({k: v for k, v in vars(pickle).items() if not k.startswith("__")})
    module.load, module.loads, module.Unpickler = load, loads, RestrictedUnpickler
    return module


def apply() -> None:
    """Make Whoosh read index pickles with the allowlist (idempotent); CapindexError for a
    Whoosh release this was not written for."""
    check_version()
    safe = {"pickle": _pickle_module(), "load": load, "loads": loads}
    for module_name, names in PATCHED.items():
        module = importlib.import_module(module_name)
        for name in names:
            if getattr(module, name) in (pickle, pickle.load, pickle.loads):
                setattr(module, name, safe[name])
    importlib.import_module("whoosh.index").toc_loaders.clear()

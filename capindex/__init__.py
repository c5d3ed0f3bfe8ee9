"""capindex: offline image captioning and photo search for photo folders.

    import capindex
    lib = capindex.Library("my-library")
    lib.ingest(["sample_images"])
    print(lib.search("cat")[0])
"""

import os

__version__ = "0.1.0"
__all__ = ["Library", "__version__"]

# torch's OpenMP threads (libgomp) spin for a while after each parallel region before
# they sleep; by default about 300,000 turns, long enough to fill the gaps between the
# model's small operations. The spinning took 17% of an ingest's CPU on 2 cores, time
# the decode workers need. libgomp reads this when torch is first imported, so it is set
# here, before any capindex module imports torch; a value already set wins.
# docs/performance.md has the measurements.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")


def __getattr__(name: str):
    # Lazy, so `import capindex` (and `capindex --help`) loads no SQLAlchemy or torch.
    if name == "Library":
        from capindex.api import Library

        return Library
    raise AttributeError(f"module 'capindex' has no attribute {name!r}")

#!/usr/bin/env python
"""How fast `capindex ingest` and `capindex search` are on this machine: the command line
of the benchmark in benchmarks/capbench (see its docstring, and docs/performance.md).

    python benchmarks/throughput.py                   # defaults: a few minutes on 2 cores
    python benchmarks/throughput.py --quick           # seconds: a smoke test (tests/test_benchmarks.py)
    python benchmarks/throughput.py --images 500 --memory-sizes 300,3000 --out results.json
"""

import sys
from pathlib import Path

# The repository root first, as for `python -m benchmarks.capbench` from it: the benchmark
# package, and the capindex of this checkout, whose names capbench.capindex_api imports.
REPO = str(Path(__file__).resolve().parent.parent)
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from benchmarks.capbench.cli import main  # noqa: E402

if __name__ == "__main__":
    main()

"""`python -m benchmarks.capbench [options]`: the throughput benchmark (see the package)."""

import sys

from .cli import main

sys.argv[0] = "python -m benchmarks.capbench"  # for --help and the results' "command"
main()

"""capindex's benchmarks (not part of the installed package): `capbench`, the throughput
benchmark (`python benchmarks/throughput.py` or `python -m benchmarks.capbench`), and
`device/`, the prepared GPU checks built on it. docs/performance.md has the numbers."""

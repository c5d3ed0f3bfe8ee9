"""How fast `capindex ingest` and `capindex search` are on this machine.

    python benchmarks/throughput.py                   # defaults: a few minutes on 2 cores
    python benchmarks/throughput.py --quick           # seconds: a smoke test (tests/test_benchmarks.py)
    python benchmarks/throughput.py --images 500 --memory-sizes 300,3000 --out results.json

(`python -m benchmarks.capbench` from the repository root is the same command.)

It makes its own JPEGs (`data.make_set`): `small`, about 500x375 like web photos,
and `large`, 4000x3000 (12 MP) like a camera's, with real texture (crops of
sample_images/ plus sensor-like noise) so that file sizes and decode work are
realistic. On the same images, in one run, it measures:

- decode:  files -> model-ready tensors through the pipeline's own decode stage
           (DecodeDataset + ingest.decode_loader, the ingest settings), images/s
           and CPU-ms per image (workers and main process) (`stages`);
- model:   Captioner.caption_batch on tensors already in memory, same batch size,
           images/s and CPU-ms per image; with the model on the CPU, the two give
           the most ingest/model can reach when the model keeps every core busy
           (`cpu.cpu_bound`);
- data path: ingest in this process with a captioner that answers at once (the
           same settings): how fast everything but the model goes, images/s and the
           main process's CPU-ms per image (what a fast GPU leaves as the limit);
- ingest:  the real `capindex ingest` into a fresh library, in a subprocess
           (`ingest.run_ingest`): images/s over the run (from its summary) and the
           whole process's wall time, peak RSS and CPU time of the process tree (main
           process and decode workers); its stderr is a pseudo-terminal, so it draws
           its progress bar as for a user, and the counts the bar shows give the rate
           of the run's steady part (`ingest.steady_rate`), without its start and
           finish; model-only and ingest alternate for --rounds rounds and the median
           round of each, and the median of the rounds' ratios, are reported
           (`summary.side_by_side`);
- memory:  peak RSS of `capindex ingest` at two sizes (--memory-sizes), which
           should not grow with the number of images; the images the larger run
           adds, over the time it adds, give the sustained rate (what a run pays
           once cancels out), compared with the small set's model-only rate; then
           re-runs over the larger library: every file unchanged, then every file
           moved into a subfolder (hashed, not captioned) (`memory`);
- search:  an FTS5 keyword index of --search-docs generated captions built through
           capindex's KeywordIndex as ingest feeds it (docs/s), then --queries
           queries through KeywordIndex.search (p50/p95 ms) (`search`).

Prints a table (stdout) and writes JSON (--out). Progress goes to stderr.
The machine's description includes the load average at the start and the end:
numbers taken while something else ran are not comparable with a quiet run.

Modules: `cli` (options, the run), `data` (the JPEGs), `captions` (generated captions
and queries), `machine`, `cpu` (CPU-time accounting), `stages` (decode, model and data
path in this process), `ingest` and `watch` (the ingest subprocess, its memory and
progress bar), `memory`, `search`, `summary` (rounds, ratios, targets), `report` (the
table, JSON, log lines), `capindex_api` (every capindex name used, in one place).
"""

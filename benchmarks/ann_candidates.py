"""ANN libraries against exact search on the scale benchmark's clustered unit vectors: build
time, p50/p95 wall and CPU ms per query, recall@10. Not a dependency of capindex: install
faiss-cpu and usearch (with numkong) into a scratch folder and put it on PYTHONPATH:

    pip install --target /tmp/annpkgs faiss-cpu usearch numkong
    PYTHONPATH=/tmp/annpkgs:. python benchmarks/ann_candidates.py 100000 exact faissivf faisshnsw usearch
"""

from __future__ import annotations

import sys
import time

import numpy as np

from benchmarks.capbench.scale_data import unit_vectors


def run(name, search, queries, truth) -> None:
    wall, cpu, recall = [], [], []
    for query, best in zip(queries, truth):
        w, c = time.perf_counter(), time.thread_time()
        ids = search(query)
        cpu.append(time.thread_time() - c)
        wall.append(time.perf_counter() - w)
        recall.append(len(best & {int(i) for i in ids[:10]}) / 10)
    wall.sort()
    cpu.sort()
    k50, k95 = len(wall) // 2, int(len(wall) * 0.95)
    print(f"{name}: wall p50 {wall[k50] * 1e3:.1f} p95 {wall[k95] * 1e3:.1f} ms | cpu p50 "
          f"{cpu[k50] * 1e3:.1f} p95 {cpu[k95] * 1e3:.1f} ms | recall@10 {np.mean(recall):.3f}",
          flush=True)


def timed(name, build) -> None:
    w, c = time.perf_counter(), time.process_time()
    build()
    print(f"  build {name}: {time.perf_counter() - w:.1f} s wall, "
          f"{time.process_time() - c:.1f} s cpu", flush=True)


def main(count: int, which: list[str]) -> None:
    rng = np.random.default_rng(0)
    vectors = np.concatenate([unit_vectors(rng, min(100_000, count))
                              for _ in range(max(1, count // 100_000))])
    # queries near stored photos: a stored vector plus noise
    queries = unit_vectors(np.random.default_rng(1), 50) * 0.3 + \
        vectors[np.random.default_rng(2).integers(0, count, 50)]
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    truth = [set(np.argsort(-(vectors @ q))[:10].tolist()) for q in queries]
    if "exact" in which:
        run("numpy fp32 exact", lambda q: np.argsort(-(vectors @ q))[:10], queries, truth)
    if "faissivf" in which or "faisshnsw" in which:
        import faiss

        faiss.omp_set_num_threads(1)
    if "faissivf" in which:
        lists = int(4 * np.sqrt(count))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(384), 384, lists, faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(3).choice(count, min(count, 40 * lists), replace=False)
        timed(f"ivf train nlist={lists}", lambda: index.train(vectors[sample]))
        timed("ivf add", lambda: index.add(vectors))
        for probe in (8, 16, 32, 64):
            index.nprobe = probe
            run(f"faiss IVFFlat nprobe={probe}", lambda q: index.search(q[None], 10)[1][0],
                queries, truth)
    if "faisshnsw" in which:
        graph = faiss.IndexHNSWFlat(384, 32, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = 64
        timed("faiss hnsw add", lambda: graph.add(vectors))
        for ef in (32, 64, 128):
            graph.hnsw.efSearch = ef
            run(f"faiss HNSW ef={ef}", lambda q: graph.search(q[None], 10)[1][0], queries, truth)
    if "usearch" in which:
        from usearch.index import Index

        usearch = Index(ndim=384, metric="cos", dtype="i8", connectivity=16, expansion_add=64)
        timed("usearch i8 add", lambda: usearch.add(np.arange(count), vectors, threads=1))
        for ef in (32, 64, 128):
            usearch.expansion_search = ef
            run(f"usearch i8 ef={ef}", lambda q: usearch.search(q, 10, threads=1).keys,
                queries, truth)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2:])

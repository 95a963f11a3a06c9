"""The floor for the latency scenario: predict() called in-process, no server.

Usage: python inproc.py PREDICTOR_DIR [N]. Loads PREDICTOR_DIR/predict.py:Predictor the way a
worker would (setup() once), then times N calls of predict() with perf_counter_ns and prints
one JSON line: {"n", "p50_us", "p99_us", "mean_us", "min_us", "max_us"}.
"""

import importlib.util
import json
import os
import sys
import time
import warnings


def main():
    d = os.path.abspath(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
    os.chdir(d)
    sys.path.insert(0, d)
    warnings.simplefilter("ignore")
    spec = importlib.util.spec_from_file_location("predict", os.path.join(d, "predict.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    p = mod.Predictor()
    if hasattr(p, "setup"):
        p.setup()
    for _ in range(1000):
        p.predict()
    ns = time.perf_counter_ns
    samples = [0] * n
    for i in range(n):
        t0 = ns()
        p.predict()
        samples[i] = ns() - t0
    samples.sort()

    def pct(q):
        return samples[min(n - 1, int(q / 100.0 * n))] / 1000.0

    print(json.dumps({"n": n, "p50_us": pct(50), "p99_us": pct(99), "mean_us": sum(samples) / n / 1000.0,
                      "min_us": samples[0] / 1000.0, "max_us": samples[-1] / 1000.0}))


if __name__ == "__main__":
    main()

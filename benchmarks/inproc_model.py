"""The in-process floor of the real-model scenario: the minilm predictor loaded as a worker
would (setup() once, on this thread), then N calls of predict() timed on the thread that
ran setup(), and N more on a second thread. Prints one JSON line:
{"n", "setup_thread": {"p50_ms", "p99_ms"}, "other_thread": {...}, "torch_threads"}.

Usage: python inproc_model.py PREDICTOR_DIR TEXT [N]
"""

import importlib.util
import json
import os
import sys
import threading
import time


def timings(p, text, n):
    for _ in range(5):
        p.predict(text=text)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        p.predict(text=text)
        out.append((time.perf_counter() - t0) * 1e3)
    out.sort()
    return {"p50_ms": out[n // 2], "p99_ms": out[min(n - 1, int(n * 0.99))]}


def main():
    d = os.path.abspath(sys.argv[1])
    text = sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 60
    os.chdir(d)
    sys.path.insert(0, d)
    spec = importlib.util.spec_from_file_location("predict", os.path.join(d, "predict.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    p = mod.Predictor()
    p.setup()
    res = {"n": n, "setup_thread": timings(p, text, n)}
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("r", timings(p, text, n)))
    t.start()
    t.join()
    res["other_thread"] = box["r"]
    import torch

    res["torch_threads"] = torch.get_num_threads()
    print(json.dumps(res))


if __name__ == "__main__":
    main()

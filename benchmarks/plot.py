"""Plots for benchmarks/results/latest.json (matplotlib; run by run.py from benchmarks/.venv-tools).

    python plot.py RESULTS_JSON OUT_DIR

Writes speedup.png (ours vs the anchor, every scenario), latency.png, startup.png, rss.png and
payloads.png. Bars are medians; whiskers span min to max over all samples (speedup whiskers:
the per-round ratios).
"""

import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

OURS = "#1f77b4"
ANCHOR = "#ff7f0e"
FLOOR = "#2ca02c"


def med_err(entry):
    if not entry:
        return 0.0, (0.0, 0.0)
    m = entry["median"]
    return m, (m - entry["min"], entry["max"] - m)


def subtitle(doc):
    m = doc["meta"]
    mach = m["machine"]
    return "%s · %s CPUs (%s) · %d rounds (%s) · git %s\n%s" % (
        m["date"][:16].replace("T", " "), mach["nproc"], mach["cpu_model"], m["rounds"], m["mode"], m["git"],
        m["cores_note"])


def num(y):
    if y >= 1000:
        return "%.0f" % y
    if y >= 10:
        return "%.3g" % y
    return "%.3g" % y


def finish(fig, doc, path):
    fig.text(0.5, 0.005, subtitle(doc), ha="center", va="bottom", fontsize=7, color="#555")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def grouped(ax, labels, series, unit, log=False):
    """series: [(name, color, [entry or None per label])]."""
    n = len(series)
    width = 0.8 / n
    for i, (name, color, entries) in enumerate(series):
        xs, ys, lo, hi = [], [], [], []
        for j, e in enumerate(entries):
            if not e:
                continue
            m, (a, b) = med_err(e)
            xs.append(j - 0.4 + width * (i + 0.5))
            ys.append(m)
            lo.append(a)
            hi.append(b)
        ax.bar(xs, ys, width, color=color, label=name, yerr=[lo, hi], capsize=3, error_kw={"elinewidth": 0.8})
        for x, y in zip(xs, ys):
            ax.annotate(num(y), (x, y), ha="center", va="bottom", fontsize=7, xytext=(0, 2),
                        textcoords="offset points")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel(unit)
    if log:
        ax.set_yscale("log")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)


def plot_speedup(doc, out):
    s = doc["scenarios"]
    rows = []
    for key, e in s.items():
        if "speedup" not in e or e["unit"] == "MiB" or key == "schema50_cost_us":
            continue
        goal = {"sync_rps": 4, "async8_rps": 10, "startup_s": 2, "sse_s": 2, "file64_datauri_s": 2,
                "file64_upload_s": 2, "json20_s": 2}.get(key)
        rows.append((e["title"], e["speedup"], e.get("speedup_round_min", e["speedup"]),
                     e.get("speedup_round_max", e["speedup"]), goal))
    if not rows:
        return
    rows.reverse()
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(rows) + 1.6))
    ys = range(len(rows))
    vals = [r[1] for r in rows]
    colors = [OURS if v >= 1 else "#d62728" for v in vals]
    # whiskers: the per-round speedups (the overall one, a ratio of medians, may lie outside them)
    err = [[max(0.0, r[1] - r[2]) for r in rows], [max(0.0, r[3] - r[1]) for r in rows]]
    ax.barh(list(ys), vals, color=colors, xerr=err, capsize=3, error_kw={"elinewidth": 0.8})
    for y, r in zip(ys, rows):
        ax.annotate("%.2f×" % r[1], (max(r[1], r[3]), y), va="center", fontsize=8, xytext=(5, 0),
                    textcoords="offset points")
        if r[4]:
            ax.plot([r[4], r[4]], [y - 0.4, y + 0.4], color="k", lw=1.5)
    ax.axvline(1, color="#888", lw=1, ls="--")
    ax.set_yticks(list(ys))
    ax.set_yticklabels([r[0] for r in rows], fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("speedup of ours over the anchor (log scale; black tick: goal; red: slower)")
    ax.set_title("coglet in C vs coglet 0.23.1: speedup per scenario")
    ax.grid(axis="x", alpha=0.3, which="both")
    finish(fig, doc, os.path.join(out, "speedup.png"))


def plot_latency(doc, out):
    s = doc["scenarios"]
    p50, p99 = s.get("sync_p50_us"), s.get("sync_p99_us")
    if not p50 or not p99:
        return
    floor = doc.get("inproc_floor") or []

    def fl(key):
        v = sorted(f[key] for f in floor)
        return {"median": v[len(v) // 2], "min": v[0], "max": v[-1]} if v else None

    fig, ax = plt.subplots(figsize=(8, 4.8))
    grouped(ax, ["p50", "p99"], [
        ("predict() in-process", FLOOR, [fl("p50_us"), fl("p99_us")]),
        ("ours", OURS, [p50.get("ours"), p99.get("ours")]),
        ("anchor", ANCHOR, [p50.get("anchor"), p99.get("anchor")]),
    ], "µs (log scale)", log=True)
    if p50.get("ours"):
        m = p50["ours"]["median"]
        ax.axhline(min(2 * m, m + 100), color="k", lw=1, ls=":", label="goal: p99 ≤ 2× our p50 and ≤ our p50 + 100 µs")
        ax.legend(fontsize=8)
    ax.set_title("sync no-op, 1 keep-alive connection: request latency")
    finish(fig, doc, os.path.join(out, "latency.png"))


def plot_startup(doc, out):
    e = doc["scenarios"].get("startup_s")
    if not e:
        return
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for i, (kind, color) in enumerate((("ours", OURS), ("anchor", ANCHOR))):
        x = e.get(kind)
        if not x:
            continue
        m, (lo, hi) = med_err(x)
        ax.bar([i], [m], 0.6, color=color, yerr=[[lo], [hi]], capsize=4)
        pts = [v for r in x["samples"] for v in r]
        ax.scatter([i + 0.15] * len(pts), pts, s=10, color="k", zorder=3)
        ax.annotate("%.3f s" % m, (i, m), ha="center", va="bottom", xytext=(0, 3), textcoords="offset points")
    if e.get("anchor"):
        ax.axhline(e["anchor"]["median"] * 0.5, color="k", ls=":", lw=1, label="goal: 0.5× the anchor")
        ax.legend(fontsize=8)
    ax.set_xticks([0, 1])
    ax.set_xticklabels(["ours", "anchor"])
    ax.set_ylabel("s")
    ax.set_title("process start → READY (trivial predictor)")
    ax.grid(axis="y", alpha=0.3)
    finish(fig, doc, os.path.join(out, "startup.png"))


def plot_rss(doc, out):
    s = doc["scenarios"]
    base = doc["meta"].get("launcher_baseline_rss_mib") or {}
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [3, 3]})
    keys1 = [("rss_idle_mib", "idle"), ("rss_load_mib", "sync load"), ("rss_async_load_mib", "async ×8 load"),
             ("worker_rss_idle_mib", "worker idle")]
    keys1 = [k for k in keys1 if k[0] in s]
    if keys1:
        grouped(a1, [k[1] for k in keys1], [
            ("ours", OURS, [s[k].get("ours") for k, _ in keys1]),
            ("anchor", ANCHOR, [s[k].get("anchor") for k, _ in keys1]),
        ], "MiB (VmRSS)")
        if base.get("ours"):
            a1.axhline(base["ours"], color=OURS, ls=":", lw=1, label="launcher alone (ours' venv)")
            a1.axhline(base["ours"] + 10, color="k", ls="--", lw=1, label="goal: launcher + 10 MiB")
        if base.get("anchor"):
            a1.axhline(base["anchor"], color=ANCHOR, ls=":", lw=1, label="launcher alone (anchor's venv)")
        a1.set_ylim(0, max(a1.get_ylim()[1], (base.get("ours") or 0) + 10) * 1.35)
        a1.legend(fontsize=7, loc="upper left", ncol=2)
        a1.set_title("parent RSS (python -m cog.server.http process)")
    keys2 = [("file64_datauri_hwm_mib", "64 MiB → data: URI"), ("file64_upload_hwm_mib", "64 MiB → upload"),
             ("json20_hwm_mib", "20 MiB JSON in")]
    keys2 = [k for k in keys2 if k[0] in s]
    if keys2:
        grouped(a2, [k[1] for k in keys2], [
            ("ours", OURS, [s[k].get("ours") for k, _ in keys2]),
            ("anchor", ANCHOR, [s[k].get("anchor") for k, _ in keys2]),
        ], "MiB (VmHWM)")
        a2.axhline(128, color="k", ls="--", lw=1, label="goal for 64 MiB files: 128 MiB")
        a2.legend(fontsize=7)
        a2.set_title("parent peak RSS with big payloads")
    finish(fig, doc, os.path.join(out, "rss.png"))


def plot_payloads(doc, out):
    s = doc["scenarios"]
    keys = [("sse_s", "SSE 1,000 chunks"), ("file64_datauri_s", "64 MiB data: URI"),
            ("file64_upload_s", "64 MiB upload"), ("json20_s", "20 MiB JSON in")]
    keys = [k for k in keys if k[0] in s]
    if not keys:
        return
    fig, ax = plt.subplots(figsize=(9, 4.6))
    grouped(ax, [k[1] for k in keys], [
        ("ours", OURS, [s[k].get("ours") for k, _ in keys]),
        ("anchor", ANCHOR, [s[k].get("anchor") for k, _ in keys]),
    ], "seconds per request (log scale)", log=True)
    ax.set_title("end-to-end time of one request with a big payload or a stream")
    finish(fig, doc, os.path.join(out, "payloads.png"))


def plot_model(doc, out):
    s = doc["scenarios"]
    if "model_p50_ms" not in s:
        return
    get = lambda key, kind: (s.get(key) or {}).get(kind)  # noqa: E731
    fig, ax = plt.subplots(figsize=(9, 4.8))
    grouped(ax, ["in-process,\nsetup() thread", "in-process,\nsecond thread", "served p50", "predict_time"], [
        ("ours' venv / ours", OURS, [get("model_inproc_p50_ms", "ours"), get("model_inproc_thread_p50_ms", "ours"),
                                     get("model_p50_ms", "ours"), get("model_predict_time_ms", "ours")]),
        ("anchor's venv / anchor", ANCHOR, [get("model_inproc_p50_ms", "anchor"),
                                            get("model_inproc_thread_p50_ms", "anchor"), get("model_p50_ms", "anchor"),
                                            get("model_predict_time_ms", "anchor")]),
    ], "ms")
    e = s["model_p50_ms"]
    if "goal_limit_ms" in e:
        ax.axhline(e["goal_limit_ms"], color="k", lw=1, ls=":", label="goal: in-process p50 × 1.05 + 0.5 ms")
        ax.legend(fontsize=8)
    pinned = doc["meta"].get("model_pinned")
    ax.set_title("all-MiniLM-L6-v2 embedding of one sentence (PyTorch, CPU), 60 sequential requests\n"
                 + ("servers pinned to one CPU (torch: 1 thread)" if pinned else "servers on every CPU"), fontsize=10)
    finish(fig, doc, os.path.join(out, "model-pinned.png" if pinned else "model.png"))


def main():
    path, out = sys.argv[1], sys.argv[2]
    with open(path) as f:
        doc = json.load(f)
    os.makedirs(out, exist_ok=True)
    model_only = doc["meta"].get("scenarios_run") == ["model"]  # results/model*.json: its own plot only
    fns = (plot_model,) if model_only else (plot_speedup, plot_latency, plot_startup, plot_rss, plot_payloads)
    for fn in fns:
        try:
            fn(doc, out)
        except Exception as e:  # noqa: BLE001 - one bad plot must not lose the others
            print("plot %s failed: %r" % (fn.__name__, e), file=sys.stderr)
    print("plots written to %s" % out, file=sys.stderr)


if __name__ == "__main__":
    main()

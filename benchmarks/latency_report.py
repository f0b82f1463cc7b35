"""What benchmarks.latency's figures say: the floors, the tables, the findings and the chart.

Everything here reads the results dictionary that benchmarks.latency writes as latency.json, so a
report can be remade from a saved run. The findings printed under a missed floor are computed from
the same run's profile and peaks, never written for a particular machine.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .peak import DESCRIPTION as PEAK_DESCRIPTION
from .peak import SIZES as PEAK_SIZES
from .timing import BATCH_SIZES, FLOOR_BATCH

# The floors of issue 5. Speed-ups are "how many times faster"; the accuracy drop is in points.
FLOOR_SPEEDUP_INT8_LATENCY = 6.0
FLOOR_SPEEDUP_INT8_VS_FP32 = 1.5
FLOOR_SPEEDUP_ORT_VS_EAGER = 2.0
FLOOR_MAX_ACCURACY_DROP_POINTS = 0.15


def ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num and den else None


def lookup(results: dict, key: str, threads: str, batch: int) -> float | None:
    """Batch-1 p50 in µs (batch 1) or images/s at `batch`, of one format at one thread count; None if absent."""
    for f in results["formats"]:
        if f["key"] == key and threads in f["timings"]:
            timing = f["timings"][threads]
            return timing["latency_us"]["p50"] if batch == 1 else timing["throughput"][str(batch)]["images_per_s"]
    return None


def check(id: str, name: str, value: float | None, floor: float, lower_is_better: bool = False) -> dict:
    met = None if value is None else (value <= floor + 1e-9 if lower_is_better else value >= floor)
    return {"id": id, "name": name, "value": value, "floor": floor, "lower_is_better": lower_is_better, "met": met}


def floor_checks(results: dict) -> list[dict]:
    """The four floors of issue 5 (the throughput ones at every thread count measured)."""
    threads = sorted({t for f in results["formats"] for t in f["timings"]}, key=int)
    eager_p50, int8_p50 = (lookup(results, k, "1", 1) for k in ("torch_eager", "ort_int8"))
    checks = [check("int8_latency", "ORT INT8 vs PyTorch eager, batch-1 latency p50, 1 thread",
                    ratio(eager_p50, int8_p50), FLOOR_SPEEDUP_INT8_LATENCY)]
    b = FLOOR_BATCH
    for t in threads:
        checks.append(check("int8_vs_fp32", f"ORT INT8 vs ORT FP32, batch-{b} throughput, {t} thread(s)",
                            ratio(lookup(results, "ort_int8", t, b), lookup(results, "ort_fp32", t, b)),
                            FLOOR_SPEEDUP_INT8_VS_FP32))
    for t in threads:
        checks.append(check("ort_vs_eager", f"ORT FP32 vs PyTorch eager, batch-{b} throughput, {t} thread(s)",
                            ratio(lookup(results, "ort_fp32", t, b), lookup(results, "torch_eager", t, b)),
                            FLOOR_SPEEDUP_ORT_VS_EAGER))
    accuracy = {f["key"]: f["accuracy"] for f in results["formats"]}
    drop = max(100 * (accuracy["torch_eager"] - a) for a in accuracy.values())
    checks.append(check("accuracy", "largest accuracy drop vs PyTorch FP32 (points)", drop,
                        FLOOR_MAX_ACCURACY_DROP_POINTS, lower_is_better=True))
    return checks


# ------------------------------------------------------------------ output


def share(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def fmt_us(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}"


def fmt_rate(entry: dict) -> str:
    lo, hi = entry["per_round_min_max"]
    half_range = (hi - lo) / 2 / entry["images_per_s"]
    return f"{entry['images_per_s']:,.0f} ±{half_range:.0%}"


def model_table(results: dict) -> str:
    base = next(f["accuracy"] for f in results["formats"] if f["key"] == "torch_eager")
    n = results["accuracy_images"]
    lines = [f"| format | file | size | params | MACs/image | test accuracy ({n:,} images) | vs PyTorch FP32 |",
             "|---|---|---|---|---|---|---|"]
    for f in results["formats"]:
        lines.append(f"| {f['name']} | {Path(f['file']).name} | {f['file_bytes'] / 1024:.0f} KiB | {f['parameters']:,} "
                     f"| {f['macs_per_image'] / 1e6:.2f} M | {100 * f['accuracy']:.2f}% "
                     f"| {100 * (f['accuracy'] - base):+.2f} pt |")
    return "\n".join(lines)


def speed_table(results: dict) -> str:
    head = " | ".join(f"img/s b{b}" for b in BATCH_SIZES)
    lines = [f"| format | threads | b1 p50 µs (round range) | b1 p90 µs | b1 p99 µs | {head} "
             f"| GMAC/s b{FLOOR_BATCH} | % of its peak b1 / b{FLOOR_BATCH} |",
             "|---|---|---|---|---|" + "---|" * len(BATCH_SIZES) + "---|---|"]
    for f in results["formats"]:
        for t, s in f["timings"].items():
            lat, thr = s["latency_us"], s["throughput"]
            lo, hi = lat["p50_per_round_min_max"]
            shares = [thr[str(b)]["peak_share"] for b in (1, FLOOR_BATCH)]
            peak_text = " / ".join(peak_share_text(x) for x in shares)
            lines.append(f"| {f['name']} | {t} | {fmt_us(lat['p50'])} ({fmt_us(lo)}–{fmt_us(hi)}) "
                         f"| {fmt_us(lat['p90'])} "
                         f"| {fmt_us(lat['p99'])} | " + " | ".join(fmt_rate(thr[str(b)]) for b in BATCH_SIZES)
                         + f" | {thr[str(FLOOR_BATCH)]['mac_per_s'] / 1e9:.1f} | {peak_text} |")
    return "\n".join(lines)


def floor_lines(checks: list[dict]) -> list[str]:
    lines = []
    for c in checks:
        verdict = {True: "met", False: "NOT met", None: "n/a (format missing)"}[c["met"]]
        unit, sign = ("", "≤") if c["lower_is_better"] else ("x", "≥")
        value = "n/a" if c["value"] is None else f"{c['value']:.2f}{unit}"
        lines.append(f"- {c['name']}: {value} (floor {sign} {c['floor']:g}{unit}): {verdict}")
    return lines


def peak_share_text(x: float | None) -> str:
    """A share of peak; one above 1 means the peak was under-measured (benchmarks.latency notes it), so it
    is not shown as a figure."""
    if x is None:
        return "n/a"
    return f"{100 * x:.1f}%" if x <= 1 else "above its peak"


def peak_rate(results: dict, kind: str, threads: str) -> float | None:
    return results["peak"].get(kind, {}).get(threads, {}).get("gops")


def profile_sums(profile: dict) -> tuple[float, float]:
    """(µs in convolutions, µs in everything else) of one ORT profile column."""
    convs = sum(v for g, v in profile.items() if g.startswith("conv"))
    return convs, sum(profile.values()) - convs


def findings(results: dict) -> dict[str, str]:
    """What this run's own profile and peaks say about each floor, shown under a missed one."""
    prof = results.get("ort_profile_us") or {}
    eager_p50, int8_p50 = (lookup(results, k, "1", 1) for k in ("torch_eager", "ort_int8"))
    out = {}
    int8_b1 = prof.get("1", {}).get("int8")
    if eager_p50 and int8_p50 and int8_b1:
        convs, rest = profile_sums(int8_b1)
        out["int8_latency"] = (f"batch 1, 1 thread: PyTorch eager {fmt_us(eager_p50)} µs, ORT INT8 "
                               f"{fmt_us(int8_p50)} µs, of which ORT's profiler puts {convs:.0f} µs in convolutions "
                               f"and {rest:.0f} µs in the other ops.")
    gains = [f"{t} thread(s) {i / f:.1f}x" for t in results["peak"].get("ort_int8", {})
             if (i := peak_rate(results, "ort_int8", t)) and (f := peak_rate(results, "ort_fp32", t))]
    big = prof.get(str(FLOOR_BATCH), {})
    if gains and "fp32" in big and "int8" in big:
        per_conv = ", ".join(f"{g} {big['fp32'][g] / big['int8'][g]:.1f}x" for g in big["fp32"]
                             if g.startswith("conv") and big["int8"].get(g))
        (_, fp32_rest), (_, int8_rest) = profile_sums(big["fp32"]), profile_sums(big["int8"])
        out["int8_vs_fp32"] = (f"this CPU's INT8 product peak is {', '.join(gains)} its FP32 one (MatMulInteger vs "
                               f"MatMul, same library): the most INT8 can gain on a convolution. At batch "
                               f"{FLOOR_BATCH}, 1 thread, INT8 ran each conv this much faster: {per_conv}; outside "
                               f"the convs INT8 spent {int8_rest:,.0f} µs against FP32's {fp32_rest:,.0f} µs.")
    shares = {k: next((f["timings"]["1"]["throughput"][str(FLOOR_BATCH)]["peak_share"] for f in results["formats"]
                       if f["key"] == k and "1" in f["timings"]), None) for k in ("torch_eager", "ort_fp32")}
    if all(shares.values()):
        out["ort_vs_eager"] = (f"batch {FLOOR_BATCH}, 1 thread: PyTorch eager runs at "
                               f"{peak_share_text(shares['torch_eager'])} of torch's own float32 peak, ORT FP32 at "
                               f"{peak_share_text(shares['ort_fp32'])} of ONNX Runtime's.")
    base = next(f["accuracy"] for f in results["formats"] if f["key"] == "torch_eager")
    out["accuracy"] = "drop per format: " + ", ".join(f"{f['name']} {100 * (base - f['accuracy']):.2f} pt"
                                                      for f in results["formats"])
    return out


def missed_findings(results: dict) -> list[str]:
    found = findings(results)
    missed = dict.fromkeys(c["id"] for c in results["floors"] if c["met"] is False)
    return [f"- why, from this run: {found[i]}" for i in missed if i in found]


def header_lines(results: dict) -> list[str]:
    m, ckpt = results["machine"], results["checkpoint"]
    trials = "; ".join(f"{label}: " + (r["error"] if "error" in r else ", ".join(
        f"{k} {v:g}" for k, v in r.items() if k != "chosen")) for label, r in results["compiled"]["candidates"].items())
    return [
        f"## Inference latency and throughput ({results['mode']} mode)",
        f"Machine: {m['cpu']}, {m['cores']} cores ({' '.join(m['cpu_flags'])}); "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        f"Load: average {m['load_average_1_5_15min']} before, {results['load_average_after']} after; other processes "
        f"used {share(results['other_processes_cpu_share'])} of the CPUs while timing",
        f"Model: {ckpt['path']} ({results['arch']}, sha256 {ckpt['sha256'][:12]}); ONNX: "
        + ", ".join(f"{p} {o['path']} (sha256 {o['sha256'][:12]})" for p, o in results["onnx"].items()),
        f"Compiled PyTorch path: {results['compiled']['chosen']} (tried: {trials})",
    ]


def report(results: dict) -> str:
    peaks = "; ".join(f"{PEAK_DESCRIPTION[kind]}: " + ", ".join(f"{t} thread(s) {p['gops']:.1f} G/s"
                                                             for t, p in by_threads.items())
                      for kind, by_threads in results["peak"].items())
    ops = "; ".join(f"{p.upper()}: " + ", ".join(f"{op} x{n}" for op, n in counts.items())
                    for p, counts in results["ort_ops_after_optimisation"].items())
    parts = [
        *header_lines(results), "", model_table(results), "", speed_table(results), "",
        f"Measured peaks (best square product, n in {PEAK_SIZES}, operations per second, a multiply-add "
        f"counting 2): {peaks}. % of its peak = MACs/image × images/s ÷ (peak ÷ 2), each row against its own "
        "library and number type: PyTorch rows against torch.mm, ORT FP32 against ORT's MatMul, ORT INT8 against "
        "ORT's MatMulInteger.",
        f"{results['rounds']} rounds, formats in rotated order; latency percentiles pool all rounds; "
        "± is half the range of the per-round throughputs.",
        "", "Floors:", *floor_lines(results["floors"]), *missed_findings(results),
    ]
    if results["ort_profile_us"]:
        parts += ["", profile_table(results)]
    parts += ["", f"ORT graphs as run (ORT_ENABLE_ALL): {ops}"]
    if results["notes"]:
        parts += ["", "Notes:", *(f"- {n}" for n in results["notes"])]
    return "\n".join(parts)


def profile_table(results: dict) -> str:
    """ORT's per-node times, FP32 beside INT8, with each conv's share of the model's MACs."""
    prof = results["ort_profile_us"]
    columns = [(b, p) for b in prof for p in prof[b]]
    convs = [layer for layer in results["layers"] if layer["layer"].startswith("conv")]
    total = sum(layer["macs"] for layer in results["layers"])
    groups = list(dict.fromkeys(g for b, p in columns for g in prof[b][p]))
    lines = ["| ORT node group (1 thread, µs per call, ORT profiler) | share of MACs | "
             + " | ".join(f"{p.upper()} b{b}" for b, p in columns) + " |", "|---|---|" + "---|" * len(columns)]
    for g in sorted(groups, key=lambda g: (not g.startswith("conv"), g)):
        i = int(g.split()[1]) - 1 if g.startswith("conv") else None
        label = f"{g}: {convs[i]['layer']}" if i is not None and i < len(convs) else g
        mac_share = f"{convs[i]['macs'] / total:.1%}" if i is not None and i < len(convs) else ""
        cells = " | ".join(f"{prof[b][p].get(g, 0):,.0f}" for b, p in columns)
        lines.append(f"| {label} | {mac_share} | {cells} |")
    lines.append("| sum | | " + " | ".join(f"{sum(prof[b][p].values()):,.0f}" for b, p in columns) + " |")
    return "\n".join(lines)


def plot_latency(ax, results: dict) -> None:
    labels, p50, p90, colours = [], [], [], []
    for i, f in enumerate(results["formats"]):
        for t, s in f["timings"].items():
            labels.append(f"{f['name']}, {t} thr")
            p50.append(s["latency_us"]["p50"])
            p90.append(s["latency_us"]["p90"])
            colours.append(f"C{i}")
    y = np.arange(len(labels))
    ax.barh(y, p50, color=colours)
    ax.errorbar(p50, y, xerr=[np.zeros(len(y)), np.subtract(p90, p50)], fmt="none", ecolor="black", capsize=3)
    for yi, v in zip(y, p50):
        ax.text(v, yi, f" {fmt_us(v)}", va="bottom", fontsize=8)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xscale("log")  # formats differ by 10x; a few slow outliers would flatten a linear axis
    ax.set_xlabel("batch-1 latency, µs (bar: p50, whisker: to p90)")


def plot_throughput(ax, results: dict) -> None:
    for i, f in enumerate(results["formats"]):
        for t, s in f["timings"].items():
            rates = [s["throughput"][str(b)]["images_per_s"] for b in BATCH_SIZES]
            ax.plot(BATCH_SIZES, rates, marker="o", color=f"C{i}", linestyle="--" if t == "1" else "-",
                    label=f"{f['name']}, {t} thr")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(BATCH_SIZES, [str(b) for b in BATCH_SIZES])
    ax.set_xlabel("batch size")
    ax.set_ylabel("images / s")
    ax.legend(fontsize=8)


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    plot_latency(left, results)
    plot_throughput(right, results)
    fig.suptitle(f"{results['machine']['cpu']}, {results['machine']['cores']} cores ({results['mode']} mode)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)



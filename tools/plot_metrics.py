#!/usr/bin/env python3
"""Plot the metrics.jsonl of one or more `dsa train` runs and write a text summary.

    plot_metrics.py RUN_DIR [RUN_DIR...] --out OUT_DIR [--eval EVAL_JSON ...] [--title T]

Runs are read in the order given and are treated as consecutive phases (e.g. a dense LM
run, then a DSA run started from its checkpoint): a run whose steps start again at or
below the previous run's last step is shifted to continue after it. The plots, the
x-axis label and summary.txt say so ("tiny-dsa: steps 1-200 plotted at 301-500"), and
each stage or run switch is a dashed line labelled with the stage it starts; the
switches and shifts are also printed. Writes to OUT_DIR:
  lm_loss.png     LM loss vs step per run/stage, moving average, labelled stage switches
  indexer_kl.png  per-layer indexer KL and their sum vs step (log scale)
  recall.png      per-layer top-k recall of the dense attention mass vs step
  summary.txt     per run and stage: steps, first/last loss, KL, recall, tokens/s,
                  then a table of the --eval JSON files (dense_loss, sparse_loss, layers, tasks)
A truncated last line is skipped with a warning; any other malformed line is an error.
Exit status: 0 on success, 1 on data errors, 2 on usage errors.
"""
import argparse
import json
import os
import sys

import numpy as np

REQUIRED = ("step", "stage", "loss")


class DataError(Exception):
    pass


def read_metrics(run):
    """Lines of RUN/metrics.jsonl (or RUN itself when it is a file) as a list of dicts."""
    path = run if os.path.isfile(run) else os.path.join(run, "metrics.jsonl")
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror}")
    while lines and not lines[-1].strip():
        lines.pop()
    rows = []
    for i, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            if i == len(lines):
                print(f"warning: {path}:{i}: skipping truncated last line", file=sys.stderr)
                break
            raise DataError(f"{path}:{i}: malformed line: {e}")
        missing = [k for k in REQUIRED if k not in row]
        if missing:
            raise DataError(f"{path}:{i}: missing {', '.join(missing)}")
        if not isinstance(row["step"], int) or not isinstance(row["loss"], (int, float)):
            raise DataError(f"{path}:{i}: step must be an integer and loss a number")
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: no metrics lines")
    return rows


def segments(runs, notes=None):
    """Split runs into (run name, stage, rows, x) pieces; x continues across runs. A note
    for each run whose steps are shifted, or that does not start at step 1, is appended
    to `notes`."""
    out, last_x, prev = [], 0, None
    for run, rows in runs:
        name = os.path.basename(os.path.normpath(run))
        if name == "metrics.jsonl":
            name = os.path.basename(os.path.dirname(os.path.abspath(run)))
        offset = last_x if rows[0]["step"] <= last_x else 0
        first, last = rows[0]["step"], rows[-1]["step"]
        if notes is not None and offset:
            notes.append(f"{name}: steps {first}-{last} plotted at {first + offset:g}-{last + offset:g} "
                         f"(shifted by {offset:g} to follow {prev})")
        elif notes is not None and first > 1:
            notes.append(f"{name}: starts at step {first} (its metrics.jsonl holds no earlier step)")
        prev = name
        start = 0
        for i in range(1, len(rows) + 1):
            if i == len(rows) or rows[i]["stage"] != rows[start]["stage"]:
                seg = rows[start:i]
                x = np.array([r["step"] + offset for r in seg], dtype=float)
                out.append((name, seg[0]["stage"], seg, x))
                start = i
        last_x = out[-1][3][-1]
    return out


def per_layer(rows, key):
    """Matrix [rows x layers] of a per-layer list key, or None when absent."""
    vals = [r[key] for r in rows if isinstance(r.get(key), list)]
    if len(vals) != len(rows) or not vals:
        return None
    if len({len(v) for v in vals}) != 1:
        raise DataError(f"'{key}' has a varying number of layers within one stage")
    return np.array(vals, dtype=float)


def moving_average(y, w):
    if len(y) < 3 or w < 2:
        return y
    w = min(w, len(y))
    c = np.cumsum(np.insert(y, 0, 0.0))
    head = c[1:w] / np.arange(1, w)  # growing window at the start
    return np.concatenate([head, (c[w:] - c[:-w]) / w])


def boundaries(segs):
    """(x, label) of every stage or run switch: the x where the next piece starts."""
    out = []
    for i, (run, stage, rows, x) in enumerate(segs[1:], 1):
        label = stage if run == segs[i - 1][0] else f"{run} / {stage}"
        out.append((x[0] - 0.5, f"step {rows[0]['step']}: {label}" if x[0] != rows[0]["step"] else label))
    return out


def plot_all(segs, out, title, notes=()):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xlabel = "step" + ("  (" + "; ".join(notes) + ")" if notes else "")

    def figure(ylabel, name):
        fig, ax = plt.subplots(figsize=(10, 5))
        ax.set_xlabel(xlabel, fontsize=8 if notes else None)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title}: {name}" if title else name)
        ax.grid(alpha=0.3)
        for xb, label in boundaries(segs):  # stage and run switches, labelled with what starts
            ax.axvline(xb, color="gray", linestyle="--", linewidth=0.8)
            ax.text(xb, 0.98, " " + label, transform=ax.get_xaxis_transform(), rotation=90, va="top", ha="left",
                    fontsize=7, color="dimgray")
        return fig, ax

    def save(fig, ax, name):
        ax.legend(fontsize=8, loc="best")
        fig.tight_layout()
        fig.savefig(os.path.join(out, name), dpi=110)
        plt.close(fig)
        print(f"wrote {os.path.join(out, name)}")

    fig, ax = figure("LM loss (cross-entropy)", "LM loss")
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    total = sum(len(s[2]) for s in segs)
    for i, (run, stage, rows, x) in enumerate(segs):
        y = np.array([r["loss"] for r in rows], dtype=float)
        color = cycle[i % len(cycle)]
        ax.plot(x, y, color=color, alpha=0.3, linewidth=0.8)
        ax.plot(x, moving_average(y, max(1, total // 50)), color=color, linewidth=1.6,
                label=f"{run} / {stage}")
    save(fig, ax, "lm_loss.png")

    for key, name, ylabel, fname in (("indexer_kl", "indexer KL per layer", "KL(dense || indexer)", "indexer_kl.png"),
                                     ("recall", "top-k recall per layer", "recall of dense attention mass", "recall.png")):
        parts = [(x, m, rows) for _, _, rows, x in segs if (m := per_layer(rows, key)) is not None]
        if not parts:
            print(f"skipping {fname}: no metrics line has '{key}'")
            continue
        fig, ax = figure(ylabel, name)
        for layer in range(max(m.shape[1] for _, m, _ in parts)):
            for j, (x, m, _) in enumerate(parts):
                if layer < m.shape[1]:
                    ax.plot(x, m[:, layer], color=cycle[layer % len(cycle)], linewidth=1.0,
                            label=f"layer {layer}" if j == 0 else None)
        if key == "indexer_kl":
            for j, (x, m, rows) in enumerate(parts):
                s = np.array([r.get("indexer_loss", np.nan) for r in rows], dtype=float)
                s = np.where(np.isnan(s), m.sum(axis=1), s)
                ax.plot(x, s, color="black", linewidth=1.6, label="sum" if j == 0 else None)
            ax.set_yscale("log", nonpositive="mask")
        else:
            ax.set_ylim(0, 1)
        save(fig, ax, fname)


def table(header, rows, left=1):
    cols = [header] + rows
    width = [max(len(r[c]) for r in cols) for c in range(len(header))]
    fmt = lambda r: "  ".join(v.ljust(w) if c < left else v.rjust(w)  # noqa: E731
                              for c, (v, w) in enumerate(zip(r, width))).rstrip()
    return [fmt(header), fmt(["-" * w for w in width])] + [fmt(r) for r in rows]


def num(v, spec=".4f"):
    return "-" if v is None or not np.isfinite(v) else format(v, spec)


def summary(segs, evals, notes=()):
    lines, rows = [], []
    for run, stage, seg, x in segs:
        loss = np.array([r["loss"] for r in seg], dtype=float)
        kl, rec = per_layer(seg, "indexer_kl"), per_layer(seg, "recall")
        kl = kl.mean(axis=1) if kl is not None else None
        rec = rec.mean(axis=1) if rec is not None else None
        tps = [r["tokens_per_s"] for r in seg if "tokens_per_s" in r]
        ends = lambda a: (None, None) if a is None else (a[:10].mean(), a[-10:].mean())  # noqa: E731
        steps = f"{seg[0]['step']}-{seg[-1]['step']}"
        rows.append([run, stage, steps, *map(num, ends(loss)), *(num(v, ".3g") for v in ends(kl)),
                     *map(num, ends(rec)), num(np.mean(tps) if tps else None, ".0f")])
    lines += ["Training runs (first/last = mean of the first/last 10 lines of a stage)", ""]
    lines += table(["run", "stage", "steps", "loss first", "loss last", "KL first", "KL last",
                    "recall first", "recall last", "tokens/s"], rows, left=2)
    if notes:
        lines += ["", "Steps on the plots' x axis:"] + [f"  {n}" for n in notes]
    switches = boundaries(segs)
    if switches:
        lines += ["", "Stage and run switches (dashed lines):"]
        lines += [f"  x = {xb + 0.5:g}: {label}" for xb, label in switches]
    if evals:
        tasks = sorted({t for _, e in evals for t in e.get("tasks", {})})
        rows = []
        for path, e in evals:
            layers = e.get("layers") or []
            kl = [l["kl"] for l in layers if "kl" in l]
            rec = [l["recall"] for l in layers if "recall" in l]
            d, s = float(e["dense_loss"]), float(e["sparse_loss"])
            rows.append([os.path.basename(path), num(d), num(s), num(s - d, "+.4f"),
                         num(np.mean(kl) if kl else None, ".3g"), num(np.mean(rec) if rec else None)]
                        + [num(e.get("tasks", {}).get(t), ".3f") for t in tasks])
        lines += ["", "Evaluations (KL and recall: mean over layers)", ""]
        lines += table(["eval", "dense loss", "sparse loss", "delta", "KL", "recall"] + tasks, rows)
    return "\n".join(lines) + "\n"


def read_eval(path):
    try:
        with open(path, encoding="utf-8") as f:
            e = json.load(f)
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err.strerror}")
    except ValueError as err:
        raise DataError(f"{path}: malformed JSON: {err}")
    if not isinstance(e, dict) or "dense_loss" not in e or "sparse_loss" not in e:
        raise DataError(f"{path}: expected an object with dense_loss and sparse_loss")
    return path, e


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                epilog="\n".join(__doc__.split("\n")[3:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directory holding metrics.jsonl")
    p.add_argument("--out", required=True, metavar="OUT_DIR", help="where to write the PNGs and summary.txt")
    p.add_argument("--eval", action="append", default=[], metavar="EVAL_JSON", help="evaluation result to tabulate")
    p.add_argument("--title", default="", help="prefix of the plot titles")
    args = p.parse_args()
    try:
        notes = []
        segs = segments([(run, read_metrics(run)) for run in args.runs], notes)
        evals = [read_eval(e) for e in args.eval]
        for n in notes:
            print(f"note: {n}")
        for xb, label in boundaries(segs):
            print(f"switch at x = {xb + 0.5:g}: {label}")
        os.makedirs(args.out, exist_ok=True)
        plot_all(segs, args.out, args.title, notes)
        text = summary(segs, evals, notes)
    except (DataError, OSError, TypeError, ValueError) as e:
        print(f"plot_metrics: error: {e}", file=sys.stderr)
        return 1
    with open(os.path.join(args.out, "summary.txt"), "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {os.path.join(args.out, 'summary.txt')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

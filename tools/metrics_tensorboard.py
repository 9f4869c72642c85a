#!/usr/bin/env python3
"""Write the metrics.jsonl of `dsa train` runs as TensorBoard event files, once or live.

    metrics_tensorboard.py RUN_DIR [RUN_DIR...] --logdir LOGDIR [--follow [--idle-exit S]]
    tensorboard --logdir LOGDIR

Each RUN_DIR (a train.out_dir, or its metrics.jsonl) becomes the TensorBoard run LOGDIR/NAME,
NAME being the run directory's name. Every metrics line is one event at its step with:
  loss/lm                         LM loss (cross-entropy, "loss")
  indexer/kl/layer_N, .../sum     per-layer indexer KL(dense || indexer), their sum ("indexer_loss")
  indexer/recall/layer_N, .../mean  top-k recall of the dense attention mass, mean over layers
  indexer/selected                keys attended per query row; indexer/grad_norm
  optim/lr, optim/grad_norm, optim/clip
  perf/tokens_per_s, perf/step_time_s, perf/tokens (tokens seen)
  memory/peak_bytes, memory/peak_rss_bytes
  stage/index                     0, 1, ... for the run's stages in order of appearance
  stage/sparse                    1 where the step used sparse attention, 0 for dense
  other/KEY, other/KEY/N          any other numeric field or list a line holds
and a text entry "stage" ("step 5: stage sparse (attention sparse)") where each stage starts.
TensorBoard keeps scalars as float32, so values read back are the lines' rounded to float32.
The wall time of an event is the time it was written (live in --follow); plot against step.

Re-running replaces the run's event file (written as LOGDIR/NAME/.partial-PID and renamed;
older event files this tool wrote there are removed), so no scalar is ever duplicated. A
step that appears again replaces the earlier value together with everything logged after
it, as `dsa train --resume` does in metrics.jsonl itself: the event file always mirrors the
lines metrics.jsonl holds.

--follow keeps the event files current while the runs train: it waits for metrics.jsonl to
appear, converts what it holds, appends each new complete line within --poll seconds (the
TensorBoard server shows it on its next reload), and writes the file anew when metrics.jsonl
is cut back by a resume. It stops when a run's final step is logged (the stages' steps of
the run config in its newest checkpoint), after --idle-exit seconds without a new line, or
on SIGINT/SIGTERM. One writer per LOGDIR/NAME at a time (a lock file, LOGDIR/NAME/.lock).

A truncated last line is skipped with a warning (in --follow it waits for the rest); any
other malformed line is an error naming the file and line. Bare nan/inf values (how the C
trainer prints a diverged loss) are read as NaN/Infinity.
Exit status: 0 on success, 1 on data errors, 2 on usage errors.
"""
import argparse
import fcntl
import glob
import hashlib
import json
import os
import re
import signal
import socket
import sys
import time

REQUIRED = ("step", "stage", "loss")
SCALARS = {  # metrics.jsonl key -> tag
    "loss": "loss/lm",
    "indexer_loss": "indexer/kl/sum",
    "selected": "indexer/selected",
    "indexer_grad_norm": "indexer/grad_norm",
    "lr": "optim/lr",
    "grad_norm": "optim/grad_norm",
    "clip": "optim/clip",
    "tokens_per_s": "perf/tokens_per_s",
    "step_time_s": "perf/step_time_s",
    "tokens": "perf/tokens",
    "peak_mem_bytes": "memory/peak_bytes",
    "peak_rss_bytes": "memory/peak_rss_bytes",
}
PER_LAYER = {"indexer_kl": "indexer/kl", "recall": "indexer/recall"}  # lists, one value per layer
TEXT_KEYS = ("step", "stage", "attention")
OURS = ".dsa-metrics"  # suffix of the event files this tool writes (and may replace)
NONFINITE = re.compile(r'(?<=[:,\[])(\s*)(-?)(nan|inf)(?=\s*[,\]}])')


class DataError(Exception):
    pass


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def parse_line(path, lineno, raw):
    """One metrics line as a dict, checked; DataError names path:lineno."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}:{lineno}: not UTF-8 text ({e.reason} at byte {e.start})")
    text = NONFINITE.sub(lambda m: m[1] + ("NaN" if m[3] == "nan" else m[2] + "Infinity"), text)
    try:
        row = json.loads(text)
    except ValueError as e:
        raise DataError(f"{path}:{lineno}: malformed line: {e}")
    if not isinstance(row, dict):
        raise DataError(f"{path}:{lineno}: malformed line: not a JSON object")
    missing = [k for k in REQUIRED if k not in row]
    if missing:
        raise DataError(f"{path}:{lineno}: missing {', '.join(missing)}")
    if not isinstance(row["step"], int) or isinstance(row["step"], bool) or row["step"] < 0:
        raise DataError(f"{path}:{lineno}: step must be a non-negative integer, got {row['step']!r}")
    if not isinstance(row["stage"], str):
        raise DataError(f"{path}:{lineno}: stage must be a string, got {row['stage']!r}")
    for key, v in row.items():
        if key in SCALARS and not is_number(v):
            raise DataError(f"{path}:{lineno}: {key} must be a number, got {v!r}")
        if key in PER_LAYER and (not isinstance(v, list) or not v or not all(map(is_number, v))):
            raise DataError(f"{path}:{lineno}: {key} must be a non-empty list of numbers, got {v!r}")
    row["_digest"] = hashlib.blake2b(raw.strip(), digest_size=8).digest()
    row["_line"] = lineno
    return row


def scalar_values(row, stage_index):
    """(tag, value) of every scalar of one line (the table in this file's opening comment)."""
    out = [(tag, row[key]) for key, tag in SCALARS.items() if key in row]
    for key, group in PER_LAYER.items():
        if key in row:
            width = len(str(len(row[key]) - 1))
            out += [(f"{group}/layer_{i:0{width}d}", v) for i, v in enumerate(row[key])]
    if "recall" in row:
        out.append(("indexer/recall/mean", sum(row["recall"]) / len(row["recall"])))
    out.append(("stage/index", stage_index))
    if "attention" in row:
        out.append(("stage/sparse", 1.0 if row["attention"] == "sparse" else 0.0))
    for key, v in row.items():
        if key in SCALARS or key in PER_LAYER or key in TEXT_KEYS or key.startswith("_"):
            continue
        if is_number(v):
            out.append((f"other/{key}", v))
        elif isinstance(v, list) and v and all(map(is_number, v)):
            out += [(f"other/{key}/{i}", x) for i, x in enumerate(v)]
    return out


def mirror(rows):
    """The rows a reader should see: a step that comes again replaces the earlier line at
    that step and every line after it (what `dsa train --resume` does to metrics.jsonl)."""
    out = []
    for r in rows:
        while out and out[-1]["step"] >= r["step"]:
            out.pop()
        out.append(r)
    return out


def split_lines(data):
    """Complete lines of `data` (bytes) and the unterminated rest."""
    end = data.rfind(b"\n") + 1
    return data[:end].split(b"\n")[:-1], data[end:]


class EventDir:
    """LOGDIR/NAME: the one event file of a run, written anew by rebuild() and grown by append().
    The record framing (length, masked CRC-32C) and the Event/Summary protobufs are TensorBoard's
    own (its RecordWriter, the one under torch.utils.tensorboard): one package writes, reads
    back (the tests' EventAccumulator) and serves the files, without TensorFlow or torch. Its
    EventFileWriter and tensorboardX's SummaryWriter are not used: both name the file
    themselves and write from a background thread (the first reopens the path on each write,
    the second's flush() does not wait for its queue), while this tool renames its file into
    place and keeps appending to it."""

    def __init__(self, path):
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.plugins.text.summary_v2 import text_pb
        from tensorboard.summary.writer.record_writer import RecordWriter
        self.event_pb2, self.summary_pb2 = event_pb2, summary_pb2
        self.text_pb, self.RecordWriter = text_pb, RecordWriter
        self.path, self.file, self.writer, self.current, self.lock = path, None, None, None, None

    def acquire(self):
        try:
            os.makedirs(self.path, exist_ok=True)
            self.lock = open(os.path.join(self.path, ".lock"), "a")
        except OSError as e:
            raise DataError(f"{self.path}: cannot create: {e.strerror}")
        try:
            fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataError(f"{self.path}: another metrics_tensorboard.py is writing there")
        for stale in glob.glob(os.path.join(glob.escape(self.path), ".partial-*")):
            os.remove(stale)  # a killed conversion's; the lock says none is running

    def ours(self):
        return sorted(p for p in glob.glob(os.path.join(glob.escape(self.path), "events.out.tfevents.*"))
                      if p.endswith(OURS))

    def new_name(self):
        """A name after every event file of ours in the directory (TensorBoard reads a run's
        files in name order and, when live, moves on to a later one)."""
        stamp = time.time_ns() // 1000
        for p in self.ours():
            m = re.match(r"events\.out\.tfevents\.(\d{10})\.(\d{6})\.", os.path.basename(p))
            if m:
                stamp = max(stamp, int(m[1]) * 10**6 + int(m[2]) + 1)
        host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())
        return os.path.join(self.path, f"events.out.tfevents.{stamp // 10**6:010d}.{stamp % 10**6:06d}.{host}{OURS}")

    def event(self, step, values, text=None):
        """One Event: the scalars as simple_value (what EventAccumulator.Scalars reads)."""
        summary = self.summary_pb2.Summary(
            value=[self.summary_pb2.Summary.Value(tag=t, simple_value=float(v)) for t, v in values])
        if text is not None:
            summary.value.extend(self.text_pb("stage", text).value)
        return self.event_pb2.Event(wall_time=time.time(), step=step, summary=summary)

    def rebuild(self, events):
        if self.lock is None:
            self.acquire()
        tmp = os.path.join(self.path, f".partial-{os.getpid()}")
        f = open(tmp, "wb")
        w = self.RecordWriter(f)
        source = self.event_pb2.SourceMetadata(writer="dsa tools/metrics_tensorboard.py")
        header = self.event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2", source_metadata=source)
        for ev in [header] + events:
            w.write(ev.SerializeToString())
        f.flush()
        os.fsync(f.fileno())
        final = self.new_name()
        os.replace(tmp, final)  # f stays open on the renamed file: appends go there
        dfd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        if self.file:
            self.file.close()
        self.file, self.writer, self.current = f, w, final
        for p in self.ours():
            if p != final:
                os.remove(p)

    def append(self, events):
        for ev in events:
            self.writer.write(ev.SerializeToString())
        self.file.flush()

    def close(self):
        if self.file:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            self.file = None
        if self.lock:
            self.lock.close()
            self.lock = None


class Run:
    """One run's metrics.jsonl and its event file; poll() brings the file up to date."""

    def __init__(self, source, logdir):
        if os.path.isdir(source) or not source.endswith(".jsonl"):
            self.run_dir, self.metrics = source, os.path.join(source, "metrics.jsonl")
        else:
            self.run_dir, self.metrics = os.path.dirname(source) or ".", source
        self.name = os.path.basename(os.path.abspath(self.run_dir))
        self.out = EventDir(os.path.join(logdir, self.name))
        self.ident, self.offset, self.lines, self.pending = None, 0, 0, b""
        self.written = []  # (step, digest) of the lines in the event file, in order
        self.stages, self.last_stage = [], None
        self.latest, self.total, self.waiting = None, None, False

    def last_step(self):
        return self.written[-1][0] if self.written else None

    def events(self, rows):
        """Events of rows that follow what is written (stage order and switches carry on)."""
        out = []
        for r in rows:
            if r["stage"] not in self.stages:
                self.stages.append(r["stage"])
            text = None
            if r["stage"] != self.last_stage:
                text = f"{r['stage']}" + (f" (attention {r['attention']})" if "attention" in r else "")
                text = f"step {r['step']}: stage {text}"
            self.last_stage = r["stage"]
            out.append(self.out.event(r["step"], scalar_values(r, self.stages.index(r["stage"])), text))
            self.written.append((r["step"], r["_digest"]))
        return out

    def write(self, rows, rewrite):
        if rewrite or self.out.file is None:
            self.written, self.stages, self.last_stage = [], [], None
            self.out.rebuild(self.events(rows))
        else:
            self.out.append(self.events(rows))

    def parse(self, lines, first, rest=b"", final=False):
        """Rows of complete lines (numbered from `first`); when final, also of the unterminated
        rest if it parses (else it is a truncated last line: skipped with a warning)."""
        rows = [parse_line(self.metrics, first + i, t) for i, t in enumerate(lines) if t.strip()]
        if final and rest.strip():
            try:
                rows.append(parse_line(self.metrics, first + len(lines), rest))
            except DataError:
                print(f"warning: {self.metrics}:{first + len(lines)}: skipping truncated last line", file=sys.stderr)
        return rows

    def poll(self, follow, final=False):
        """Bring the event file up to what metrics.jsonl holds; True when it changed. With
        final, an unterminated last line counts too (the run is over or was stopped)."""
        try:
            f = open(self.metrics, "rb")
        except FileNotFoundError:
            if not follow:
                raise DataError(f"{self.metrics}: cannot read: No such file or directory")
            if not self.waiting:
                print(f"{self.name}: waiting for {self.metrics}", flush=True)
                self.waiting = True
            return False
        except OSError as e:
            raise DataError(f"{self.metrics}: cannot read: {e.strerror}")
        with f:
            st = os.fstat(f.fileno())
            ident = (st.st_dev, st.st_ino)
            if ident == self.ident and st.st_size >= self.offset:  # the same file, maybe grown
                f.seek(self.offset)
                data = f.read()
                lines, rest = split_lines(self.pending + data)
                rows = self.parse(lines, self.lines + 1, rest, final)
                steps = [self.last_step() if self.written else -1] + [r["step"] for r in rows]
                if all(a < b for a, b in zip(steps, steps[1:])):
                    self.offset += len(data)
                    self.lines, self.pending = self.lines + len(lines), b"" if final else rest
                    if rows:
                        self.write(rows, rewrite=False)
                    return bool(rows)
                f.seek(0)  # a step logged again: read the whole file
            elif self.ident is not None:
                print(f"{self.name}: {self.metrics} was replaced or cut back: reading it again", flush=True)
            data = f.read()
        lines, rest = split_lines(data)
        rows = mirror(self.parse(lines, 1, rest, final))
        self.ident, self.offset, self.lines, self.pending = ident, len(data), len(lines), b"" if final else rest
        n = len(self.written)
        if self.out.file is not None and [(r["step"], r["_digest"]) for r in rows[:n]] == self.written:
            if len(rows) > n:
                self.write(rows[n:], rewrite=False)
            return len(rows) > n
        if not rows and self.out.file is None:
            return False
        if self.written:
            print(f"{self.name}: {self.metrics} no longer holds the lines converted from step {self.divergence(rows)} "
                  f"on (a resumed run logs them again): rewriting the event file", flush=True)
        self.write(rows, rewrite=True)
        return True

    def divergence(self, rows):
        for (step, digest), r in zip(self.written, rows):
            if (step, digest) != (r["step"], r["_digest"]):
                return min(step, r["step"])
        return self.written[len(rows)][0] if len(rows) < len(self.written) else rows[len(self.written)]["step"]

    def finish(self, follow):
        """The last look (unterminated last line included); a one-off conversion needs a line."""
        self.poll(follow, final=True)
        if not self.written and not follow:
            raise DataError(f"{self.metrics}: no metrics lines")

    def final_step(self):
        """The run's last step: the sum of the stages' steps in the run config of the newest
        checkpoint (RUN/latest names it); None before the first checkpoint."""
        try:
            with open(os.path.join(self.run_dir, "latest"), encoding="utf-8") as f:
                latest = f.read().strip()
        except OSError:
            return None
        if latest != self.latest:
            self.latest = latest
            try:
                with open(os.path.join(self.run_dir, latest, "run_config.json"), encoding="utf-8") as f:
                    cfg = json.load(f)
                self.total = sum(int(s["steps"]) for s in cfg["stages"])
            except (OSError, ValueError, KeyError, TypeError):
                self.latest, self.total = None, None
        return self.total

    def done(self):
        total = self.final_step()
        return total is not None and self.last_step() == total

    def report(self):
        if self.written:
            print(f"{self.name}: steps {self.written[0][0]}-{self.written[-1][0]} ({len(self.written)} events, "
                  f"stages {', '.join(self.stages)}) -> {self.out.current}", flush=True)
        else:
            print(f"{self.name}: no metrics lines yet; nothing written", flush=True)


class Stop:
    signal = None

    def __call__(self, signum, frame):
        self.signal = signum


def follow(runs, poll, idle_exit):
    stop = Stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    last_change = time.monotonic()
    while True:
        if any([r.poll(follow=True) for r in runs]):
            last_change = time.monotonic()
        if all(r.done() for r in runs):
            for r in runs:
                print(f"{r.name}: final step {r.last_step()} logged", flush=True)
            return
        if stop.signal is not None:
            print(f"stopped by {signal.Signals(stop.signal).name}", flush=True)
            return
        if idle_exit and time.monotonic() - last_change >= idle_exit:
            print(f"no new metrics line for {idle_exit:g} s (--idle-exit): stopping", flush=True)
            return
        time.sleep(poll)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                epilog="\n".join(__doc__.split("\n")[3:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="a dsa train out_dir (or its metrics.jsonl)")
    p.add_argument("--logdir", required=True, metavar="LOGDIR", help="TensorBoard log directory to write runs into")
    p.add_argument("--follow", action="store_true", help="keep converting while the runs train")
    p.add_argument("--poll", type=float, default=0.5, metavar="S", help="--follow: seconds between looks (0.5)")
    p.add_argument("--idle-exit", type=float, default=0, metavar="S",
                   help="--follow: stop after S seconds without a new line (default: never)")
    args = p.parse_args()
    if args.poll <= 0 or args.idle_exit < 0:
        p.error("--poll must be positive and --idle-exit non-negative")
    if not args.follow and args.idle_exit:
        p.error("--idle-exit only applies with --follow")
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        print("metrics_tensorboard: error: the tensorboard package is missing (make pyenv installs it)",
              file=sys.stderr)
        return 1
    runs = [Run(r, args.logdir) for r in args.runs]
    names = {}
    for r, src in zip(runs, args.runs):
        if r.name in names:
            p.error(f"{names[r.name]} and {src} would both be the run {r.name} in {args.logdir}")
        names[r.name] = src
    try:
        if args.follow:
            for r in runs:
                r.out.acquire()  # at once: a second follower of a run is refused before it waits
            follow(runs, args.poll, args.idle_exit)
        for r in runs:
            r.finish(args.follow)
            r.report()
    except (DataError, OSError) as e:
        msg = e if isinstance(e, DataError) else f"{getattr(e, 'filename', '') or ''}: {e.strerror or e}"
        print(f"metrics_tensorboard: error: {msg}", file=sys.stderr)
        return 1
    finally:
        for r in runs:
            r.out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

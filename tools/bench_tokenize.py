#!/usr/bin/env python3
"""Benchmark tools/tokenize_pack.py: tokens/s from raw text to finished dsa shards.

    bench_tokenize.py [--mb 50] [--workers 1,2] [--dsa build/dsa] [--record bench/RESULTS.md]

Generates --mb MB of English-like text (a seeded lexicon of 30000 made-up words drawn with
Zipf frequencies, sentences, punctuation and numbers; documents of 1 to 12 KB as JSON
lines), trains a byte-level BPE tokenizer of 32000 tokens on its first 4 MB with the
`tokenizers` library (no hub access), then times, on the same file:
  - tokenizers alone: `Tokenizer.encode_batch_fast` over all documents in one process with
    Rust parallelism off (one thread), ids discarded: the ceiling of one worker;
  - tokenize_pack.py with each --workers count, end to end: read JSONL, tokenize, pipe the
    ids into `dsa pack`, shards and manifest written (wall time of the whole command,
    Python start-up included, and the CPU time of all its processes); its shards are
    checked to hold the same token count.
Temporary files go under $TMPDIR (about 4x --mb) and are removed. With --record the
figures are appended to the file as a section with device, date and command.
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

os.environ["TOKENIZERS_PARALLELISM"] = "false"

import numpy as np  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYLLABLES = [c + v for c in "bcdfghjklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ay", "ee", "ou")] + \
            ["th", "st", "ing", "er", "ion", "al", "ent", "ly"]


def lexicon(rng, n=30000):
    words = set()
    while len(words) < n:
        k = int(rng.integers(1, 5))
        words.add("".join(SYLLABLES[int(i)] for i in rng.integers(0, len(SYLLABLES), k)))
    return sorted(words)


def generate(path, megabytes, seed=1):
    """JSON lines {"text": ...} totalling about `megabytes` MB of text; returns (docs, bytes)."""
    rng = np.random.default_rng(seed)
    words = lexicon(rng)
    ranks = np.arange(1, len(words) + 1)
    p = 1.0 / ranks ** 1.1
    p /= p.sum()
    target, written, docs = int(megabytes * 1e6), 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            n_words = int(rng.integers(150, 2000))
            picks = rng.choice(len(words), n_words, p=p)
            ends = rng.random(n_words)
            out, start = [], True
            for w, e in zip(picks, ends):
                word = words[w]
                if start:
                    word = word.capitalize()
                if e < 0.02:
                    word = f"{int(e * 1e5)}"
                out.append(word)
                start = e > 0.93
                if start:
                    out.append("." if e < 0.99 else "?")
                    if e > 0.985:
                        out.append("\n\n")
                elif e > 0.88:
                    out.append(",")
            text = " ".join(out).replace(" .", ".").replace(" ,", ",").replace(" ?", "?").replace("\n\n ", "\n\n")
            f.write(json.dumps({"text": text}) + "\n")
            written += len(text.encode())
            docs += 1
    return docs, written


def train_tokenizer(jsonl, out, sample_mb=4, vocab=32000):
    texts, size = [], 0
    with open(jsonl, encoding="utf-8") as f:
        for line in f:
            texts.append(json.loads(line)["text"])
            size += len(texts[-1])
            if size > sample_mb * 1e6:
                break
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    tok.save(out)


def tokenizers_alone(tokenizer, jsonl):
    with open(jsonl, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    tok = Tokenizer.from_file(tokenizer)
    t0, c0 = time.perf_counter(), time.process_time()
    tokens = 0
    for i in range(0, len(texts), 512):
        tokens += sum(len(e.ids) for e in tok.encode_batch_fast(texts[i:i + 512]))
    return time.perf_counter() - t0, time.process_time() - c0, tokens + len(texts)


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def shard_tokens(prefix):
    with open(prefix + ".manifest.json", encoding="utf-8") as f:
        return json.load(f)["tokens"]


def cpu_name():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=50, help="MB of generated text (default 50)")
    ap.add_argument("--workers", default="1,2", help="worker counts to time (default 1,2)")
    ap.add_argument("--dsa", default=os.environ.get("DSA", os.path.join(ROOT, "build", "dsa")))
    ap.add_argument("--record", metavar="FILE", help="append the results to FILE (bench/RESULTS.md)")
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    rows = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="dsa-bench-tok-") as tmp:
        jsonl, tokfile = os.path.join(tmp, "corpus.jsonl"), os.path.join(tmp, "tokenizer.json")
        t0 = time.perf_counter()
        docs, text_bytes = generate(jsonl, args.mb)
        print(f"generated {docs} documents, {text_bytes / 1e6:.1f} MB of text in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)
        t0 = time.perf_counter()
        train_tokenizer(jsonl, tokfile)
        print(f"trained a 32000-token BPE in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        seconds, cpu, tokens = tokenizers_alone(tokfile, jsonl)
        rows.append(("tokenizers `encode_batch_fast` alone, 1 thread, ids discarded", 1, seconds, cpu, tokens))
        print(f"tokenizers alone: {tokens} tokens in {seconds:.2f} s", file=sys.stderr)
        for w in counts:
            prefix = os.path.join(tmp, f"shards-w{w}", "bench")
            cmd = [sys.executable, os.path.join(ROOT, "tools", "tokenize_pack.py"), "--tokenizer", tokfile,
                   "--workers", str(w), "--dsa", args.dsa, "--quiet", "--out", prefix, jsonl]
            t0, c0 = time.perf_counter(), children_cpu()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            seconds, cpu = time.perf_counter() - t0, children_cpu() - c0
            packed = shard_tokens(prefix)
            if packed != tokens:
                sys.exit(f"bench_tokenize.py: {w} workers packed {packed} tokens, tokenizers gave {tokens}")
            rows.append((f"tokenize_pack.py --workers {w}: JSONL to finished shards", w, seconds, cpu, packed))
            print(f"tokenize_pack.py --workers {w}: {packed} tokens in {seconds:.2f} s", file=sys.stderr)
    lines = [f"| {what} | {w} | {s:.2f} | {c:.2f} | {t / 1e6:.2f}M | {t / s / 1e6:.3f}M | {text_bytes / s / 1e6:.2f} "
             f"| {t / c / 1e6:.3f}M |" for what, w, s, c, t in rows]
    table = "\n".join(["| measurement | workers | wall s | CPU s | tokens | tokens/s | MB/s of text | tokens per CPU s |",
                       "|---|---:|---:|---:|---:|---:|---:|---:|"] + lines)
    print(table)
    if args.record:
        import tokenizers
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        with open(args.record, "a", encoding="utf-8") as f:
            f.write(f"\n## {stamp}: tokenize_pack.py, text to shards with a tokenizer.json (CPU)\n\n"
                    f"- device: CPU only, {cpu_name()}, {len(os.sched_getaffinity(0))} cores online; "
                    f"tokenizers {tokenizers.__version__}, Python {platform.python_version()}\n"
                    f"- command: `tools/bench_tokenize.py --mb {args.mb:g} --workers {args.workers} "
                    f"--record {args.record}` (`make bench-tokenize`)\n"
                    f"- data: {text_bytes / 1e6:.1f} MB of generated English-like text in {docs} JSON lines "
                    f"(Zipf-distributed made-up words); tokenizer: byte-level BPE, 32000 tokens, trained on its "
                    f"first 4 MB; {tokens / 1e6:.2f}M tokens with one EOS per document\n"
                    f"- 1-minute load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after (other work "
                    f"on the machine shares its {len(os.sched_getaffinity(0))} cores and slows every row)\n"
                    f"- CPU s: user + system time of every process of the row (the tool, its workers and dsa pack)\n"
                    f"- end-to-end rows: wall time of the whole command (Python start-up, reading, tokenizing, "
                    f"the pipe into `dsa pack`, zstd, shards and manifest written); page cache warm\n\n"
                    f"{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Tokenize text with a Hugging Face tokenizer.json and pack the ids into dsa shards.

    tokenize_pack.py --tokenizer TOKENIZER.json --out PREFIX [options] INPUT...
    tokenize_pack.py --tokenizer TOKENIZER.json --ids-out FILE [options] INPUT...

Reads plain text files (each file one document), JSON lines (each line one document,
the text under --field) or Parquet files (each row one document, the column --field;
needs pyarrow), tokenizes them with the `tokenizers` library in batches over --workers
processes, appends the EOS id to every document and streams the ids as little-endian
uint32 into `dsa pack --format u32 ... -`, which writes the shards PREFIX-00000.h5 ... and
PREFIX.manifest.json. The shards record the tokenizer's name (--name, default the
tokenizer's directory or file name and the first 12 hex digits of the file's SHA-256)
and its vocab_size (the largest id + 1, added tokens included), so `dsa train` and `dsa
eval` refuse a model whose vocab_size is smaller. --ids-out writes the same uint32
stream to a file instead (for `dsa pack --format u32 FILE` later).

The ids of a document are exactly tokenizers' `Tokenizer.encode(text).ids` (with the
tokenizer's post-processor, e.g. a BOS, unless --no-add-special-tokens), then EOS, in
input order whatever the worker count. A document whose ids already end with EOS keeps
one; documents that encode to nothing are dropped. An EOS id inside a document (its text
holds the literal EOS token) ends a shard document there, and a run of EOS ids collapses
into one, as `dsa pack --format u32` reads EOS; the tool counts such documents and warns
(--split-special-tokens encodes special-token text as plain text instead).

EOS: --eos TOKEN or --eos-id N; else "eos_token" of a tokenizer_config.json beside the
tokenizer.json; else the one special token spelled like an end of text ("<|endoftext|>",
"</s>", "<｜end▁of▁sentence｜>", ...). None or several: an error listing the special tokens.

Why a pipe of raw uint32 into `dsa pack`: pack already reads that format and checks every
id against vocab_size; nothing is written twice to disk, and pack compresses while the
workers tokenize. A pipe cannot tell a finished writer from a dead one, so this tool ends
the stream with a stray byte when it fails (pack then refuses the stream and removes its
shards) and pack is killed if this process dies (Linux PR_SET_PDEATHSIG): a set is never
finished from part of the input.

(The name is tokenize_pack.py, not tokenize.py: a script called tokenize.py shadows Python's
own tokenize module, which linecache and traceback import, for everything in its directory.)

Progress goes to stderr; errors name the file and line (JSONL), byte (text) or row
(Parquet). Exit status: 0 success, 1 bad input or a failed pack, 2 usage error.
"""
import argparse
import array
import collections
import ctypes
import hashlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # parallel over processes, not Rust threads

try:
    from tokenizers import Tokenizer  # noqa: E402  (after the environment is set)
except ImportError:
    sys.exit("tokenize_pack.py: the tokenizers package is missing: run `make pyenv` and use "
             ".venv/bin/python tools/tokenize_pack.py")

EOS_SPELLINGS = ("<|endoftext|>", "</s>", "<｜end▁of▁sentence｜>", "<|end_of_text|>", "<eos>", "<|eos|>", "[EOS]")
BATCH_CHARS = 1 << 20  # characters per task: large enough to amortize the hand-off, small for balance
BATCH_DOCS = 4096
NAME_CAP = 63  # DSA_TOKENIZER_NAME_CAP - 1 (data/shard.h)
PROG = "tokenize_pack.py"


class InputError(Exception):
    """Bad input or a failed step: printed as one line, exit status 1."""


class UsageError(InputError):
    """An option that does not fit the tokenizer: exit status 2."""


# ---- reading documents ------------------------------------------------------------------

def expand_inputs(paths):
    """Files in order; a directory stands for its regular files sorted by name (no dot files)."""
    files = []
    for p in paths:
        if os.path.isdir(p):
            names = sorted(n for n in os.listdir(p) if not n.startswith(".") and os.path.isfile(os.path.join(p, n)))
            if not names:
                raise InputError(f"input directory {p} holds no regular files")
            files += [os.path.join(p, n) for n in names]
        elif os.path.exists(p):  # a regular file, or a pipe (read once, in order)
            files.append(p)
        else:
            raise InputError(f"input {p}: no such file or directory")
    return files


def format_of(path, fmt):
    if fmt != "auto":
        return fmt
    if path.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    return "parquet" if path.endswith(".parquet") else "text"


def utf8_error(path, data, err, line=None):
    at = line if line is not None else data.count(b"\n", 0, err.start) + 1
    return InputError(f"{path}:{at}: invalid UTF-8 at byte {err.start}{' of the line' if line else ''} "
                      f"(0x{data[err.start]:02x}): the input must be UTF-8 text")


def read_text(path):
    with open(path, "rb") as f:
        data = f.read()
    try:
        yield data.decode("utf-8"), (path, 0), len(data)
    except UnicodeDecodeError as e:
        raise utf8_error(path, data, e) from None


def read_jsonl(path, field):
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                yield None, None, len(raw)
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                raise utf8_error(path, raw, e, number) from None
            except ValueError as e:
                raise InputError(f"{path}:{number}: not valid JSON: {e}") from None
            if not isinstance(row, dict):
                raise InputError(f"{path}:{number}: a JSON {type(row).__name__}, expected an object with \"{field}\"")
            if field not in row:
                keys = ", ".join(list(row)[:8]) or "none"
                raise InputError(f"{path}:{number}: no field \"{field}\" (keys: {keys}); choose one with --field")
            text = row[field]
            if not isinstance(text, str):
                raise InputError(f"{path}:{number}: field \"{field}\" is {json.dumps(text)[:40]}, expected a string")
            yield text, (path, number), len(raw)


def read_parquet(path, field):
    try:
        import pyarrow.parquet as pq
        import pyarrow.types as pt
    except ImportError:
        raise InputError(f"{path}: Parquet input needs pyarrow (make pyenv installs it into .venv)") from None
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ... for a damaged file
        raise InputError(f"{path}: not a readable Parquet file: {e}") from None
    names = pf.schema_arrow.names
    if field not in names:
        raise InputError(f"{path}: no column \"{field}\" (columns: {', '.join(names[:8])}); choose one with --field")
    kind = pf.schema_arrow.field(field).type
    if not (pt.is_string(kind) or pt.is_large_string(kind) or getattr(pt, "is_string_view", lambda _: False)(kind)):
        raise InputError(f"{path}: column \"{field}\" holds {kind}, expected strings")
    rows, size = max(pf.metadata.num_rows, 1), os.path.getsize(path)
    row = 0
    try:
        for batch in pf.iter_batches(columns=[field], batch_size=8192):
            for text in batch.column(0).to_pylist():
                row += 1
                if text is None:
                    raise InputError(f"{path}: row {row}: column \"{field}\" is null")
                yield text, (path, row), size / rows
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"{path}: row {row + 1}: cannot read: {e}") from None


def documents(files, fmt, field):
    """(text, (path, line or row), input bytes consumed) for every document, in order."""
    for path in files:
        kind = format_of(path, fmt)
        if kind == "text":
            yield from read_text(path)
        elif kind == "jsonl":
            yield from read_jsonl(path, field)
        else:
            yield from read_parquet(path, field)


def batches(docs, batch_chars):
    texts, where, chars, consumed = [], [], 0, 0
    for text, loc, nbytes in docs:
        consumed += nbytes
        if text is None:
            continue
        texts.append(text)
        where.append(loc)
        chars += len(text)
        if chars >= batch_chars or len(texts) >= BATCH_DOCS:
            yield texts, where, consumed
            texts, where, chars, consumed = [], [], 0, 0
    if texts or consumed:
        yield texts, where, consumed


# ---- tokenizing (in each worker) -------------------------------------------------------------

_worker = {}


def worker_init(tokenizer_path, add_special, split_special, eos_id):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    tok = Tokenizer.from_file(tokenizer_path)
    tok.encode_special_tokens = split_special
    _worker.update(tok=tok, add_special=add_special, eos=eos_id)


def encode_batch(texts):
    """(uint32 bytes of the ids, EOS after each document, documents, tokens, EOS-inside count)
    or ("error", index of the first failing text, message)."""
    tok, eos = _worker["tok"], _worker["eos"]
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)  # same ids, no offsets
    try:
        encodings = encode(texts, add_special_tokens=_worker["add_special"])
    except Exception:
        for i, text in enumerate(texts):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as e:  # JSON "\ud800": a string that is no Unicode text
                return ("error", i, f"character {e.start} is an unpaired surrogate (U+{ord(text[e.start]):04X})")
            try:
                tok.encode(text, add_special_tokens=_worker["add_special"])
            except Exception as e:
                return ("error", i, f"{type(e).__name__}: {e}")
        raise
    out, docs, inside = array.array("I"), 0, 0
    for enc in encodings:
        ids = enc.ids
        if not ids:
            continue
        docs += 1
        out.extend(ids)
        if ids[-1] != eos:
            out.append(eos)
        if eos in ids[:-1]:
            inside += 1
    if sys.byteorder != "little":
        out.byteswap()
    return (out.tobytes(), docs, len(out), inside)


# ---- the tokenizer's facts ------------------------------------------------------------------

def special_tokens(tok):
    return {t.content: i for i, t in tok.get_added_tokens_decoder().items() if t.special}


def resolve_eos(tok, args):
    specials = special_tokens(tok)
    listing = ", ".join(f"{t!r} ({i})" for t, i in sorted(specials.items(), key=lambda kv: kv[1])) or "none"
    if args.eos_id is not None:
        if tok.id_to_token(args.eos_id) is None:
            raise InputError(f"--eos-id {args.eos_id}: {args.tokenizer} has no token with that id")
        return args.eos_id, tok.id_to_token(args.eos_id)
    if args.eos is not None:
        i = tok.token_to_id(args.eos)
        if i is None:
            raise InputError(f"--eos {args.eos!r}: no such token in {args.tokenizer}; its special tokens: {listing}")
        return i, args.eos
    config = os.path.join(os.path.dirname(os.path.abspath(args.tokenizer)), "tokenizer_config.json")
    if os.path.isfile(config):
        try:
            with open(config, encoding="utf-8") as f:
                eos = json.load(f).get("eos_token")
        except (ValueError, OSError, AttributeError) as e:
            raise InputError(f"{config}: cannot read eos_token: {e}") from None
        eos = eos.get("content") if isinstance(eos, dict) else eos
        if isinstance(eos, str):
            if tok.token_to_id(eos) is None:
                raise InputError(f"{config}: eos_token {eos!r} is not a token of {args.tokenizer}; "
                                 f"name the EOS with --eos TOKEN")
            return tok.token_to_id(eos), eos
    found = [t for t in EOS_SPELLINGS if t in specials]
    if len(found) == 1:
        return specials[found[0]], found[0]
    why = f"several special tokens look like one ({', '.join(found)})" if found else "none of its special tokens is one"
    raise InputError(f"{args.tokenizer}: which token ends a document? {why}; its special tokens: {listing}; "
                     f"name it with --eos TOKEN or --eos-id N")


def default_name(path):
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    stem = os.path.splitext(os.path.basename(path))[0]
    if stem == "tokenizer":
        stem = os.path.basename(os.path.dirname(os.path.abspath(path))) or stem
    return f"{stem[:NAME_CAP - 13]}@{digest}"


# ---- the output: dsa pack on a pipe, or a file ----------------------------------------------------

def find_dsa(given):
    if given:
        return given
    if os.environ.get("DSA"):
        return os.environ["DSA"]
    built = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build", "dsa"))
    if os.access(built, os.X_OK):  # the build of this checkout first: it matches this tool
        return built
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if directory and os.access(os.path.join(directory, "dsa"), os.X_OK):
            return os.path.join(directory, "dsa")
    return "dsa"


def pack_child_setup():
    """In dsa pack, before exec: SIGKILL it when this process dies (Linux PR_SET_PDEATHSIG), so
    a dead writer never looks like the end of the stream; ignore Ctrl-C, which this process
    turns into a clean abort (PackSink.abort)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


class PackSink:
    """`dsa pack --format u32 ... -` reading our stream on its standard input."""

    def __init__(self, args, vocab, eos, name):
        cmd = [find_dsa(args.dsa), "pack", "--format", "u32", "--vocab-size", str(vocab), "--eos-id", str(eos),
               "--tokenizer", name, "--out", args.out, "--quiet"]
        for flag in ("shard_tokens", "chunk_tokens", "zstd_level"):
            if getattr(args, flag) is not None:
                cmd += ["--" + flag.replace("_", "-"), getattr(args, flag)]
        cmd += ["--force"] * args.force + ["-"]
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=pack_child_setup)
        except OSError as e:
            raise InputError(f"cannot run {cmd[0]}: {e.strerror} (give --dsa PATH or set DSA)") from None
        self.aborting = False
        self.relay = threading.Thread(target=self._relay, daemon=True)
        self.relay.start()

    def _relay(self):  # pack's messages, live, except the refusal our own abort causes
        for line in self.proc.stderr:
            if not self.aborting:
                sys.stderr.buffer.write(line)
                sys.stderr.flush()

    def write(self, data):
        try:
            self.proc.stdin.write(data)
        except BrokenPipeError:
            self.finish()  # raises with pack's exit status

    def finish(self):
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        rc = self.proc.wait()
        self.relay.join()
        if rc != 0:
            raise InputError(f"dsa pack failed (exit status {rc}; its message is above)")

    def abort(self):
        """End the stream inside a token: pack refuses it and removes the shards it wrote."""
        self.aborting = True
        try:
            self.proc.stdin.write(b"\0")
            self.proc.stdin.close()
        except (BrokenPipeError, ValueError):
            pass
        self.proc.wait()
        self.relay.join()


class FileSink:
    """--ids-out FILE (written under a temporary name, renamed when complete) or - (stdout)."""

    def __init__(self, path):
        self.path = path
        if path == "-":
            self.f, self.tmp = sys.stdout.buffer, None
        else:
            self.tmp = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.tmp.{os.getpid()}")
            self.f = open(self.tmp, "wb")

    def write(self, data):
        self.f.write(data)

    def finish(self):
        self.f.flush()
        if self.tmp:
            os.fsync(self.f.fileno())
            self.f.close()
            os.replace(self.tmp, self.path)

    def abort(self):
        if self.tmp:
            self.f.close()
            os.unlink(self.tmp)


# ---- the run ------------------------------------------------------------------------------------

class Progress:
    def __init__(self, total, quiet):
        self.total, self.quiet, self.live = total, quiet, sys.stderr.isatty()
        self.start = self.last = time.monotonic()

    def show(self, done, tokens, final=False):
        now = time.monotonic()
        if self.quiet or not (final or now - self.last >= (0.5 if self.live else 10)):
            return
        self.last = now
        rate = tokens / max(now - self.start, 1e-9)
        pct = f" ({100 * done / self.total:.1f}%)" if self.total else ""
        end = "\n" if final or not self.live else ""
        sys.stderr.write(f"{chr(13) if self.live else ''}tokenize: {done / 1e6:.1f}/{self.total / 1e6:.1f} MB"
                         f"{pct}, {tokens / 1e6:.2f}M tokens, {rate / 1e6:.2f}M tokens/s, {now - self.start:.0f}s{end}")
        sys.stderr.flush()


class Terminated(BaseException):
    """SIGTERM: unwinds like Ctrl-C, so the pack is aborted cleanly."""


def on_sigterm(signum, frame):
    raise Terminated()


def run(args):
    try:
        tok = Tokenizer.from_file(args.tokenizer)
    except Exception as e:
        raise InputError(f"{args.tokenizer}: not a tokenizer.json that tokenizers {tokenizers_version()} "
                         f"can load: {e}") from None
    vocab = max(tok.get_vocab(with_added_tokens=True).values()) + 1
    if args.vocab_size is not None:
        if args.vocab_size < vocab:
            raise UsageError(f"--vocab-size {args.vocab_size} is below {args.tokenizer}'s largest id + 1 = {vocab}")
        vocab = args.vocab_size
    eos, eos_token = resolve_eos(tok, args)
    name = args.name if args.name is not None else default_name(args.tokenizer)
    if not name or len(name.encode()) > NAME_CAP:
        raise UsageError(f"--name {name!r}: a tokenizer name must be 1 to {NAME_CAP} bytes")
    files = expand_inputs(args.inputs)
    total = sum(os.path.getsize(f) for f in files if os.path.isfile(f))
    sink = PackSink(args, vocab, eos, name) if args.out else FileSink(args.ids_out)
    pool = None
    progress = Progress(total, args.quiet)
    t0 = time.monotonic()
    done = docs = tokens = inside = 0
    pending = collections.deque()  # at most 2 tasks per worker in flight: memory stays bounded

    def collect():
        nonlocal done, docs, tokens, inside
        result, where, consumed = pending.popleft()
        result = result.get() if pool else result
        if result[0] == "error":
            path, line = where[result[1]]
            raise InputError(f"{path}{f':{line}' if line else ''}: the tokenizer refused the text: {result[2]}")
        sink.write(result[0])
        docs, tokens, inside, done = docs + result[1], tokens + result[2], inside + result[3], done + consumed
        progress.show(done, tokens)

    try:
        init = (args.tokenizer, not args.no_add_special_tokens, args.split_special_tokens, eos)
        if args.workers > 1:  # spawn: a clean interpreter, no inherited pipe ends or threads
            pool = multiprocessing.get_context("spawn").Pool(args.workers, worker_init, init)
        else:
            worker_init(*init)
            signal.signal(signal.SIGINT, signal.default_int_handler)
        for texts, where, consumed in batches(documents(files, args.format, args.field), args.batch_chars):
            task = pool.apply_async(encode_batch, (texts,)) if pool else encode_batch(texts)
            pending.append((task, where, consumed))
            while len(pending) > (2 * args.workers if pool else 0):
                collect()
        while pending:
            collect()
        if docs == 0:
            raise InputError(f"no documents found in {', '.join(files[:4])}{', ...' if len(files) > 4 else ''}; "
                             f"nothing to pack")
        progress.show(done, tokens, final=True)
        sink.finish()
    except BaseException:
        sink.abort()
        raise
    finally:
        if pool:
            pool.terminate()
            pool.join()
    seconds = time.monotonic() - t0
    print(f"{PROG}: {docs} documents, {tokens} tokens (one EOS each) from {len(files)} file(s), "
          f"{total / 1e6:.1f} MB, in {seconds:.2f} s: {tokens / max(seconds, 1e-9):.4g} tokens/s, "
          f"{total / 1e6 / max(seconds, 1e-9):.2f} MB/s with {args.workers} worker(s); tokenizer {name}, "
          f"vocab_size {vocab}, eos_id {eos} ({eos_token!r})", file=sys.stderr)
    if inside:
        print(f"{PROG}: warning: {inside} document(s) hold the EOS id inside their text, which splits each there "
              f"(--split-special-tokens encodes special-token text as plain text)", file=sys.stderr)
    if args.ids_out:
        print(f"{PROG}: pack with: dsa pack --format u32 --vocab-size {vocab} --eos-id {eos} --tokenizer '{name}' "
              f"--out PREFIX {args.ids_out}", file=sys.stderr)


def tokenizers_version():
    import tokenizers
    return tokenizers.__version__


def parse_args(argv):
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="examples:\n"
                                "  .venv/bin/python tools/tokenize_pack.py --tokenizer DeepSeek-V3/tokenizer.json \\\n"
                                "      --field text --workers 8 --out data/web web/*.jsonl\n"
                                "  .venv/bin/python tools/tokenize_pack.py --tokenizer tok.json --eos '</s>' "
                                "--format text --out data/books books/")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="text, JSONL or Parquet files, or directories of them")
    p.add_argument("--tokenizer", required=True, metavar="FILE", help="a Hugging Face tokenizer.json")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", metavar="PREFIX", help="dsa pack's output prefix: PREFIX-00000.h5, ...")
    out.add_argument("--ids-out", metavar="FILE", help="write the uint32 id stream to FILE (- for stdout) instead")
    p.add_argument("--format", choices=("auto", "text", "jsonl", "parquet"), default="auto",
                   help="input format (auto: .jsonl/.json/.ndjson JSONL, .parquet Parquet, else text; default auto)")
    p.add_argument("--field", default="text", help="JSONL key / Parquet column of the text (default text)")
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)),
                   help="tokenizer processes (default: the CPUs this process may use, here %(default)s)")
    p.add_argument("--eos", metavar="TOKEN", help="the end-of-document token (default: from the tokenizer)")
    p.add_argument("--eos-id", type=int, metavar="N", help="the end-of-document id, instead of --eos")
    p.add_argument("--name", help="tokenizer name stored in the shards (default NAME@SHA256-PREFIX of the file)")
    p.add_argument("--vocab-size", type=int, metavar="N",
                   help="vocab_size to record, at least the tokenizer's (default: its largest id + 1)")
    p.add_argument("--no-add-special-tokens", action="store_true",
                   help="skip the tokenizer's post-processor tokens (e.g. BOS): encode(text, add_special_tokens=False)")
    p.add_argument("--split-special-tokens", action="store_true",
                   help="encode special-token text found in documents as plain text, not as the special token")
    p.add_argument("--batch-chars", type=int, default=BATCH_CHARS, metavar="N",
                   help="characters of text per worker task (default %(default)s; at most 4096 documents)")
    p.add_argument("--dsa", metavar="PATH", help="the dsa binary (default: $DSA, else this checkout's build/dsa, else dsa on the PATH)")
    for flag in ("--shard-tokens", "--chunk-tokens", "--zstd-level"):
        p.add_argument(flag, metavar="N", help=f"passed to dsa pack {flag}")
    p.add_argument("--force", action="store_true", help="passed to dsa pack: replace an existing finished set")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    args = p.parse_args(argv)
    if args.workers < 1:
        p.error(f"--workers {args.workers} must be at least 1")
    if args.batch_chars < 1:
        p.error(f"--batch-chars {args.batch_chars} must be at least 1")
    if args.eos is not None and args.eos_id is not None:
        p.error("give --eos or --eos-id, not both")
    if args.ids_out and (args.force or args.shard_tokens or args.chunk_tokens or args.zstd_level):
        p.error("--force, --shard-tokens, --chunk-tokens and --zstd-level are for --out (dsa pack)")
    if not os.path.isfile(args.tokenizer):
        p.error(f"--tokenizer {args.tokenizer}: no such file")
    return args


def main(argv):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        run(args)
    except InputError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2 if isinstance(e, UsageError) else 1
    except (KeyboardInterrupt, Terminated) as e:
        print(f"{PROG}: {'terminated' if isinstance(e, Terminated) else 'interrupted'}; nothing was packed",
              file=sys.stderr)
        return 130 if isinstance(e, KeyboardInterrupt) else 143
    except Exception as e:  # the tokenizer file itself, or I/O
        print(f"{PROG}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

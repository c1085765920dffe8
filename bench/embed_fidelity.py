"""The sentences the embedding bench measures fidelity on: none a recipe has seen.

Every recipe calibrates, prunes, distils and is gated on the bench's ``train`` and ``eval``
sentences (standard-library docstrings). Fidelity measured on those would flatter the
compressed model, so it is measured on other sentences, from two real text domains that ship
offline: more standard-library docstrings, and the descriptions in the installed packages'
metadata (``importlib.metadata``: summaries and the first sentences of long descriptions,
written by other people about other things).
"""

from __future__ import annotations

import random
from importlib.metadata import distributions

import pandas as pd

STDLIB = "stdlib docstrings"
PACKAGES = "package descriptions"
_MIN_CHARS, _MAX_CHARS = 20, 400


def package_sentences() -> list[str]:
    """Deduplicated English sentences from installed packages' summaries and descriptions,
    in a stable (sorted by package name) order."""
    from leanscore.bench.text_data import _sentences

    seen: dict[str, None] = {}
    dists = sorted(distributions(), key=lambda d: (d.metadata.get("Name") or "").lower())
    for dist in dists:
        meta = dist.metadata
        for text in (meta.get("Summary") or "", (meta.get("Description") or "")[:2000]):
            for sentence in _sentences(text):
                if _MIN_CHARS <= len(sentence) <= _MAX_CHARS and sentence.isascii():
                    seen.setdefault(sentence, None)
    return list(seen)


def fidelity_sentences(
    recipe_sentences: set[str], rows: int, *, seed: int = 2
) -> dict[str, list[str]]:
    """Up to ``rows`` sentences in all, half from each domain, none in ``recipe_sentences``."""
    from leanscore.bench.text_data import stdlib_sentences

    per_domain = max(1, rows // 2)
    out = {}
    for domain, pool in ((STDLIB, stdlib_sentences()), (PACKAGES, package_sentences())):
        fresh = [s for s in pool if s not in recipe_sentences]
        random.Random(seed).shuffle(fresh)
        if len(fresh) <= 10:
            raise ValueError(
                f"only {len(fresh)} {domain} sentences are left after the recipes' own: "
                "fidelity needs more than 10; lower eval_rows/train_rows"
            )
        out[domain] = fresh[:per_domain]
    return out


def fidelity_table(domains: dict[str, list[str]]) -> tuple[pd.DataFrame, dict[str, list[int]]]:
    """(doc_id, text) rows of every domain in turn, and each domain's [start, end) doc_ids."""
    texts, ranges = [], {}
    for domain, sentences in domains.items():
        ranges[domain] = [len(texts), len(texts) + len(sentences)]
        texts.extend(sentences)
    frame = pd.DataFrame({"doc_id": range(len(texts)), "text": texts}).astype({"doc_id": "int64"})
    return frame, ranges

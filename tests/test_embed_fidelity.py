"""The embedding bench measures fidelity only on sentences no recipe used (calibration,
pruning, distillation, the gate), from two real text domains that ship offline."""

from __future__ import annotations

from pathlib import Path

import pytest
from leanscore.jobs.bench.embed import BenchEmbedConfig, _split_sentences, held_out_domains
from leanscore.jobs.bench.embed_fidelity import PACKAGES, STDLIB, fidelity_sentences, fidelity_table
from leanscore.jobs.config import load_config

CONF = Path(__file__).resolve().parents[1] / "conf"


def test_fidelity_rows_are_disjoint_from_every_recipe_row():
    config = load_config(BenchEmbedConfig, CONF / "bench-embed.yaml")
    eval_texts, train_texts = _split_sentences(config)  # what every recipe is built and gated on
    domains = held_out_domains(config)
    assert set(domains) == {STDLIB, PACKAGES}
    used = set(eval_texts) | set(train_texts)
    for domain, sentences in domains.items():
        assert len(sentences) == config.fidelity_rows // 2, domain
        assert len(set(sentences)) == len(sentences), domain
        assert not used & set(sentences), (domain, sorted(used & set(sentences))[:3])
    # the two domains are different text, not the same sentences twice
    assert not set(domains[STDLIB]) & set(domains[PACKAGES])
    frame, ranges = fidelity_table(domains)
    assert list(frame["doc_id"]) == list(range(len(frame)))
    a, b = ranges[PACKAGES]
    assert list(frame["text"][a:b]) == domains[PACKAGES]


def test_a_recipe_sentence_is_never_a_fidelity_sentence():
    pool = fidelity_sentences(set(), 200)
    taken = set(pool[STDLIB][:50]) | set(pool[PACKAGES][:50])
    again = fidelity_sentences(taken, 200)
    assert not taken & (set(again[STDLIB]) | set(again[PACKAGES]))


def test_too_few_fresh_sentences_is_an_error_naming_the_fix():
    from leanscore.compression.text_data import stdlib_sentences

    with pytest.raises(ValueError, match="lower eval_rows/train_rows"):
        fidelity_sentences(set(stdlib_sentences()), 100)

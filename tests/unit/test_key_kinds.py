"""Keys of keyed outputs held to the demonstrations' keys' kind, by the shipped MiniLM encoder."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from p2m.common.encoder import SHIPPED_ENCODER_NAME, SentenceEncoder, shipped_encoder_path
from p2m.common.types import Example, TaskSpec
from p2m.generator import options as generator_options
from p2m.generator.invariants import infer
from p2m.generator.key_kinds import MARGIN, KeyKinds, learn_threshold
from p2m.generator.options import GenerateOptions, applied_invariants, generation_key
from p2m.generator.service import options_from_pb
from prompt2model.v1 import generator_pb2

# Temporal's demonstrations, as the paper's prompt keys them: time expressions.
TIME_KEYS = ["last year", "July 1st", "tonight", "next week", "2009", "this morning"]
TEMPORAL = TaskSpec(
    "List each time expression with its date.",
    (
        Example("Sent 1998-09-07: revenues dropped last year.", "last year == 1997"),
        Example("Sent 2013-09-27: lovely soup!", "N/A"),
        Example("Sent 2022-05-17: open from July 1st.", "July 1st == 2022-07-01"),
        Example("Sent 2014-07-11: nothing to add.", "N/A"),
        Example("Sent 2013-03-22: out tonight.", "tonight == 2013-03-22"),
        Example("Sent 2016-01-04: next week, as in 2009.", "next week == 2016-01 | 2009 == 2009"),
    ),
)


@pytest.fixture(scope="module")
def minilm() -> SentenceEncoder:
    return SentenceEncoder(shipped_encoder_path(), SHIPPED_ENCODER_NAME)


def test_the_threshold_is_the_lowest_leave_one_out_cosine_less_the_margin(minilm):
    vectors = minilm.encode(TIME_KEYS)
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -1)
    lowest = float(similarity.max(axis=1).min())
    threshold = learn_threshold(minilm, TIME_KEYS)
    assert threshold == pytest.approx(lowest - MARGIN, abs=0.006)
    assert 0 < threshold < lowest
    assert learn_threshold(minilm, TIME_KEYS[:3]) == 0.0  # too few keys to learn a kind from


def test_a_key_of_another_kind_is_unlike_the_demonstrations_keys(minilm):
    kinds = KeyKinds(minilm, TIME_KEYS, learn_threshold(minilm, TIME_KEYS))
    for key in ("next month", "yesterday", "last summer", "this evening"):
        assert not kinds.unlike([key]), (key, kinds.closest(key))
    for key in ("Paris", "Apple", "Game of Thrones", "over 5 million units"):
        assert kinds.unlike([key]), (key, kinds.closest(key))
    assert kinds.unlike(["last year", "Paris"])  # one such key is enough
    assert not kinds.unlike([])  # a fixed output ("N/A") has no keys


def test_inferred_with_an_encoder_only_and_only_for_keyed_outputs(minilm):
    rules = infer(TEMPORAL, minilm)
    keys = rules.demonstration_keys(TEMPORAL.demonstrations)
    assert keys == ["last year", "July 1st", "tonight", "next week", "2009"]
    assert rules.output_key_kinds == learn_threshold(minilm, keys) > 0
    assert infer(TEMPORAL).output_key_kinds == 0.0  # no encoder: no rule by meaning
    assert rules.output_keys("Paris == 2024-05-30 | tonight == 2024-05-30") == ["Paris", "tonight"]
    assert rules.output_keys("N/A") == []
    assert any("demonstrations' keys' kind" in line for line in rules.describe())
    sentiment = TaskSpec("Label it.", tuple(Example(f"text {i}", "positive") for i in range(4)))
    assert infer(sentiment, minilm).output_key_kinds == 0.0


def test_the_generation_key_changes_only_where_the_rule_is_asked_for_and_learnable(monkeypatch):
    sentiment = TaskSpec("Label it.", (Example("good", "positive"), Example("bad", "negative")))
    asked = GenerateOptions(key_kinds=True)
    keys = {t: generation_key(t, asked, "m") for t in (TEMPORAL, sentiment)}
    # Off (the default), every task keeps the key it had before the rule.
    assert generation_key(TEMPORAL, GenerateOptions(), "m") != keys[TEMPORAL]
    assert generation_key(sentiment, GenerateOptions(), "m") == keys[sentiment]
    monkeypatch.setattr(generator_options, "MIN_KEYS", 6)  # Temporal's five keys now too few
    assert generation_key(TEMPORAL, asked, "m") == generation_key(TEMPORAL, GenerateOptions(), "m")
    assert generation_key(sentiment, asked, "m") == keys[sentiment]


def test_rules_given_as_they_are_keep_one_key_whatever_key_kinds_says():
    given = GenerateOptions(invariants=infer(TEMPORAL))  # the learned rules, passed explicitly
    asked = replace(given, key_kinds=True)
    assert generation_key(TEMPORAL, asked, "m") == generation_key(TEMPORAL, given, "m")


def test_the_rule_is_learned_only_where_the_options_ask_for_it(minilm):
    assert applied_invariants(TEMPORAL, GenerateOptions(), minilm).output_key_kinds == 0.0
    asked = applied_invariants(TEMPORAL, GenerateOptions(key_kinds=True), minilm)
    assert asked.output_key_kinds > 0
    assert options_from_pb(generator_pb2.GenerateOptions(key_kinds=True)).key_kinds
    assert not options_from_pb(generator_pb2.GenerateOptions()).key_kinds

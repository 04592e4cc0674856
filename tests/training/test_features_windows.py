"""Windows over long posts: nothing dropped, spans mapped per window, features cached."""

from __future__ import annotations

import random

import pytest

from psy_agents.agents.backbones import load_tokenizer
from psy_agents.data.features import build_windows, clear_memory_cache, window_targets
from psy_agents.data.pairs import Pair, Span
from psy_agents.errors import ConfigError
from tests.training.helpers import EVIDENCE, SYMPTOM, make_post


def _late_pair() -> Pair:
    text, spans = make_post(random.Random(1), 40, 2, EVIDENCE[0])
    return Pair("late", SYMPTOM, text, 1, spans)


def test_every_post_token_lands_in_some_window_and_late_evidence_gets_a_target(hand_tiny):
    tok = load_tokenizer(hand_tiny)
    pair = _late_pair()
    ws = build_windows([pair], tok, max_length=64, stride=16)
    assert len(ws) >= 4
    covered = set()
    for offs in ws.offsets:
        covered |= {tuple(o) for o in offs if o[0] >= 0}
    whole = tok(pair.text, return_offsets_mapping=True, add_special_tokens=False)
    assert {tuple(o) for o in whole["offset_mapping"]} == covered
    hits = [w for w in range(len(ws)) if ws.start[w] > 0]
    assert hits and min(hits) >= 2  # the evidence is past the first windows
    w = hits[0]
    offs = ws.offsets[w]
    assert pair.text[offs[ws.start[w], 0]:offs[ws.end[w], 1]] == EVIDENCE[0]
    assert ws.cls_target[0] == 0.0 and ws.cls_target[w] == 1.0


def test_truncated_and_unlocatable_spans_never_raise(hand_tiny):
    tok = load_tokenizer(hand_tiny)
    text = "word " * 200
    odd = Pair("odd", SYMPTOM, text, 1, (Span(10, 900, "x"),))  # longer than any window
    lost = Pair("lost", SYMPTOM, text, 1, ())  # present, evidence not found in the post
    ws = build_windows([odd, lost], tok, max_length=64, stride=16)
    assert not ws.has_span.any()
    assert ws.cls_target[ws.pair_index == 1].all()  # label kept although no span


def test_window_targets_of_an_absent_pair_are_no_answer():
    import numpy as np

    offs = np.array([[-1, -1], [0, 4], [5, 9], [-1, -1]])
    assert window_targets(Pair("a", SYMPTOM, "abcd efgh", 0, ()), offs) == (0.0, 0, 0)
    present = Pair("b", SYMPTOM, "abcd efgh", 1, (Span(5, 9, "efgh"),))
    assert window_targets(present, offs) == (1.0, 2, 2)


def test_features_are_cached_on_disk_and_reused(hand_tiny, tmp_path):
    tok = load_tokenizer(hand_tiny)
    pairs = [_late_pair()]
    first = build_windows(pairs, tok, max_length=64, stride=16, data_hash="h", cache_dir=tmp_path)
    files = list(tmp_path.glob("features-*.pkl"))
    assert len(files) == 1
    clear_memory_cache()
    again = build_windows(pairs, tok, max_length=64, stride=16, data_hash="h", cache_dir=tmp_path)
    assert again is not first and [list(x) for x in again.input_ids] == [
        list(x) for x in first.input_ids]
    build_windows(pairs, tok, max_length=64, stride=8, data_hash="h", cache_dir=tmp_path)
    assert len(list(tmp_path.glob("features-*.pkl"))) == 2  # stride is part of the key


def test_a_window_too_small_for_the_description_is_a_config_error(hand_tiny):
    tok = load_tokenizer(hand_tiny)
    with pytest.raises(ConfigError, match="max_length 32 leaves"):
        build_windows([_late_pair()], tok, max_length=32, stride=8)


def test_criterion_match_marks_post_tokens_found_in_the_criterion():
    import numpy as np

    from psy_agents.data.features import criterion_match

    # [CLS] trouble sleeping at night [SEP] i cannot sleeping at night [SEP]; ids by hand,
    # with "at" (52) and "night" (53) common to several criteria
    ids = np.array([2, 50, 51, 52, 53, 3, 60, 61, 51, 52, 53, 3])
    offsets = np.array([[-1, -1]] * 6 + [[0, 1], [2, 8], [9, 17], [18, 20], [21, 26]]
                       + [[-1, -1]], dtype=np.int32)
    match = criterion_match(ids, offsets, shared=np.array([52, 53]))
    assert match.tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 2, 1, 1, 0]


def test_shared_criterion_tokens_are_the_common_words(hand_tiny):
    from psy_agents.agents.backbones import load_tokenizer
    from psy_agents.data.features import shared_criterion_tokens

    tok = load_tokenizer(hand_tiny)
    shared = set(tok.convert_ids_to_tokens(shared_criterion_tokens(tok).tolist()))
    assert {"or", "feeling"} <= shared  # in several descriptions
    assert "suicide" not in shared and "appetite" not in shared  # in one only

"""Pair labels, span location (exact, normalized, unlocatable) and the criteria table."""

from __future__ import annotations

import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from psy_agents.data.criteria import (
    CRITERIA,
    SPECIAL_CASE,
    SYMPTOMS,
    criterion_text,
    symptoms_for,
)
from psy_agents.data.pairs import Annotation, build_pairs, locate, normalize, token_offset

POST = "I work nights. I can't sleep at all. I sleep fine these days. Bye."


def _label(rows: list[tuple[str, int]], symptom: str = "SLEEP_ISSUES") -> int:
    anns = [Annotation(i + 1, "p1", s, status, "I can't sleep at all.")
            for i, (s, status) in enumerate(rows)]
    pairs, _ = build_pairs({"p1": POST}, anns, SYMPTOMS)
    return next(p.label for p in pairs if p.symptom == symptom)


def test_status_1_means_present():
    assert _label([("SLEEP_ISSUES", 1)]) == 1


def test_only_status_0_means_absent():
    assert _label([("SLEEP_ISSUES", 0), ("SLEEP_ISSUES", 0)]) == 0


def test_both_statuses_mean_present():
    assert _label([("SLEEP_ISSUES", 0), ("SLEEP_ISSUES", 1)]) == 1


def test_unannotated_pair_is_absent():
    assert _label([("FATIGUE", 1)]) == 0
    assert _label([("FATIGUE", 1)], "FATIGUE") == 1


def test_every_post_gets_one_pair_per_symptom_in_order():
    pairs, _ = build_pairs({"a": POST, "b": "Hello there."}, [], SYMPTOMS)
    assert [(p.post_id, p.symptom) for p in pairs] == [
        (post, s) for post in ("a", "b") for s in SYMPTOMS]
    assert all(p.label == 0 and p.spans == () for p in pairs)


def test_spans_only_from_status_1_deduplicated_and_sorted():
    anns = [Annotation(1, "p", "SLEEP_ISSUES", 1, "Bye."),
            Annotation(2, "p", "SLEEP_ISSUES", 1, "I can't sleep at all."),
            Annotation(3, "p", "SLEEP_ISSUES", 1, "I can't sleep at all."),
            Annotation(4, "p", "SLEEP_ISSUES", 0, "I sleep fine these days.")]
    pairs, report = build_pairs({"p": POST}, anns, ["SLEEP_ISSUES"])
    spans = pairs[0].spans
    assert [POST[s.start:s.end] for s in spans] == ["I can't sleep at all.", "Bye."]
    assert report.normalized == report.unlocatable == report.beyond_window == []


def test_normalized_and_unlocatable_are_reported_and_label_kept():
    post = "Ｉ can't  sleep\nat all～ The end."
    anns = [Annotation(7, "p", "SLEEP_ISSUES", 1, "I can't sleep at all~"),
            Annotation(9, "p", "FATIGUE", 1, "I am always tired.")]
    pairs, report = build_pairs({"p": post}, anns, ["SLEEP_ISSUES", "FATIGUE"])
    sleep, fatigue = pairs
    assert post[sleep.spans[0].start:sleep.spans[0].end] == "Ｉ can't  sleep\nat all～"
    assert report.normalized == [7] and report.unlocatable == [9]
    assert fatigue.label == 1 and fatigue.spans == ()


def test_evidence_past_512_tokens_is_counted():
    post = "word " * 600 + "I can't sleep at all."
    anns = [Annotation(1, "p", "SLEEP_ISSUES", 1, "I can't sleep at all."),
            Annotation(2, "p", "SLEEP_ISSUES", 1, "word word")]
    _, report = build_pairs({"p": post}, anns, ["SLEEP_ISSUES"])
    assert report.beyond_window == [1]
    assert token_offset(post, post.index("I can't")) == 600


_WORD = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)),
                min_size=1, max_size=8)
_SPACE = st.sampled_from([" ", "  ", "\n", "\t", "\u3000", " \n "])


def _fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60), st.text(max_size=20))
def test_any_located_span_normalizes_to_the_sentence(text, sentence):
    span, _ = locate(text, sentence)
    if span is not None:
        assert normalize(text[span.start:span.end]) == normalize(sentence)


@settings(max_examples=300, deadline=None)
@given(before=st.lists(st.sampled_from(["Hi.", "ok", "the cat", "～"]), max_size=4),
       words=st.lists(st.from_regex(r"[A-Za-z0-9',.!?]{1,8}", fullmatch=True), min_size=1,
                      max_size=6),
       gaps=st.lists(_SPACE, min_size=6, max_size=6), widen=st.booleans(),
       after=st.lists(st.sampled_from(["Bye.", "x", "1 2"]), max_size=3))
def test_perturbed_sentence_is_found_by_normalized_matching(before, words, gaps, widen, after):
    sentence = " ".join(words)
    in_post = "".join(w + g for w, g in zip(words, gaps, strict=False)).rstrip()
    if widen:
        in_post = _fullwidth(in_post)
    text = " ".join([*before, in_post, *after])
    span, exact = locate(text, sentence)
    assert span is not None
    assert normalize(text[span.start:span.end]) == normalize(sentence)
    assert exact == (sentence in text)
    assert unicodedata.normalize("NFKC", text[span.start:span.end]).split() == sentence.split()


def test_criteria_table():
    assert SYMPTOMS == ("DEPRESSED_MOOD", "ANHEDONIA", "APPETITE_CHANGE", "SLEEP_ISSUES",
                        "PSYCHOMOTOR", "FATIGUE", "WORTHLESSNESS", "COGNITIVE_ISSUES",
                        "SUICIDAL_THOUGHTS")
    assert [CRITERIA[s].code for s in SYMPTOMS] == [f"A{i}" for i in range(1, 10)]
    texts = {criterion_text(s) for s in SYMPTOMS}
    assert len(texts) == 9 and all(len(t) > 60 for t in texts)
    assert SPECIAL_CASE not in symptoms_for() and symptoms_for(True)[-1] == SPECIAL_CASE
    assert criterion_text(SPECIAL_CASE) not in texts

"""The nine DSM-5 major-depressive-episode criteria (A1–A9), described in our own words.

The description is what the model reads as segment A of a (criterion, post) pair, so it
names the everyday wording a Reddit post would use rather than clinical jargon.
``SPECIAL_CASE`` is an annotation label of ReDSM5, not a criterion; it is excluded unless a
caller asks for it.
"""

from __future__ import annotations

from dataclasses import dataclass

SPECIAL_CASE = "SPECIAL_CASE"


@dataclass(frozen=True)
class Criterion:
    """One criterion: its DSM-5 code (A1..A9), the ReDSM5 label, a title and a description."""

    code: str
    symptom: str
    title: str
    description: str


_TABLE: tuple[Criterion, ...] = (
    Criterion("A1", "DEPRESSED_MOOD", "Depressed mood",
              "Feeling sad, empty, hopeless or down most of the day, nearly every day; "
              "crying a lot or feeling that nothing will get better."),
    Criterion("A2", "ANHEDONIA", "Loss of interest or pleasure",
              "No longer enjoying or caring about things that used to be fun: hobbies, "
              "friends, games, music or sex feel pointless or flat."),
    Criterion("A3", "APPETITE_CHANGE", "Appetite or weight change",
              "Eating much less or much more than usual, skipping meals or bingeing, or "
              "losing or gaining weight without trying."),
    Criterion("A4", "SLEEP_ISSUES", "Sleep problems",
              "Trouble falling or staying asleep, waking too early, lying awake at night, "
              "or sleeping far too much."),
    Criterion("A5", "PSYCHOMOTOR", "Restlessness or slowing down",
              "Being visibly restless, pacing and unable to sit still, or moving, talking "
              "and thinking noticeably slower than usual."),
    Criterion("A6", "FATIGUE", "Fatigue or loss of energy",
              "Feeling tired, drained or exhausted nearly every day; even small tasks such "
              "as showering or getting out of bed take great effort."),
    Criterion("A7", "WORTHLESSNESS", "Worthlessness or excessive guilt",
              "Feeling worthless, useless, like a failure or a burden, or blaming oneself "
              "far more than the situation deserves."),
    Criterion("A8", "COGNITIVE_ISSUES", "Trouble thinking or concentrating",
              "Being unable to focus, concentrate, remember things or make even simple "
              "decisions; the mind feels foggy."),
    Criterion("A9", "SUICIDAL_THOUGHTS", "Thoughts of death or suicide",
              "Recurring thoughts about death, wishing not to wake up, thinking about "
              "suicide, having a plan, or having attempted it."),
)

_SPECIAL = Criterion("--", SPECIAL_CASE, "Special case",
                     "A statement the annotators flagged as clinically relevant but not one "
                     "of the nine criteria, such as a diagnosis, medication or a related "
                     "condition.")

SYMPTOMS: tuple[str, ...] = tuple(c.symptom for c in _TABLE)
CRITERIA: dict[str, Criterion] = {c.symptom: c for c in _TABLE}


def symptoms_for(include_special_case: bool = False) -> tuple[str, ...]:
    """The symptom labels a run uses: the nine criteria, plus SPECIAL_CASE if asked."""
    return (*SYMPTOMS, SPECIAL_CASE) if include_special_case else SYMPTOMS


def criterion(symptom: str) -> Criterion:
    """The :class:`Criterion` of ``symptom`` (SPECIAL_CASE included).

    Raises:
        KeyError: ``symptom`` is not a known label (a programming error, not user input).
    """
    return _SPECIAL if symptom == SPECIAL_CASE else CRITERIA[symptom]


def criterion_text(symptom: str) -> str:
    """The description fed to the model as segment A of a (criterion, post) pair."""
    crit = criterion(symptom)
    return f"{crit.title}: {crit.description}"

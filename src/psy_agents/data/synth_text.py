"""Sentence pools for the synthetic ReDSM5 generator (written for this project).

Each symptom has varied positive wordings sharing a few keywords a tiny model can pick up,
and denial wordings used as explicit status-0 "hard negatives" (they share the topic words,
so only the negation separates them). Fillers are neutral everyday sentences.
"""

from __future__ import annotations

import random

# Core clauses per symptom. Each carries the symptom's anchor keyword (sad, interest,
# appetite, sleep, restless/slowed, tired, worthless, focus, suicide/die), which its
# criterion description (data/criteria.py) names too: the lexical signal a tiny model trained
# from scratch can learn from ~300 posts. The denials below share the anchors.
_CORES: dict[str, tuple[str, ...]] = {
    "DEPRESSED_MOOD": (
        "I feel sad and empty almost every day",
        "everything feels hopeless and sad",
        "I have been so sad and down for months",
        "I feel sad, like nothing will ever get better",
        "I am sad and empty inside",
        "I keep crying because I feel so sad",
        "my mood is low and sad all the time",
        "I wake up sad and stay sad all day",
    ),
    "ANHEDONIA": (
        "I have lost interest in everything I used to enjoy",
        "I lost all interest in my hobbies",
        "I have no interest in seeing my friends",
        "I have no interest in music or games anymore",
        "my hobbies hold no interest and I don't enjoy them",
        "I have zero interest in anything I used to love",
        "I lost interest in my favourite shows",
        "nothing is fun and I have no interest in it",
    ),
    "APPETITE_CHANGE": (
        "my appetite is gone and I skip meals",
        "I barely eat, my appetite is gone and I lost weight",
        "I have been binge eating, my appetite is out of control",
        "I have no appetite for food at all",
        "I lost fifteen pounds because I have no appetite",
        "my appetite is huge and I keep eating all night",
        "I forget to eat meals because I have no appetite",
        "my appetite changed and I gained weight",
    ),
    "SLEEP_ISSUES": (
        "I can't sleep and lie awake until 4am",
        "my insomnia means I barely sleep at night",
        "I sleep fourteen hours and still want more sleep",
        "I wake up at 3am and can't get back to sleep",
        "my sleep is a mess and I haven't slept properly in weeks",
        "I stay awake all night and cannot sleep",
        "I oversleep and can't sleep at a normal time",
        "getting to sleep takes me hours",
    ),
    "PSYCHOMOTOR": (
        "I feel so restless that I pace my room for hours",
        "I can't sit still, I am restless and keep pacing",
        "everything I do feels slowed down, even talking",
        "people say I am slowed down and speak really slowly now",
        "I am fidgeting and restless all the time",
        "my body feels slowed down, like moving through mud",
        "I keep pacing back and forth, restless and agitated",
        "my movements are slowed and sluggish",
    ),
    "FATIGUE": (
        "I am tired and exhausted all the time",
        "I have no energy and showering makes me tired",
        "I feel drained and tired every day",
        "getting out of bed leaves me tired",
        "my energy is gone and I am always tired",
        "small chores leave me so tired",
        "I am tired and worn out constantly",
        "I have zero energy and feel tired no matter how much I rest",
    ),
    "WORTHLESSNESS": (
        "I feel worthless and like a burden to everyone",
        "I am a failure and feel worthless",
        "I feel useless and worthless",
        "everyone would be better off without someone as worthless as me",
        "I feel so guilty and worthless, it is all my fault",
        "I am worthless and fail at everything",
        "I hate myself and feel worthless",
        "I feel like a worthless burden and I am ashamed",
    ),
    "COGNITIVE_ISSUES": (
        "I can't focus and my mind is foggy",
        "I can't focus at work and I keep forgetting things",
        "I can't focus enough to make even simple decisions",
        "my brain is foggy and I can't focus on reading",
        "I lose my train of thought and can't focus",
        "I can't focus and keep forgetting what I was doing",
        "I can't focus or make decisions, even choosing lunch",
        "I read the same page five times because I can't focus",
    ),
    "SUICIDAL_THOUGHTS": (
        "I keep thinking about suicide and ending it all",
        "I wish I could die and not wake up",
        "I have thought about suicide more than once",
        "I think about suicide and dying every day",
        "I have been having thoughts of suicide again",
        "part of me wants to die so the pain stops",
        "I wrote a suicide plan to end my life",
        "I think about suicide and don't want to be alive",
    ),
}

# Neutral openers and endings around a core clause: the same core reads differently from
# post to post, so a model has to key on the symptom words, not memorize whole sentences.
PREFIXES = ("", "Lately ", "Honestly, ", "These days ", "For months now ", "Since the winter ",
            "Most days ", "Ever since the breakup ", "To be honest ", "Right now ",
            "Again this week ", "Since I started college ")
SUFFIXES = (".", " and I hate it.", " and I don't know why.", " and it is getting worse.",
            " and nobody notices.", " no matter what I try.")


def _sentence(prefix: str, core: str, suffix: str) -> str:
    text = prefix + core + suffix
    return text[0].upper() + text[1:]


# The plain form of each core (no opener, a full stop): the canonical evidence sentences.
POSITIVE: dict[str, tuple[str, ...]] = {
    s: tuple(_sentence("", c, ".") for c in cores) for s, cores in _CORES.items()}


def evidence_sentences(rng: random.Random, symptom: str, n: int) -> list[str]:
    """``n`` evidence sentences for ``symptom`` with distinct cores (so that no sentence
    of one post is a substring of another), each with a random opener and ending."""
    cores = rng.sample(_CORES[symptom], n)
    return [_sentence(rng.choice(PREFIXES), c, rng.choice(SUFFIXES)) for c in cores]


NEGATIVE: dict[str, tuple[str, ...]] = {
    "DEPRESSED_MOOD": ("I don't feel sad, just a bit stressed.",
                       "My mood is actually fine most days."),
    "ANHEDONIA": ("I still enjoy my hobbies and gaming a lot.",
                  "I still have interest in seeing my friends."),
    "APPETITE_CHANGE": ("My appetite is normal and my weight hasn't changed.",
                        "I eat fine, no problems with food."),
    "SLEEP_ISSUES": ("I sleep fine these days.",
                     "Sleep is not a problem for me, I get my eight hours."),
    "PSYCHOMOTOR": ("I am not restless, I can sit still fine.",
                    "I don't feel slowed down at all."),
    "FATIGUE": ("I am not tired, I have plenty of energy.",
                "My energy levels are fine."),
    "WORTHLESSNESS": ("I don't feel worthless, I know I am doing my best.",
                      "I don't blame myself for any of it."),
    "COGNITIVE_ISSUES": ("I can concentrate fine at work.",
                         "My focus and memory are good."),
    "SUICIDAL_THOUGHTS": ("I am not suicidal, I want to be clear about that.",
                          "I have never thought about killing myself."),
}

SPECIAL = (
    "I was diagnosed with bipolar disorder two years ago.",
    "My psychiatrist just switched my medication to sertraline.",
    "I also have pretty bad social anxiety.",
    "I have PTSD from an accident when I was a kid.",
)

# Wording the annotators might have written that never appears in any post.
UNLOCATABLE = (
    "I have been feeling completely lost and hollow since the breakup.",
    "Sleeping is basically impossible for me since I moved out.",
    "I cannot find the strength to cook or clean for myself.",
)

FILLER = (
    "I work at a grocery store on weekdays.",
    "My roommate has a cat named Biscuit.",
    "It rained all week where I live.",
    "I started a new semester in September.",
    "My brother is visiting next month.",
    "I mostly take the bus to work.",
    "We had pizza for dinner on Friday.",
    "I have been watching a lot of documentaries.",
    "My phone screen cracked last week.",
    "I moved to a new apartment in the summer.",
    "The weather has been cold lately.",
    "I have a dentist appointment tomorrow.",
    "My parents live about two hours away.",
    "I am twenty four years old.",
    "My job involves a lot of spreadsheets.",
    "I bought a used bike a while ago.",
    "My sister just had a baby.",
    "I am not sure if this is the right subreddit.",
    "Sorry for the long post.",
    "Thanks for reading this far.",
    "I have a part time job at a cafe.",
    "We adopted a dog from the shelter last year.",
    "My exams start in two weeks.",
    "I live in a small town near the coast.",
    "The train was late again this morning.",
    "I tried a new recipe for soup.",
    "My laptop is really old and slow.",
    "There is construction outside my window.",
    "I have been thinking about changing my major.",
    "My friend recommended I post here.",
    "I got a parking ticket yesterday.",
    "We are redecorating the living room.",
    "I have lived here for three years.",
    "My boss wants the report by Monday.",
    "I usually call my mom on Sundays.",
    "Our neighbours have loud parties.",
    "I started learning to play the guitar.",
    "I have a meeting with my advisor on Thursday.",
    "The library closes early on weekends.",
    "My car needs new tires.",
)

OPENERS = ("Throwaway account for obvious reasons.", "Not sure where else to post this.",
           "Long time lurker, first post.", "I don't usually write things like this.")

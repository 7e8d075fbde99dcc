"""Measuring free-form answers against the world's ground truth, beside the LLaVA-Bench-style judge.

1. The object checker (`check_description`, `object_check`): does a detailed description name each object of the
   image with its right colour, shape and position, and nothing that is not there? An object *mention* is a colour +
   shape phrase ("red circle", "two red circles"), with the position the same clause gives it when it gives one
   ("the red circle is in the upper left part", "a red circle in the upper left part", "one red circle is at the
   center"). Per image:
   - recall: the image's objects named with their colour, shape and position (the 3x3 cell of the box centre, as
     everywhere in the demo) / the image's objects;
   - precision: the correct mentions / the mentions; a mention with a position is correct when an object of that
     colour and shape lies there, one without a position when the image has an object of that colour and shape
     (it claims less). A phrase said twice is one mention; a colour + shape also named with a position is counted
     by its positioned mentions only.
   Both are pooled over all descriptions (objects and mentions summed, then divided), so each object weighs the same.
2. Repetition (`repeats_phrase`): an answer *repeats a phrase* when some 3-word sequence (lower-case words)
   occurs in it twice or more while the reference answer says it at most once. Listing several objects repeats
   "is in the" legitimately, and the reference does so too, so that does not count.
"""

from __future__ import annotations

import re
from collections import Counter

from ..datagen.rule_teacher import center
from .world import COLOURS, REGION_NAMES, SHAPES

_COLOUR = "|".join(COLOURS)
_SHAPE = "|".join(SHAPES)
_REGION = "|".join(sorted(REGION_NAMES.values(), key=len, reverse=True))
# A colour + shape (singular or plural), then optionally the place the same clause puts it in: "is in the", "are in
# the", "in the", "is at the", "at the" directly after the noun.
MENTION_PATTERN = re.compile(rf"\b({_COLOUR}) ({_SHAPE})(?:e?s)?\b(?: (?:is |are )?(?:in|at) (?:the )?({_REGION})\b)?")
WORD_PATTERN = re.compile(r"[a-z0-9']+")


def cell_name(bbox: list[float]) -> str:
    """The region name of the 3x3 cell a box centre lies in ("upper left part", ..., "center")."""
    x, y = center(bbox)
    return REGION_NAMES[(min(int(y * 3), 2), min(int(x * 3), 2))]


def mentions(text: str) -> set[tuple[str, str | None]]:
    """The distinct (category, region or None) object mentions of `text`; see the module docstring."""
    found = {(f"{colour} {shape}", region or None) for colour, shape, region in MENTION_PATTERN.findall(text.lower())}
    placed = {category for category, region in found if region is not None}
    return {(category, region) for category, region in found if region is not None or category not in placed}


def check_description(text: str, instances: list[dict]) -> dict:
    """Counts for one description: objects, objects recalled (colour, shape and position right), mentions, correct
    mentions."""
    truth = Counter((instance["category"], cell_name(instance["bbox"])) for instance in instances)
    categories = {category for category, _ in truth}
    stated = mentions(text)
    correct = sum(
        (category, region) in truth if region is not None else category in categories for category, region in stated
    )
    recalled = sum(count for key, count in truth.items() if key in stated)
    return {"objects": sum(truth.values()), "recalled": recalled, "mentions": len(stated), "correct": correct}


def object_check(descriptions: list[tuple[str | None, list[dict]]]) -> dict:
    """Pooled per-object recall and precision (%) of (description, instances) pairs; a missing description names
    nothing (its objects count as missed)."""
    totals = Counter()
    for text, instances in descriptions:
        totals.update(check_description(text or "", instances))
    return {
        "images": len(descriptions),
        "objects": totals["objects"],
        "mentions": totals["mentions"],
        "recall": 100.0 * totals["recalled"] / max(1, totals["objects"]),
        "precision": 100.0 * totals["correct"] / max(1, totals["mentions"]),
    }


def trigrams(text: str) -> Counter:
    words = WORD_PATTERN.findall(text.lower())
    return Counter(zip(words, words[1:], words[2:]))


def repeats_phrase(answer: str, reference: str) -> bool:
    """Whether `answer` says a 3-word phrase twice or more that `reference` says at most once."""
    in_reference = trigrams(reference)
    return any(count >= 2 and in_reference[phrase] <= 1 for phrase, count in trigrams(answer).items())


def answer_checks(outcomes) -> dict:
    """The checker's figures for the LLaVA-Bench-style outcomes: the object check over the detailed descriptions
    (of the candidate and, as the yardstick, of the reference) and the share of answers repeating a phrase, per
    category and overall."""
    detail = [outcome for outcome in outcomes if outcome.example.metadata["category"] == "detail"]
    repetition = {}
    for name in [*dict.fromkeys(outcome.example.metadata["category"] for outcome in outcomes), "overall"]:
        chosen = [o for o in outcomes if name == "overall" or o.example.metadata["category"] == name]
        repeating = sum(repeats_phrase(o.text or "", o.example.answer) for o in chosen)
        repetition[name] = {"answers": len(chosen), "repeating": repeating, "percent": 100.0 * repeating / len(chosen)}
    return {
        "detail_objects": object_check([(o.text, o.example.metadata["instances"]) for o in detail]),
        "detail_objects_reference": object_check([(o.example.answer, o.example.metadata["instances"]) for o in detail]),
        "repetition": repetition,
    }


__all__ = ["answer_checks", "check_description", "mentions", "object_check", "repeats_phrase"]

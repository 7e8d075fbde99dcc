"""Questions about the shapes world and how answers are scored: the demo's two benchmarks.

1. ScienceQA-format multiple choice (`multiple_choice`): four question types each with its options in a fixed order:
   - colour:   "What color is the triangle?"   (a shape that occurs once in the image; 5 colours, chance 20%)
   - shape:    "What shape is the purple object?"   (a colour that occurs once; 4 shapes, chance 25%)
   - count:    "How many shapes are there in the image?"   (options 1 to 4, chance 25%)
   - position: "Is the red circle on the left side, in the middle or on the right side of the image?"   (the
     third of the image its centre is in; chance 33%)
   Prompts are built by `llava_hf.evaluation.scienceqa.make_example` (LLaVA-1.5's "Answer with the option's letter
   from the given choices directly." format) and parsed by its `parse_choice`; like the paper's ScienceQA run, the
   model is fine-tuned on questions of the same format about the *train* images and tested on held-out images.

2. A LLaVA-Bench-style relative score (`open_questions`, `judge`): per held-out image one conversation question,
   one detailed-description request and one complex-reasoning question. The reference answer is what the
   data-generation teacher writes from the annotations (the paper's text-only GPT-4 references). LLaVA-Bench asks an
   LLM judge to rate the candidate and the reference 1-10 and reports mean(candidate) / mean(reference) x 100. No LLM
   is available offline, so the demo uses an **automatic rule-based judge** instead, stated as such in every report:
   it reads the checkable facts an answer states (which coloured shapes exist, how many of each and in all, which
   part of the image each is in, which is left of which), checks each against the annotations, and rates
   1 + 9 x F1, where precision = true facts / stated facts and recall = the reference's facts the answer also states
   truly. It measures factual grounding only, not fluency or helpfulness.
"""

from __future__ import annotations

import re
from collections import Counter

from ..datagen.inputs import SymbolicImage
from ..datagen.rule_teacher import (
    MIN_HORIZONTAL_GAP,
    NUMBER_WORDS,
    center,
    complex_text,
    conversation_text,
    detail_text,
)
from ..evaluation import llava_bench
from ..evaluation.scienceqa import make_example
from ..evaluation.task import Example
from .world import COLOURS, REGION_NAMES, SHAPES, World, WorldImage

QUESTION_TYPES = ("colour", "shape", "count", "position")
OPEN_CATEGORIES = ("conv", "detail", "complex")
MAX_COUNT_CHOICE = 4
SIDES = ("left side", "middle", "right side")  # the column of the 3 x 3 grid an object's centre is in


# ---------------------------------------------------------------------------------------------------------------------
# Multiple choice


def multiple_choice_problems(world_image: WorldImage, every_object: bool = False) -> list[tuple[str, dict]]:
    """(question type, ScienceQA problem dict) for every type this image supports; the image field is left empty.

    Options are listed in one fixed order per type (colours alphabetically, shapes as in `SHAPES`, counts
    ascending, sides left to right), as counting and attribute benchmarks usually list them, so the answer letter
    depends on the image alone; a model that guesses without the image scores the chance level of 1/len(options).
    Position is asked about the first object (reading order) whose category occurs once, or with `every_object`
    about each of them.
    """
    objects = world_image.objects
    shape_counts = Counter(item.shape for item in objects)
    colour_counts = Counter(item.colour for item in objects)
    category_counts = Counter(item.category for item in objects)
    problems = []

    def add(question_type: str, question: str, answer: str, choices: list[str]):
        problems.append((question_type, {"question": question, "choices": choices, "answer": choices.index(answer)}))

    # The first object (in grid reading order) with a unique shape / colour / category is asked about.
    unique_shapes = [item for item in objects if shape_counts[item.shape] == 1]
    if unique_shapes:
        item = min(unique_shapes, key=lambda item: item.cell)
        add("colour", f"What color is the {item.shape}?", item.colour, sorted(COLOURS))
    unique_colours = [item for item in objects if colour_counts[item.colour] == 1]
    if unique_colours:
        item = min(unique_colours, key=lambda item: item.cell)
        add("shape", f"What shape is the {item.colour} object?", item.shape, list(SHAPES))
    if len(objects) <= MAX_COUNT_CHOICE:
        choices = [str(number) for number in range(1, MAX_COUNT_CHOICE + 1)]
        add("count", "How many shapes are there in the image?", str(len(objects)), choices)
    unique_categories = sorted((item for item in objects if category_counts[item.category] == 1), key=lambda i: i.cell)
    for item in unique_categories if every_object else unique_categories[:1]:
        question = f"Is the {item.category} on the left side, in the middle or on the right side of the image?"
        add("position", question, SIDES[item.cell[1]], list(SIDES))
    return problems


def multiple_choice(world: World, split: str, every_object: bool = False) -> list[Example]:
    """The multiple-choice examples of one split, each with `metadata["question_type"]` and the image path.
    `every_object`: a position question about every object with a one-off category, not only the first in reading
    order (training data: the held-out questions keep one per image)."""
    examples = []
    for world_image in world.splits[split]:
        seen = Counter()
        for question_type, problem in multiple_choice_problems(world_image, every_object):
            problem["image"] = str(world.path(world_image))
            problem["image_file"] = world_image.image
            suffix = f"_{seen[question_type]}" if seen[question_type] else ""
            seen[question_type] += 1
            example = make_example(f"{world_image.id}_{question_type}{suffix}", problem)
            example.metadata["question_type"] = question_type
            examples.append(example)
    return examples


def multiple_choice_records(examples: list[Example], world: World) -> list[dict]:
    """The examples as LLaVA training records (the answer is the option's letter), image paths relative to the
    world folder, like any LLaVA JSON."""
    return [
        {
            "id": example.id,
            "image": example.metadata["image_file"],
            "conversations": [
                {"from": "human", "value": f"<image>\n{example.prompt}"},
                {"from": "gpt", "value": example.answer},
            ],
        }
        for example in examples
    ]


def accuracy_by_type(outcomes) -> dict[str, dict]:
    """Per question type: correct, total, accuracy (%), and chance (%), from the evaluation's outcomes."""
    table = {}
    for question_type in QUESTION_TYPES + ("overall",):
        chosen = [
            outcome
            for outcome in outcomes
            if question_type == "overall" or outcome.example.metadata["question_type"] == question_type
        ]
        if not chosen:
            continue
        correct = sum(outcome.parsed == outcome.example.answer for outcome in chosen)
        chance = 100.0 * sum(1 / len(outcome.example.metadata["choices"]) for outcome in chosen) / len(chosen)
        table[question_type] = {
            "correct": correct,
            "total": len(chosen),
            "accuracy": 100.0 * correct / len(chosen),
            "chance": chance,
        }
    return table


# ---------------------------------------------------------------------------------------------------------------------
# LLaVA-Bench-style open questions with a rule-based judge


def _symbolic(world_image: WorldImage) -> SymbolicImage:
    record = world_image.record()
    return SymbolicImage(record["id"], record["image"], record["captions"], record["instances"])


def _first_answer(qa_text: str) -> tuple[str, str]:
    question = qa_text.split("Question:\n", 1)[1].split("\n===", 1)[0].strip()
    answer = qa_text.split("Answer:\n", 1)[1].split("\n===", 1)[0].strip()
    return question, answer


def open_questions(world: World, split: str) -> list[Example]:
    """Three open questions per image (conv / detail / complex) with the teacher's reference answers; the
    annotations travel in `metadata` for the judge."""
    examples = []
    for world_image in world.splits[split]:
        symbolic = _symbolic(world_image)
        conversation = conversation_text(symbolic).split("===\nQuestion:")
        # The second conversation question (a count) is more specific than the first (the inventory).
        conv_question, conv_answer = _first_answer("Question:" + conversation[min(1, len(conversation) - 1)])
        complex_question, complex_answer = _first_answer(complex_text(symbolic))
        items = {
            "conv": (conv_question, conv_answer),
            "detail": ("Describe this image in detail.", detail_text(symbolic)),
            "complex": (complex_question, complex_answer),
        }
        for category, (question, reference) in items.items():
            example = llava_bench.make_example(
                f"{world_image.id}_{category}",
                question,
                str(world.path(world_image)),
                reference,
                category,
                llava_bench.format_context(world_image.record()),
            )
            example.metadata["instances"] = symbolic.instances
            examples.append(example)
    return examples


_COLOUR = "|".join(COLOURS)
_SHAPE = "|".join(SHAPES)
_NUMBER = "|".join(NUMBER_WORDS[1:]) + r"|\d+"
_REGION = "|".join(sorted(REGION_NAMES.values(), key=len, reverse=True))
CATEGORY_PATTERN = re.compile(rf"\b({_COLOUR}) ({_SHAPE})(?:e?s)?\b")
COUNT_PATTERN = re.compile(rf"\b({_NUMBER}) ({_COLOUR}) ({_SHAPE})(?:e?s)?\b")
TOTAL_PATTERN = re.compile(rf"\b({_NUMBER}) (?:shapes?|objects?)\b")
REGION_PATTERN = re.compile(rf"\b({_COLOUR}) ({_SHAPE}) is (?:in|at) (?:the )?({_REGION})\b")
SIDE_PATTERN = re.compile(rf"\b({_COLOUR}) ({_SHAPE}) is (?:to the )?(left|right) of the ({_COLOUR}) ({_SHAPE})\b")


def _number(word: str) -> int:
    return int(word) if word.isdigit() else NUMBER_WORDS.index(word)


def extract_facts(text: str) -> set[tuple]:
    """The checkable claims of an answer: ("has", category), ("count", category, n), ("total", n),
    ("region", category, region), ("side", category, side, other category)."""
    text = text.lower()
    facts = {("has", f"{colour} {shape}") for colour, shape in CATEGORY_PATTERN.findall(text)}
    facts |= {("count", f"{colour} {shape}", _number(n)) for n, colour, shape in COUNT_PATTERN.findall(text)}
    facts |= {("total", _number(n)) for n in TOTAL_PATTERN.findall(text)}
    facts |= {("region", f"{c} {s}", region) for c, s, region in REGION_PATTERN.findall(text)}
    facts |= {("side", f"{c1} {s1}", side, f"{c2} {s2}") for c1, s1, side, c2, s2 in SIDE_PATTERN.findall(text)}
    return facts


def fact_is_true(fact: tuple, instances: list[dict]) -> bool:
    """Check one extracted claim against the image's annotations (same geometry as the data-generation teacher)."""
    counts = Counter(instance["category"] for instance in instances)
    kind = fact[0]
    if kind == "has":
        return counts[fact[1]] > 0
    if kind == "count":
        return counts[fact[1]] == fact[2]
    if kind == "total":
        return len(instances) == fact[1]
    if kind == "region":
        return any(
            instance["category"] == fact[1] and _region_of(instance["bbox"]) == fact[2] for instance in instances
        )
    if kind == "side":
        _, first, side, second = fact
        for a in (instance for instance in instances if instance["category"] == first):
            for b in (instance for instance in instances if instance["category"] == second):
                gap = center(a["bbox"])[0] - center(b["bbox"])[0]
                if abs(gap) >= MIN_HORIZONTAL_GAP and (gap < 0) == (side == "left"):
                    return True
        return False
    raise ValueError(f"unknown fact kind {kind!r}")


def _region_of(bbox: list[float]) -> str:
    x, y = center(bbox)
    return REGION_NAMES[(min(int(y * 3), 2), min(int(x * 3), 2))]


def judge(answer: str, reference: str, instances: list[dict]) -> float:
    """Rule-based rating 1-10 of `answer`: 1 + 9 x F1 of its true facts against the reference's facts (see the
    module docstring). An answer stating nothing checkable gets 1."""
    stated = extract_facts(answer)
    required = {fact for fact in extract_facts(reference) if fact_is_true(fact, instances)}
    true_stated = {fact for fact in stated if fact_is_true(fact, instances)}
    if not stated or not required:
        return 1.0
    precision = len(true_stated) / len(stated)
    recall = len(true_stated & required) / len(required)
    if precision + recall == 0:
        return 1.0
    return 1.0 + 9.0 * (2 * precision * recall / (precision + recall))


def rule_judge_score(outcomes) -> dict:
    """The LLaVA-Bench task's score with the rule-based judge: each answer and its reference rated by `judge`, then
    llava_bench's relative score per category (mean(candidate) / mean(reference) x 100). A missing answer rates 1,
    the lowest, so it never drops out of the means."""
    judged, categories = {}, {}
    for outcome in outcomes:
        example = outcome.example
        instances = example.metadata["instances"]
        candidate = 1.0 if outcome.text is None else judge(outcome.text, example.answer, instances)
        judged[example.id] = {"reference": judge(example.answer, example.answer, instances), "candidate": candidate}
        categories[example.id] = example.metadata["category"]
    table = llava_bench.relative_scores(judged, categories)
    names = [name for name in OPEN_CATEGORIES if name in table] + ["overall"]
    return {
        "metrics": {name: table[name]["relative"] for name in names if table[name]["relative"] is not None},
        "passes": {"reference_first": table},
        "judge": {"kind": "rule-based (automatic fact check against the annotations; not an LLM judge)"},
        "judgments": judged,
        "table": {
            "columns": ["category", "judged", "reference", "candidate", "relative"],
            "rows": [
                [
                    name,
                    table[name]["count"],
                    table[name]["reference"],
                    table[name]["candidate"],
                    table[name]["relative"],
                ]
                for name in names
            ],
        },
    }


__all__ = [
    "OPEN_CATEGORIES",
    "QUESTION_TYPES",
    "SIDES",
    "accuracy_by_type",
    "extract_facts",
    "fact_is_true",
    "judge",
    "multiple_choice",
    "multiple_choice_problems",
    "multiple_choice_records",
    "open_questions",
    "rule_judge_score",
]

"""The offline teacher: writes correct answers straight from the symbolic description, no LLM involved.

It answers through the same interface as the LLM teacher (`answer(image, task_type, messages) -> ChatResult`, output
in the same text formats, checked by the same parser), so the whole pipeline runs with no endpoint at all. Its
records are labelled `teacher_kind: "rule-based"`: they are templated facts (counts, categories, positions, sizes,
left/right relations), not the varied language of an LLM, and should be described as such.

Geometry conventions: boxes are [x1, y1, x2, y2] in [0, 1] from the top-left corner; an object's place is the third
of the image its box centre falls in, horizontally (left / middle / right) and vertically (upper / middle / lower).
"""

from __future__ import annotations

from collections import Counter

from ..utils.endpoints import ChatResult
from .inputs import SymbolicImage

NUMBER_WORDS = "zero one two three four five six seven eight nine ten eleven twelve".split()
IRREGULAR_PLURALS = {"person": "people", "mouse": "mice", "knife": "knives", "sheep": "sheep", "skis": "skis"}
REGION_NAMES = {
    (0, 0): "upper left part",
    (0, 1): "upper middle part",
    (0, 2): "upper right part",
    (1, 0): "middle left part",
    (1, 1): "center",
    (1, 2): "middle right part",
    (2, 0): "lower left part",
    (2, 1): "lower middle part",
    (2, 2): "lower right part",
}
# Two objects are said to be left/right of each other only when their centres are this far apart horizontally, so
# that the answer is definite.
MIN_HORIZONTAL_GAP = 0.15


def number_word(count: int) -> str:
    return NUMBER_WORDS[count] if count < len(NUMBER_WORDS) else str(count)


def plural(category: str) -> str:
    """English plural of a COCO category name ("wine glass" -> "wine glasses", "person" -> "people")."""
    head, _, last = category.rpartition(" ")
    if last in IRREGULAR_PLURALS:
        word = IRREGULAR_PLURALS[last]
    elif last.endswith(("s", "x", "ch", "sh")):
        word = last + "es"
    else:
        word = last + "s"
    return f"{head} {word}" if head else word


def noun_phrase(category: str, count: int) -> str:
    return f"{number_word(count)} {category if count == 1 else plural(category)}"


def join_words(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def center(bbox: list[float]) -> tuple[float, float]:
    return (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2


def area(bbox: list[float]) -> float:
    return max(bbox[2] - bbox[0], 0.0) * max(bbox[3] - bbox[1], 0.0)


def region(bbox: list[float]) -> str:
    """ "the upper left part" ... "the center": which ninth of the image the box centre is in."""
    x, y = center(bbox)
    return "the " + REGION_NAMES[(min(int(y * 3), 2), min(int(x * 3), 2))]


def reading_order(instances: list[dict]) -> list[dict]:
    """Instances as a reader meets them: by the third of the image their centre is in (top to bottom), then left to
    right by centre. Annotation order is arbitrary, so a text that follows it says what the image cannot tell."""

    def key(instance: dict) -> tuple[int, float]:
        x, y = center(instance["bbox"])
        return min(int(y * 3), 2), x

    return sorted(instances, key=key)


class RuleBasedTeacher:
    """Deterministic teacher; see the module docstring. Reports 0 tokens (no LLM was used)."""

    kind = "rule-based"
    model = "llava_hf-rules-v2"
    sampling: dict = {}
    deterministic = True  # a retry would give the same output, so rejected outputs are not retried

    async def answer(self, image: SymbolicImage, task_type: str, messages: list[dict]) -> ChatResult:
        writers = {"conversation": conversation_text, "detail": detail_text, "complex": complex_text}
        return ChatResult(writers[task_type](image), "stop", 0, 0, self.model)


def _qa_text(pairs: list[tuple[str, str]]) -> str:
    return "\n".join(f"Question:\n{question}\n===\nAnswer:\n{answer}\n===" for question, answer in pairs)


def _singletons(image: SymbolicImage, counts: Counter) -> list[dict]:
    """Instances whose category occurs once (so "the <category>" names exactly one object), largest first."""
    singles = [instance for instance in image.instances if counts[instance["category"]] == 1]
    return sorted(singles, key=lambda instance: -area(instance["bbox"]))


def conversation_text(image: SymbolicImage) -> str:
    """Q&A about categories, counts, positions, the largest object and left/right relations. Empty without objects
    (the pipeline rejects it as `empty`: there is nothing definite to ask)."""
    if not image.instances:
        return ""
    counts = Counter(instance["category"] for instance in image.instances)
    pairs = [
        (
            "What kinds of objects can be seen in the image?",
            f"The image shows {join_words([noun_phrase(category, n) for category, n in counts.most_common()])}.",
        )
    ]
    for category, count in counts.most_common(3):
        verb = "is" if count == 1 else "are"
        pairs.append(
            (f"How many {plural(category)} are there in the image?", f"There {verb} {noun_phrase(category, count)}.")
        )
    singles = _singletons(image, counts)
    for instance in singles[:2]:
        category = instance["category"]
        pairs.append(
            (f"Where is the {category} in the image?", f"The {category} is in {region(instance['bbox'])} of the image.")
        )
    if len(image.instances) > 1:
        largest = max(image.instances, key=lambda instance: area(instance["bbox"]))
        pairs.append(
            (
                "Which object takes up the largest part of the image?",
                f"The largest object is a {largest['category']}, in {region(largest['bbox'])} of the image.",
            )
        )
    relation = _left_right(singles)
    if relation is not None:
        first, second, side = relation
        pairs.append(
            (
                f"Is the {first} to the left or to the right of the {second}?",
                f"The {first} is to the {side} of the {second}.",
            )
        )
    return _qa_text(pairs)


def _left_right(singles: list[dict]) -> tuple[str, str, str] | None:
    """The first pair of single objects whose centres are clearly apart horizontally: (first, second, side)."""
    for index, first in enumerate(singles):
        for second in singles[index + 1 :]:
            gap = center(first["bbox"])[0] - center(second["bbox"])[0]
            if abs(gap) >= MIN_HORIZONTAL_GAP:
                return first["category"], second["category"], "left" if gap < 0 else "right"
    return None


# A description places at most this many objects one by one (a COCO image can hold dozens; the inventory counts all).
MAX_PLACED_OBJECTS = 6


def detail_text(image: SymbolicImage) -> str:
    """A description: the first caption as the overview, the object inventory, then where each object is, in
    reading order ("The cat is in ..." for a one-off category, "One dog is in ...", "Another dog is in ..." for
    repeated ones). Everything after the overview follows from the objects and their places alone, so a model
    trained on it can learn to say it from the image."""
    overview = image.captions[0].rstrip(".") + "." if image.captions else ""
    sentences = [f"The image shows the following scene: {overview[0].lower() + overview[1:]}" if overview else ""]
    if image.instances:
        ordered = reading_order(image.instances)
        counts = Counter(instance["category"] for instance in ordered)
        inventory = join_words([noun_phrase(category, n) for category, n in counts.most_common()])
        sentences.append(f"In total, the picture contains {inventory}.")
        named = Counter()
        for instance in ordered[:MAX_PLACED_OBJECTS]:
            category = instance["category"]
            article = "The" if counts[category] == 1 else "Another" if named[category] else "One"
            named[category] += 1
            sentences.append(f"{article} {category} is in {region(instance['bbox'])} of the picture.")
    return " ".join(sentence for sentence in sentences if sentence)


def complex_text(image: SymbolicImage) -> str:
    """One question that takes two steps (locate two objects, compare positions and sizes), answered step by step."""
    counts = Counter(instance["category"] for instance in image.instances)
    singles = _singletons(image, counts)
    if len(singles) < 2:
        if not image.instances:
            return ""
        category, count = counts.most_common(1)[0]
        boxes = [instance["bbox"] for instance in image.instances if instance["category"] == category]
        places = Counter(region(bbox) for bbox in boxes)
        where = join_words([f"{number_word(n)} in {place}" for place, n in places.most_common()])
        if count == 1:
            question = f"Where in the image is the {category}, and what else is there?"
            return _qa_text([(question, f"The {category} is in {region(boxes[0])}; no other objects stand out.")])
        question = f"How are the {plural(category)} spread over the image?"
        return _qa_text([(question, f"There are {noun_phrase(category, count)}: {where}.")])
    first, second = singles[0], singles[1]
    first_area, second_area = area(first["bbox"]), area(second["bbox"])
    ratio = first_area / max(second_area, 1e-9)
    if ratio < 1.5:
        size = f"It is about the same size as the {second['category']}."
    else:
        times = f"roughly {number_word(round(ratio))}" if ratio < 12.5 else "many"
        size = f"It also appears {times} times as large, which makes it the more prominent of the two."
    dx = center(first["bbox"])[0] - center(second["bbox"])[0]
    side = "to the left of" if dx < 0 else "to the right of"
    if abs(dx) < MIN_HORIZONTAL_GAP:
        side = "at about the same horizontal position as"
    question = f"How are the {first['category']} and the {second['category']} placed relative to each other?"
    answer = (
        f"First locate both objects: the {first['category']} is in {region(first['bbox'])} of the image and the "
        f"{second['category']} is in {region(second['bbox'])}. Comparing the two, the {first['category']} is {side} "
        f"the {second['category']}. {size}"
    )
    return _qa_text([(question, answer)])

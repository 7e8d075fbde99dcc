"""The "shapes world": procedural images of coloured shapes with COCO-style annotations, deterministic from a seed.

Each image is a light background split into an invisible 3x3 grid; 1 to `max_objects` shapes (circle, square,
triangle, star) of one of five colours and two sizes sit in distinct cells, jittered inside their cell. Because every
shape stays inside its own cell, the ninth of the image its box centre falls in (the data-generation teacher's
"upper left part", "center", ...) is always definite, and shapes never overlap, so colour, shape, count and position
questions all have exactly one right answer.

Records use the format of LLaVA's `caps_boxes_coco2014_val_80.jsonl`, the input of the paper's data generation:
`{"id", "image", "captions": [5 strings], "instances": [{"category": "red circle", "bbox": [x1, y1, x2, y2]}]}` with
boxes normalised to [0, 1] (3 decimals). The category carries the colour ("red circle") so a text-only teacher that
only reads categories and boxes still talks about colours. `WorldImage` keeps the structured facts (colour, shape,
size, cell) for question writing and scoring.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

# The 3x3 cell names and number words of the rule-based teacher, so questions, captions and generated data agree.
from ..data.synthetic import paint_shape
from ..datagen.rule_teacher import NUMBER_WORDS, REGION_NAMES
from ..utils.io import staged_directory

COLOURS = {
    "red": (214, 39, 40),
    "green": (44, 160, 44),
    "blue": (31, 90, 220),
    "yellow": (235, 200, 20),
    "purple": (148, 60, 189),
}
SHAPES = ("circle", "square", "triangle", "star")
SIZES = ("small", "large")
BACKGROUNDS = ((245, 245, 245), (235, 235, 225), (225, 232, 240), (240, 232, 222))


@dataclass(frozen=True)
class WorldObject:
    """One shape: what it is, where it is (grid cell row/column) and its normalised box."""

    colour: str
    shape: str
    size: str
    cell: tuple[int, int]
    bbox: tuple[float, float, float, float]

    @property
    def category(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def region(self) -> str:
        return REGION_NAMES[self.cell]


@dataclass(frozen=True)
class WorldImage:
    """One image of the world: its id, file name (relative to the world folder), background and objects."""

    id: str
    image: str
    background: tuple[int, int, int]
    objects: tuple[WorldObject, ...]
    captions: tuple[str, ...]

    def record(self) -> dict:
        """The COCO-style symbolic record (LLaVA's caps_boxes format)."""
        return {
            "id": self.id,
            "image": self.image,
            "captions": list(self.captions),
            "instances": [
                {"category": item.category, "bbox": [round(v, 3) for v in item.bbox]} for item in self.objects
            ],
        }


def sample_image(rng: random.Random, max_objects: int) -> tuple[tuple, tuple[WorldObject, ...]]:
    """Pick a background and 1..max_objects objects in distinct cells (boxes in [0, 1], inside their cell)."""
    if not 1 <= max_objects <= 9:
        raise ValueError(f"max_objects={max_objects} must be between 1 and 9 (one shape per cell of a 3x3 grid).")
    background = rng.choice(BACKGROUNDS)
    count = rng.randint(1, max_objects)
    cells = rng.sample(sorted(REGION_NAMES), count)
    objects = []
    for row, column in cells:
        size = rng.choice(SIZES)
        # Side as a fraction of the image: a cell is 1/3 wide, so even a large shape keeps a margin inside it.
        side = rng.uniform(0.26, 0.31) if size == "large" else rng.uniform(0.17, 0.21)
        slack = 1 / 3 - side
        x1 = column / 3 + rng.uniform(0.15, 0.85) * slack
        y1 = row / 3 + rng.uniform(0.15, 0.85) * slack
        objects.append(
            WorldObject(
                colour=rng.choice(sorted(COLOURS)),
                shape=rng.choice(SHAPES),
                size=size,
                cell=(row, column),
                bbox=(x1, y1, x1 + side, y1 + side),
            )
        )
    return background, tuple(objects)


def describe(item: WorldObject, with_size: bool) -> str:
    return f"a {item.size} {item.category}" if with_size else f"a {item.category}"


def join_words(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def write_captions(objects: tuple[WorldObject, ...], rng: random.Random) -> tuple[str, ...]:
    """Five COCO-style captions: varied wording, each true of the image, together naming colours, shapes, sizes,
    the number of shapes and where they are."""
    count = len(objects)
    shapes_word = "shape" if count == 1 else "shapes"
    by_reading_order = sorted(objects, key=lambda item: item.cell)
    listed = join_words([describe(item, with_size=False) for item in by_reading_order])
    listed_sized = join_words([describe(item, with_size=True) for item in by_reading_order])
    placed = join_words([f"{describe(item, False)} in the {item.region}" for item in by_reading_order])
    captions = [
        f"{listed_sized[0].upper()}{listed_sized[1:]} on a plain background.",
        f"{NUMBER_WORDS[count].capitalize()} {shapes_word}: {placed}.",
        f"A picture with {NUMBER_WORDS[count]} {shapes_word}, {listed}.",
    ]
    largest = max(objects, key=lambda item: (item.bbox[2] - item.bbox[0], item.cell))
    if count == 1:
        captions.append(f"A single {largest.size} {largest.category} in the {largest.region} of the image.")
    else:
        captions.append(f"The biggest shape is the {largest.category} in the {largest.region}.")
    left_to_right = sorted(objects, key=lambda item: (item.cell[1], item.cell[0]))
    order = join_words([item.category for item in left_to_right])
    captions.append(f"From left to right: {order}." if count > 1 else f"Just one {largest.category}, nothing else.")
    rng.shuffle(captions)
    return tuple(captions)


def draw(world_image: WorldImage, size: int) -> Image.Image:
    """Render the image at `size` x `size` pixels."""
    image = Image.new("RGB", (size, size), world_image.background)
    canvas = ImageDraw.Draw(image)
    for item in world_image.objects:
        paint_shape(canvas, item.shape, tuple(value * size for value in item.bbox), COLOURS[item.colour])
    return image


def make_split(split: str, count: int, seed: int, max_objects: int = 4) -> list[WorldImage]:
    """`count` images of one split. Each image has its own random stream seeded by (seed, split, index), so a split
    does not change when another split's size does."""
    images = []
    for index in range(count):
        rng = random.Random(f"shapes-world/{seed}/{split}/{index}")
        image_id = f"{split}_{index:05d}"
        background, objects = sample_image(rng, max_objects)
        images.append(
            WorldImage(
                id=image_id,
                image=f"images/{image_id}.png",
                background=background,
                objects=objects,
                captions=write_captions(objects, rng),
            )
        )
    return images


@dataclass
class World:
    """A generated world on disk: `folder/images/*.png`, `folder/{split}.jsonl` records, the in-memory images."""

    folder: Path
    image_size: int
    splits: dict[str, list[WorldImage]]

    def path(self, world_image: WorldImage) -> Path:
        return self.folder / world_image.image

    def open(self, world_image: WorldImage) -> Image.Image:
        with Image.open(self.path(world_image)) as image:
            return image.convert("RGB")

    def records_path(self, split: str) -> Path:
        return self.folder / f"{split}.jsonl"


def build_world(
    folder: str | os.PathLike,
    num_train: int,
    num_test: int,
    seed: int = 0,
    image_size: int = 64,
    max_objects: int = 4,
) -> World:
    """Generate the train and held-out ("test") splits into `folder` as PNG files plus one JSONL of records per split.

    Deterministic: the same arguments write byte-identical files. The world is written into a staging folder that
    replaces `folder` in one rename (`utils.io.staged_directory`), so an interrupted run never leaves a truncated image
    or record file behind.
    """
    folder = Path(folder)
    splits = {
        "train": make_split("train", num_train, seed, max_objects),
        "test": make_split("test", num_test, seed, max_objects),
    }
    with staged_directory(folder, replace=True) as staging:
        (staging / "images").mkdir()
        for split, images in splits.items():
            for world_image in images:
                draw(world_image, image_size).save(staging / world_image.image, format="PNG")
            lines = "".join(json.dumps(world_image.record()) + "\n" for world_image in images)
            (staging / f"{split}.jsonl").write_text(lines, encoding="utf-8")
    return World(folder=folder, image_size=image_size, splits=splits)


__all__ = [
    "COLOURS",
    "REGION_NAMES",
    "SHAPES",
    "SIZES",
    "World",
    "WorldImage",
    "WorldObject",
    "build_world",
    "draw",
    "make_split",
]

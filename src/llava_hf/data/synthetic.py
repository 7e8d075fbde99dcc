"""A learnable synthetic image-text dataset in the row schema, for smoke tests, tiny recipes and benchmarks.

Each image is a flat background with one coloured shape; questions ask for the colour, the shape or a caption, so a
model can only lower its loss by reading the image. `lengths="realistic"` mixes short VQA answers, long
descriptions, multi-turn samples and text-only rows, like the v1.5 mix (whose lengths vary by ~10x), for padding
measurements.
"""

import math
import random

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220), "yellow": (230, 210, 40)}
SHAPES = ("square", "circle", "triangle")


def paint_shape(canvas: ImageDraw.ImageDraw, shape: str, box: tuple[float, float, float, float], fill) -> None:
    """Fill one shape (square, circle, triangle or star) inscribed in `box` = (x1, y1, x2, y2) pixels; the one shape
    painter of this dataset and of the demo's shapes world."""
    x1, y1, x2, y2 = box
    if shape == "circle":
        canvas.ellipse(box, fill=fill)
    elif shape == "square":
        canvas.rectangle(box, fill=fill)
    elif shape == "triangle":
        canvas.polygon([(x1, y2), (x2, y2), ((x1 + x2) / 2, y1)], fill=fill)
    else:  # a five-pointed star
        centre_x, centre_y, radius = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2
        canvas.regular_polygon((centre_x, centre_y, radius), 5, fill=fill)  # the star's body
        points = []
        for index in range(10):
            angle = -math.pi / 2 + index * math.pi / 5
            reach = radius if index % 2 == 0 else radius * 0.45
            points.append((centre_x + reach * math.cos(angle), centre_y + reach * math.sin(angle)))
        canvas.polygon(points, fill=fill)


def draw_shape(colour: str, shape: str, size: int = 64, seed: int = 0) -> Image.Image:
    rng = random.Random(seed)
    image = Image.new("RGB", (size, size), (rng.randint(200, 255),) * 3)
    margin = rng.randint(size // 8, size // 4)
    paint_shape(ImageDraw.Draw(image), shape, (margin, margin, size - margin, size - margin), COLOURS[colour])
    return image


def _text(role: str, text: str, with_image: bool = False) -> dict:
    content = ([{"type": "image", "text": None}] if with_image else []) + [{"type": "text", "text": text}]
    return {"role": role, "content": content}


def make_shape_rows(num_rows: int, seed: int = 0, image_size: int = 64, lengths: str = "short") -> list[dict]:
    """`num_rows` rows `{"id", "images", "messages"}`; `lengths` is "short" (one Q/A each) or "realistic"."""
    rng = random.Random(seed)
    rows = []
    for index in range(num_rows):
        colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        image = draw_shape(colour, shape, image_size, seed=seed * 100003 + index)
        kind = "short" if lengths == "short" else rng.choices(["vqa", "caption", "multi", "text"], [4, 2, 2, 1])[0]
        if kind in ("short", "vqa"):
            question, answer = rng.choice(
                [
                    ("What colour is the shape?", colour),
                    ("Which shape is shown?", shape),
                    ("Describe the image.", f"a {colour} {shape}"),
                ]
            )
            messages = [_text("user", question, with_image=True), _text("assistant", answer)]
        elif kind == "caption":
            detail = " ".join(
                rng.choice(["It sits", "It is drawn", "It appears"]) + " on a light grey background."
                for _ in range(rng.randint(3, 12))
            )
            messages = [
                _text("user", "Describe the image in detail.", with_image=True),
                _text("assistant", f"The image shows a {colour} {shape}. {detail}"),
            ]
        elif kind == "multi":
            messages = [_text("user", "What colour is the shape?", with_image=True), _text("assistant", colour)]
            for _ in range(rng.randint(1, 4)):
                messages += [_text("user", "And which shape is it?"), _text("assistant", f"It is a {shape}.")]
        else:
            messages = [
                _text("user", "Name a primary colour."),
                _text("assistant", " ".join(rng.choice(list(COLOURS)) for _ in range(rng.randint(1, 40)))),
            ]
        rows.append({"id": f"shape-{seed}-{index}", "images": [] if kind == "text" else [image], "messages": messages})
    return rows


__all__ = ["COLOURS", "SHAPES", "draw_shape", "make_shape_rows"]

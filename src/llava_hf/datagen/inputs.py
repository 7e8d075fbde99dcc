"""Symbolic image descriptions: the input of data generation.

Two sources give the same `SymbolicImage`s:
- a JSONL of `{"id", "image", "captions": [...], "instances": [{"category", "bbox": [x1, y1, x2, y2]}]}` records, the
  format LLaVA released (`caps_boxes_coco2014_val_80.jsonl`), boxes already normalised to [0, 1];
- COCO annotation files (`captions_*.json` and, optionally, `instances_*.json`); COCO boxes `[x, y, width, height]` in
  pixels become `[x1, y1, x2, y2]` divided by the image size and rounded to 3 decimals, as in the paper.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class SymbolicImage:
    """One image as text: `id` (stable, used in output ids), `image` (path written to the output as given), its
    captions, and its objects `{"category": str, "bbox": [x1, y1, x2, y2]}` with coordinates in [0, 1]."""

    id: str
    image: str
    captions: list[str]
    instances: list[dict] = field(default_factory=list)


def read_jsonl_images(path: str | Path) -> list[SymbolicImage]:
    """Read a JSONL of symbolic images; a bad line raises ValueError naming the file, the line and the missing key."""
    images = []
    with open(path, encoding="utf-8") as file:
        for line_number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                image = SymbolicImage(
                    id=str(record["id"]),
                    image=str(record["image"]),
                    captions=[str(caption).strip() for caption in record["captions"]],
                    instances=[
                        {"category": str(instance["category"]), "bbox": [float(v) for v in instance["bbox"]]}
                        for instance in record.get("instances", [])
                    ],
                )
            except (ValueError, KeyError, TypeError) as error:
                raise ValueError(
                    f"{path}:{line_number} is not a symbolic image record ({error!r}); each line must be "
                    '{"id", "image", "captions": [...], "instances": [{"category", "bbox": [x1, y1, x2, y2]}]}'
                ) from None
            images.append(image)
    return images


def read_coco_images(captions_path: str | Path, instances_path: str | Path | None = None) -> list[SymbolicImage]:
    """Join COCO captions and (optionally) instances by image id, in the order of the captions file's `images`.

    Images without any caption are skipped. `id` is the COCO image id zero-padded to 12 digits (as in COCO file
    names); `image` is the file name from the annotation file.
    """
    captions_data = json.loads(Path(captions_path).read_text(encoding="utf-8"))
    captions_by_image = defaultdict(list)
    for annotation in captions_data["annotations"]:
        captions_by_image[annotation["image_id"]].append(annotation["caption"].strip())

    instances_by_image = defaultdict(list)
    if instances_path is not None:
        instances_data = json.loads(Path(instances_path).read_text(encoding="utf-8"))
        category_names = {category["id"]: category["name"] for category in instances_data["categories"]}
        sizes = {image["id"]: (image["width"], image["height"]) for image in instances_data["images"]}
        for annotation in instances_data["annotations"]:
            width, height = sizes[annotation["image_id"]]
            x, y, box_width, box_height = annotation["bbox"]
            box = [x / width, y / height, (x + box_width) / width, (y + box_height) / height]
            instances_by_image[annotation["image_id"]].append(
                {
                    "category": category_names[annotation["category_id"]],
                    "bbox": [round(min(max(value, 0.0), 1.0), 3) for value in box],
                }
            )

    images = []
    for image in captions_data["images"]:
        if not captions_by_image[image["id"]]:
            continue
        images.append(
            SymbolicImage(
                id=f"{image['id']:012d}",
                image=image["file_name"],
                captions=captions_by_image[image["id"]],
                instances=instances_by_image[image["id"]],
            )
        )
    return images


def select_images(images: list[SymbolicImage], limit: int | None, sample_seed: int | None) -> list[SymbolicImage]:
    """The first `limit` images, or with `sample_seed` a random sample of `limit` (same seed -> same sample, kept in
    input order so outputs stay in input order). Duplicate ids raise, since output ids and resume keys build on them."""
    seen = set()
    for image in images:
        if image.id in seen:
            raise ValueError(f"image id {image.id!r} appears twice in the input; ids must be unique")
        seen.add(image.id)
    if limit is None or limit >= len(images):
        return list(images)
    if sample_seed is None:
        return list(images[:limit])
    chosen = set(random.Random(sample_seed).sample(range(len(images)), limit))
    return [image for index, image in enumerate(images) if index in chosen]

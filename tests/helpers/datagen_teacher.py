"""For the datagen tests and benchmark: the 80 released COCO symbolic images (the scripted teacher for the test server
is `llava_hf.testing.TeacherScript`)."""

import functools
from pathlib import Path

from llava_hf.datagen.inputs import read_jsonl_images

CAPS_BOXES = Path(__file__).parents[1] / "assets" / "datagen" / "caps_boxes_coco2014_val_80.jsonl"


@functools.cache
def load_coco_images() -> tuple:
    """The 80 images of `caps_boxes_coco2014_val_80.jsonl` (read once; treat as read-only)."""
    return tuple(read_jsonl_images(CAPS_BOXES))

"""For the datagen tests and benchmark: the 80 released COCO symbolic images and a scripted teacher for the test server.

Plain functions, not fixtures in a `tests/datagen/conftest.py`: a second `conftest` module would shadow the root one
that other test folders import as `from conftest import ...`."""

import functools
import threading
from pathlib import Path

from helpers.openai_server import Reply
from llava_hf.datagen.inputs import read_jsonl_images
from llava_hf.datagen.prompts import TASK_TYPES, TYPES_WITH_BOXES, format_context, load_prompt_set

CAPS_BOXES = Path(__file__).parents[1] / "assets" / "datagen" / "caps_boxes_coco2014_val_80.jsonl"

VALID_OUTPUTS = {
    "conversation": "Question:\nWhat is in the picture?\n===\nAnswer:\nA busy scene.\n===\n"
    "Question:\nIs it daytime?\n===\nAnswer:\nYes, it looks like daytime.\n===",
    "detail": "The picture shows a scene with several objects arranged around the frame.",
    "complex": "Question:\nWhat might happen next?\n===\nAnswer:\nThe people will probably keep going.\n===",
}


class TeacherScript:
    """A server `responder`: finds which (image id, type) a request is for and answers with a valid output, or with
    the replies queued in `overrides[(image id, type)]` first (for injected leaks, truncations, ...)."""

    def __init__(self, images):
        prompts = load_prompt_set()
        self.type_of_system = {template.system: name for name, template in prompts.templates.items()}
        self.id_of_context = {
            (task_type, format_context(image, TYPES_WITH_BOXES[task_type])): image.id
            for image in images
            for task_type in TASK_TYPES
        }
        self.overrides: dict[tuple[str, str], list[Reply]] = {}
        self.jobs_requested: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def job_of(self, body: dict) -> tuple[str, str]:
        messages = body["messages"]
        task_type = self.type_of_system[messages[0]["content"]]
        return self.id_of_context[(task_type, messages[-1]["content"])], task_type

    def __call__(self, body: dict) -> Reply:
        job = self.job_of(body)
        with self._lock:
            self.jobs_requested.append(job)
            queued = self.overrides.get(job)
            if queued:
                return queued.pop(0)
        return Reply(text=VALID_OUTPUTS[job[1]], prompt_tokens=100)


@functools.cache
def load_coco_images() -> tuple:
    """The 80 images of `caps_boxes_coco2014_val_80.jsonl` (read once; treat as read-only)."""
    return tuple(read_jsonl_images(CAPS_BOXES))

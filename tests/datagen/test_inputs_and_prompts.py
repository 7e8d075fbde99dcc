"""Inputs (released JSONL, COCO annotation files, --limit/sampling) and the messages built from the prompt files."""

import json

import pytest

from helpers.datagen_teacher import CAPS_BOXES, load_coco_images
from llava_hf.datagen.inputs import SymbolicImage, read_coco_images, read_jsonl_images, select_images
from llava_hf.datagen.prompts import TASK_TYPES, build_messages, format_context, load_prompt_set, stable_choice


def test_reads_the_released_jsonl():
    coco_images = load_coco_images()
    assert len(coco_images) == 80
    first = coco_images[0]
    assert (first.id, first.image, len(first.captions)) == ("000000296284", "000000296284.jpg", 5)
    assert first.instances[0] == {"category": "donut", "bbox": [0.37, 0.584, 0.504, 0.709]}


def test_context_matches_the_paper_format():
    coco_images = load_coco_images()
    """Captions one per line; with boxes a blank line and `category: [x1, y1, x2, y2]`, as in the released files."""
    source = json.loads(CAPS_BOXES.read_text().splitlines()[0])
    context = format_context(coco_images[0], with_boxes=True)
    lines = context.split("\n")
    assert lines[:5] == source["captions"] and lines[5] == ""
    assert lines[6] == "donut: [0.37, 0.584, 0.504, 0.709]"
    assert len(lines) == 6 + len(source["instances"])
    assert format_context(coco_images[0], with_boxes=False) == "\n".join(source["captions"])


def test_reads_coco_annotation_files(tmp_path):
    images = [{"id": 42, "file_name": "000000000042.jpg", "width": 640, "height": 480}]
    images.append({"id": 7, "file_name": "000000000007.jpg", "width": 100, "height": 100})  # no caption: skipped
    captions = {"images": images, "annotations": [{"image_id": 42, "caption": " A cat. "}]}
    instances = {
        "images": images,
        "categories": [{"id": 17, "name": "cat"}],
        "annotations": [{"image_id": 42, "category_id": 17, "bbox": [64.0, 48.0, 320.0, 240.0]}],
    }
    (tmp_path / "captions.json").write_text(json.dumps(captions))
    (tmp_path / "instances.json").write_text(json.dumps(instances))
    result = read_coco_images(tmp_path / "captions.json", tmp_path / "instances.json")
    assert result == [
        SymbolicImage(
            "000000000042", "000000000042.jpg", ["A cat."], [{"category": "cat", "bbox": [0.1, 0.1, 0.6, 0.6]}]
        )
    ]
    assert read_coco_images(tmp_path / "captions.json")[0].instances == []


def test_bad_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "1", "image": "1.jpg", "captions": ["x"]}\n{"id": "2", "captions": []}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2 .*'image'"):
        read_jsonl_images(path)


def test_limit_and_seeded_sample():
    coco_images = load_coco_images()
    assert [i.id for i in select_images(coco_images, 3, None)] == [i.id for i in coco_images[:3]]
    sample = select_images(coco_images, 5, sample_seed=1)
    assert sample == select_images(coco_images, 5, sample_seed=1) != select_images(coco_images, 5, sample_seed=2)
    order = [image.id for image in coco_images]
    assert [order.index(i.id) for i in sample] == sorted(order.index(i.id) for i in sample)  # input order kept
    with pytest.raises(ValueError, match="appears twice"):
        select_images(coco_images[:2] + coco_images[:1], None, None)


def test_prompt_files_load_and_build_few_shot_messages():
    coco_images = load_coco_images()
    prompts = load_prompt_set()
    for task_type in TASK_TYPES:
        template = prompts.templates[task_type]
        messages = build_messages(template, coco_images[0])
        assert messages[0] == {"role": "system", "content": template.system}
        assert [m["role"] for m in messages[1:]] == ["user", "assistant"] * len(template.examples) + ["user"]
        assert ("donut: [" in messages[-1]["content"]) == (task_type != "conversation")
    assert prompts.version("detail") == "detail@1+instructions@1"
    assert len(prompts.brief_instructions) >= 5 and len(prompts.detailed_instructions) >= 5


def test_few_shot_examples_pass_our_own_validation():
    """The examples teach the output format, so they must be outputs the parser accepts."""
    from llava_hf.datagen.parsing import parse_output

    prompts = load_prompt_set()
    for task_type, template in prompts.templates.items():
        for _, output in template.examples:
            assert parse_output(task_type, output, "stop", "Describe.")[1] is None, (task_type, output[:40])


def test_prompts_dir_override_and_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="copy it from"):
        load_prompt_set(tmp_path)


def test_stable_choice_is_stable():
    items = ["a", "b", "c", "d"]
    assert stable_choice(items, 0, "x") == stable_choice(items, 0, "x")
    assert len({stable_choice(items, 0, str(n)) for n in range(50)}) == 4

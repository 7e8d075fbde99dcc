"""LLaVA JSON, TRL rows and the_cauldron rows all load into the one row schema, with lazily opened images; an
original JSON + image folder converts into a Hub-ready parquet folder with the images embedded."""

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset, Features, Image, List, Value, load_dataset
from PIL import Image as PILImage

from helpers.processes import run_to_exit
from llava_hf.data import convert_llava_json, load_llava_json, load_rows, to_conversation
from llava_hf.testing import make_image


def write_llava_json(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "images"
    (folder / "coco" / "train2017").mkdir(parents=True)
    make_image(0).save(folder / "coco" / "train2017" / "a.jpg")
    make_image(1, size=(30, 20)).save(folder / "coco" / "train2017" / "b.png")
    records = [
        {  # <image> at the end of the turn: removed, the image put at the front
            "id": "img-1",
            "image": "coco/train2017/a.jpg",
            "conversations": [
                {"from": "human", "value": "What is this? <image>\n"},
                {"from": "gpt", "value": "A noise pattern."},
                {"from": "human", "value": "Sure?"},
                {"from": "gpt", "value": "Yes."},
            ],
        },
        {  # a leading gpt turn is dropped, as in the original preprocessing
            "id": "img-2",
            "image": "coco/train2017/b.png",
            "conversations": [
                {"from": "gpt", "value": "orphan answer"},
                {"from": "human", "value": "<image>\nDescribe."},
                {"from": "gpt", "value": "Small."},
            ],
        },
        {"id": "text-1", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]},
    ]
    path = tmp_path / "llava.json"
    path.write_text(json.dumps(records))
    return path, folder


def test_llava_json_normalisation_and_lazy_images(tmp_path):
    json_path, folder = write_llava_json(tmp_path)
    dataset = load_llava_json(json_path, folder)
    assert dataset.column_names == ["id", "images", "messages"]
    first = dataset[0]
    assert isinstance(first["images"][0], PILImage.Image) and first["images"][0].size == (40, 48)
    assert to_conversation(first) == [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A noise pattern."}]},
        {"role": "user", "content": [{"type": "text", "text": "Sure?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Yes."}]},
    ]
    second = to_conversation(dataset[1])
    assert second[0] == {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]}
    assert len(second) == 2
    assert dataset[2]["images"] == [] and dataset[2]["messages"][0]["role"] == "user"
    # Lazy: the Arrow table stores paths, not pixels.
    raw = dataset.cast_column("images", List(Image(decode=False)))
    assert raw[0]["images"][0] == {"bytes": None, "path": str(folder / "coco/train2017/a.jpg")}


def test_llava_json_errors_name_the_record(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"id": "r7", "image": "x.jpg", "conversations": []}]))
    with pytest.raises(ValueError, match="r7.*no image folder"):
        load_llava_json(path)
    path.write_text(json.dumps([{"id": "r8", "conversations": [{"from": "bot", "value": "x"}]}]))
    with pytest.raises(ValueError, match="r8.*'bot'"):
        load_llava_json(path)


def test_llava_rows_from_parquet_are_the_json_rows_written_to_arrow(tmp_path):
    """LLaVA records stored as parquet (or a Hub dataset) load like the JSON file: the same rows, converted batch by
    batch into a cached Arrow file that is memory-mapped, not held as Python objects."""
    json_path, folder = write_llava_json(tmp_path)
    Dataset.from_list(json.loads(json_path.read_text())).to_parquet(str(tmp_path / "llava.parquet"))
    rows = load_rows(tmp_path / "llava.parquet", folder)
    assert rows.cache_files and all(Path(entry["filename"]).is_file() for entry in rows.cache_files)
    assert rows.data.table.equals(load_llava_json(json_path, folder).data.table)


def test_trl_and_cauldron_rows_from_parquet(tmp_path):
    images = [make_image(3), make_image(4)]
    trl = Dataset.from_dict(
        {
            "messages": [
                [
                    {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "Colour?"}]},
                    {"role": "assistant", "content": [{"type": "text", "text": "Grey."}]},
                ]
            ],
            "images": [[images[0]]],
        },
        features=Features(
            {
                "messages": List(
                    {"role": Value("string"), "content": List({"type": Value("string"), "text": Value("string")})}
                ),
                "images": List(Image()),
            }
        ),
    )
    trl.to_parquet(str(tmp_path / "trl.parquet"))
    rows = load_rows(tmp_path / "trl.parquet")
    assert to_conversation(rows[0])[0]["content"] == [{"type": "image"}, {"type": "text", "text": "Colour?"}]
    assert np.array_equal(np.asarray(rows[0]["images"][0]), np.asarray(images[0]))

    cauldron = Dataset.from_dict(
        {
            "images": [images],
            "texts": [
                [
                    {"user": "Compare.", "assistant": "Both noise.", "source": "x"},
                    {"user": "And?", "assistant": "Done.", "source": "x"},
                ]
            ],
        },
        features=Features(
            {
                "images": List(Image()),
                "texts": List({"user": Value("string"), "assistant": Value("string"), "source": Value("string")}),
            }
        ),
    )
    (tmp_path / "cauldron").mkdir()
    cauldron.to_parquet(str(tmp_path / "cauldron" / "train.parquet"))
    rows = load_rows(tmp_path / "cauldron")
    conversation = to_conversation(rows[0])
    assert [m["role"] for m in conversation] == ["user", "assistant", "user", "assistant"]
    assert conversation[0]["content"] == [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Compare."}]
    assert len(rows[0]["images"]) == 2 and rows[0]["id"] == "0"


def test_convert_llava_json_embeds_images_and_reloads(tmp_path):
    json_path, folder = write_llava_json(tmp_path)
    output = convert_llava_json(json_path, folder, tmp_path / "hub_ready", max_shard_rows=2)
    assert sorted(p.name for p in (output / "data").iterdir()) == [
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
    ]
    # Images are embedded: the reload works with the image folder gone.
    os.rename(folder, tmp_path / "moved")
    reloaded = load_rows(output)
    original = load_llava_json(json_path, tmp_path / "moved")
    assert len(reloaded) == 3 and reloaded["id"] == ["img-1", "img-2", "text-1"]
    for new, old in zip(reloaded, original):
        assert to_conversation(new) == to_conversation(old)
        assert [np.asarray(image).tolist() for image in new["images"]] == [
            np.asarray(image).tolist() for image in old["images"]
        ]
    raw = reloaded.cast_column("images", List(Image(decode=False)))
    assert raw[0]["images"][0]["path"] == "coco/train2017/a.jpg" and raw[0]["images"][0]["bytes"]

    with pytest.raises(FileExistsError, match="already exists"):
        convert_llava_json(json_path, tmp_path / "moved", output)


def test_a_reconverted_folder_and_a_namesake_load_their_own_rows(tmp_path):
    """The consumer's `datasets.load_dataset(folder)` and `load_rows` read the rows the folder holds now, not those
    of an earlier folder of the same name or an earlier conversion into the same path (all in one datasets cache)."""
    json_path, folder = write_llava_json(tmp_path)
    first = convert_llava_json(json_path, folder, tmp_path / "one" / "converted")
    assert load_dataset(str(first), split="train")["id"] == ["img-1", "img-2", "text-1"]
    records = json.loads(json_path.read_text())
    fewer = tmp_path / "fewer.json"
    fewer.write_text(json.dumps(records[2:]))
    namesake = convert_llava_json(fewer, folder, tmp_path / "two" / "converted")
    assert load_dataset(str(namesake), split="train")["id"] == ["text-1"] and load_rows(namesake)["id"] == ["text-1"]
    shutil.rmtree(first)
    convert_llava_json(fewer, folder, first)
    assert load_dataset(str(first), split="train")["id"] == ["text-1"] and load_rows(first)["id"] == ["text-1"]


def test_load_rows_reads_a_folder_with_a_configs_card_as_it_is_now(tmp_path):
    """A folder whose card declares `configs` (as Hub datasets' do): `load_rows` reads each subset's current rows,
    after another folder of the same name was read and after the folder changed in place (one datasets cache)."""
    card = "---\nconfigs:\n" + "".join(
        f"- config_name: {name}\n  data_files:\n  - split: train\n    path: {name}/train-*.parquet\n" for name in "ab"
    )

    def write(folder, ids):
        shutil.rmtree(folder, ignore_errors=True)
        for name in "ab":
            (folder / name).mkdir(parents=True)
            messages = [
                [
                    {"role": "user", "content": [{"type": "text", "text": "Which?"}]},
                    {"role": "assistant", "content": [{"type": "text", "text": f"{name}{i}"}]},
                ]
                for i in ids
            ]
            Dataset.from_dict({"messages": messages}).to_parquet(str(folder / name / "train-00000-of-00001.parquet"))
        (folder / "README.md").write_text(card + "---\n")

    def answers(folder, subset):
        return [row["messages"][1]["content"][0]["text"] for row in load_rows(folder, subset=subset)]

    first, namesake = tmp_path / "one" / "data", tmp_path / "two" / "data"
    write(first, ["1", "2"])
    assert answers(first, "a") == ["a1", "a2"] and answers(first, "b") == ["b1", "b2"]
    write(namesake, ["3"])
    assert answers(namesake, "a") == ["a3"]
    write(first, ["4", "5", "6"])
    assert answers(first, "a") == ["a4", "a5", "a6"] and answers(first, "b") == ["b4", "b5", "b6"]


def test_convert_refuses_missing_images_and_leaves_nothing_behind(tmp_path):
    json_path, folder = write_llava_json(tmp_path)
    (folder / "coco" / "train2017" / "b.png").unlink()
    with pytest.raises(FileNotFoundError, match="1 image.*img-2"):
        convert_llava_json(json_path, folder, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "llava.json"]


def test_data_convert_command(tmp_path, capsys):
    from llava_hf.cli import main as cli_main

    json_path, folder = write_llava_json(tmp_path)
    output = tmp_path / "converted"
    status = cli_main(
        ["data", "convert", "--json_path", str(json_path), "--image_folder", str(folder), "--output_dir", str(output)]
    )
    assert status == 0 and f"wrote {output}" in capsys.readouterr().out
    assert load_rows(output)["id"] == ["img-1", "img-2", "text-1"]


def test_converted_dataset_card_snippet_loads_pil_images_without_llava_hf(tmp_path):
    json_path, folder = write_llava_json(tmp_path)
    output = convert_llava_json(json_path, folder, tmp_path / "hub_ready")
    card = (output / "README.md").read_text()
    snippet = card.split("```python\n", 1)[1].split("```", 1)[0]
    assert 'load_dataset("hub_ready", split="train")' in snippet
    # As a consumer runs it: a fresh interpreter, the folder's name as the dataset id (cwd = its parent).
    check = (
        "\nimport sys\nfrom PIL import Image\n"
        "assert 'llava_hf' not in sys.modules\n"
        "assert isinstance(row['images'][0], Image.Image) and row['images'][0].size == (40, 48)\n"
        "assert row['messages'][0]['content'][0]['type'] == 'image'\n"
        "print('decoded', type(row['images'][0]).__module__)\n"
    )
    result = run_to_exit(
        [sys.executable, "-c", snippet + check],
        cwd=tmp_path,
        env={**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "consumer_cache")},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "decoded PIL." in result.stdout
    # Decodable in the stored schema (PIL on access, as TRL's and the_cauldron's datasets), not only after our cast.
    assert load_dataset(str(output), split="train").features["images"] == List(Image())

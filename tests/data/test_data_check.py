"""The preflight check finds every kind of bad row, prints a table with the first offending ids, refuses to train on
errors unless told to skip them, and then says how many it skipped and why."""

import json
import logging
import sys

import pytest

from helpers.processes import run_to_exit
from llava_hf.cli import main as cli_main
from llava_hf.data import load_llava_json
from llava_hf.data.check import DataCheckError, check_rows, preflight
from llava_hf.testing import TINY_IMAGE_TOKENS, make_image, make_tiny_processor


def human(value):
    return {"from": "human", "value": value}


def gpt(value):
    return {"from": "gpt", "value": value}


def write_dataset(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    make_image(0).save(folder / "ok.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg at all")
    records = [
        {"id": "good-1", "image": "ok.png", "conversations": [human("<image>\nWhat?"), gpt("Noise.")]},
        {"id": "good-text", "conversations": [human("Hi"), gpt("Hello.")]},
        {"id": "missing", "image": "nope.png", "conversations": [human("<image>\nWhat?"), gpt("Noise.")]},
        {"id": "broken", "image": "broken.jpg", "conversations": [human("<image>\nWhat?"), gpt("Noise.")]},
        {"id": "no-placeholder", "image": "ok.png", "conversations": [human("What?"), gpt("Noise.")]},
        {"id": "no-image", "conversations": [human("<image>\nWhat?"), gpt("Noise.")]},
        {"id": "two-humans", "conversations": [human("a"), human("b"), gpt("c")]},
        {"id": "no-answer", "conversations": [human("a")]},
        {"id": "empty-answer", "conversations": [human("a"), gpt("  ")]},
        {"id": "long", "image": "ok.png", "conversations": [human("<image>\n" + "word " * 60), gpt("x")]},
        # two tags, one image: the original LLaVA merges them silently; we report it
        {"id": "two-tags", "image": "ok.png", "conversations": [human("<image>\nWhat? <image>"), gpt("Noise.")]},
    ]
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records))
    return path, folder


def test_every_problem_is_found_and_named(tmp_path):
    path, folder = write_dataset(tmp_path)
    dataset = load_llava_json(path, folder)
    report = check_rows(dataset, make_tiny_processor(), max_length=64 + TINY_IMAGE_TOKENS)
    named = {problem: [report.ids[index] for index in indices] for problem, indices in report.problems.items()}
    assert named == {
        "missing_image": ["missing"],
        "unreadable_image": ["broken"],
        "image_count_mismatch": ["no-placeholder", "no-image", "two-tags"],
        "role_order": ["two-humans", "no-answer"],
        "empty_answer": ["empty-answer"],
        "too_long": ["long"],
    }
    assert report.bad_rows == set(range(2, 11)) and not report.ok
    table = report.table()
    assert "checked 11 rows: 2 ok, 9 bad" in table
    assert "image_count_mismatch" in table and "[no-placeholder, no-image, two-tags]" in table


def test_without_processor_the_skipped_checks_are_reported(tmp_path):
    path, folder = write_dataset(tmp_path)
    report = check_rows(load_llava_json(path, folder), image_check="none")
    assert "missing_image" not in report.problems and "too_long" not in report.problems
    assert "not checked: too_long and unmaskable" in report.table()
    assert "images: images not checked" in report.table()


def test_preflight_refuses_or_skips_loudly(tmp_path, caplog):
    path, folder = write_dataset(tmp_path)
    dataset = load_llava_json(path, folder, cache_dir=tmp_path / "cache")
    processor = make_tiny_processor()
    with pytest.raises(DataCheckError, match="(?s)9 bad.*skip_bad_rows"):
        preflight(dataset, processor, max_length=64 + TINY_IMAGE_TOKENS, cache_dir=tmp_path / "cache")
    with caplog.at_level(logging.WARNING, logger="llava_hf.data.check"):
        kept = preflight(
            dataset, processor, max_length=64 + TINY_IMAGE_TOKENS, skip_bad_rows=True, cache_dir=tmp_path / "cache"
        )
    assert kept.cached  # the refused run above checked and cached the same rows and settings
    assert kept.dataset["id"] == ["good-1", "good-text"]
    assert "skipping 9 of 11 rows" in caplog.text and "unreadable_image" in caplog.text
    again = preflight(kept.dataset, processor, cache_dir=tmp_path / "cache")
    assert again.dataset is kept.dataset and not again.cached  # other rows, other settings: checked anew
    assert again.lengths == kept.lengths and again.has_image == [True, False]


def test_data_check_command(tmp_path, capsys):
    path, folder = write_dataset(tmp_path)
    processor_dir = tmp_path / "processor"
    make_tiny_processor().save_pretrained(processor_dir)
    status = cli_main(
        [
            "data",
            "check",
            "--source",
            str(path),
            "--image_folder",
            str(folder),
            "--processor",
            str(processor_dir),
            "--max_length",
            "80",
        ]
    )
    out = capsys.readouterr().out
    assert status == 1 and "checked 11 rows: 2 ok, 9 bad" in out and "[long]" in out
    clean = tmp_path / "clean.json"
    clean.write_text(json.dumps(json.loads(path.read_text())[:2]))
    # The installed console script, in a real subprocess (waited for, its process group killed if the test stops).
    command = [sys.executable, "-m", "llava_hf.cli", "data", "check", "--source", str(clean)]
    result = run_to_exit(command + ["--image_folder", str(folder)])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "checked 2 rows: 2 ok, 0 bad" in result.stdout


@pytest.mark.parametrize(
    "bad, expected",
    [
        (b"\xff\xfe", "has the byte 0xff, which is not UTF-8, in `conversations\\[0\\].value` after 'caf\u00e9 '"),
        (b"\\ud800", "has a lone surrogate \\\\ud800 in `conversations\\[0\\].value`"),
    ],
    ids=["invalid-utf8", "lone-surrogate"],
)
@pytest.mark.parametrize("layout", ["json", "jsonl"])
def test_bad_text_encoding_names_the_sample_and_line(tmp_path, capsys, bad, expected, layout):
    records = [
        {"id": "fine", "conversations": [human("Hi"), gpt("Hello.")]},
        {"id": "sample-17", "conversations": [human("caf\u00e9 BAD"), gpt("Hello.")]},
    ]
    if layout == "json":
        text, line = json.dumps(records, indent=1, ensure_ascii=False), 15
    else:
        text, line = "\n".join(json.dumps(record, ensure_ascii=False) for record in records) + "\n", 2
    path = tmp_path / f"data.{layout}"
    path.write_bytes(text.encode().replace(b"BAD", bad))
    with pytest.raises(ValueError, match=f"record 1 \\(id 'sample-17', line {line}\\) {expected}"):
        load_llava_json(path)
    # the command says the same in one line, with the exit status of bad input
    assert cli_main(["data", "check", "--source", str(path)]) == 2
    error = capsys.readouterr().err
    assert "sample-17" in error and error.count("\n") == 1

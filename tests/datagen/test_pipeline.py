"""The generation run end to end against the real local server: outputs, metadata, rejects and retries, budget stop
and resume, request failures, torn journal lines, settings checks, the CLI, and no model imports."""

import ast
import json
from collections import Counter
from pathlib import Path

import pytest

from helpers.datagen_teacher import CAPS_BOXES, load_coco_images
from llava_hf.datagen import generate_data_command as cli
from llava_hf.datagen.pipeline import GenerateDataArguments, run_generation
from llava_hf.datagen.prompts import load_prompt_set
from llava_hf.testing import VALID_OUTPUTS, OpenAIServer, Reply, TeacherScript


def openai_config(server, output_dir, **overrides):
    settings = {"input": str(CAPS_BOXES), "teacher": "openai", "teacher_base_url": server.base_url}
    settings["teacher_model"] = "teacher-x"
    settings.update(concurrency=4, max_retries=2, timeout=120.0, limit=6)  # no retry because of load
    return GenerateDataArguments(output_dir=str(output_dir), **{**settings, **overrides})


def read_output(output_dir, name):
    text = (Path(output_dir) / name).read_text()
    return json.loads(text) if name.endswith(".json") else [json.loads(line) for line in text.splitlines()]


def test_end_to_end_with_rejects_retries_and_http_failures(tmp_path):
    coco_images = load_coco_images()
    teacher_script = TeacherScript(coco_images)
    ids = [image.id for image in coco_images[:6]]
    teacher_script.overrides = {
        (ids[0], "conversation"): [Reply(text="Question:\nWhat do the captions say?\n===\nAnswer:\nA dog.\n===")],
        (ids[1], "detail"): [Reply(text="A long description that got cut", finish_reason="length")],
        (ids[2], "complex"): [Reply(text=VALID_OUTPUTS["conversation"])] * 3,  # two pairs, every time: gives up
        (ids[3], "detail"): [Reply(text="A donut at [0.37, 0.584, 0.504, 0.709]."), Reply(text="")],
        (ids[4], "conversation"): [Reply(text="The bounding box shows a cat.")],
    }
    script = [Reply(status=429, headers={"Retry-After": "0"}), Reply(status=500, headers={"Retry-After": "0"})]
    with OpenAIServer(script=script, responder=teacher_script) as server:
        summary = run_generation(openai_config(server, tmp_path, temperature=0.3), progress=False)

    assert summary["records"] == {"conversation": 6, "detail": 6, "complex": 5}
    assert summary["rejects"] == {
        "leak_caption": 1,
        "truncated": 1,
        "malformed": 3,
        "leak_coordinates": 1,
        "empty": 1,
        "leak_bounding_box": 1,
    }
    assert summary["gave_up"] == 1 and summary["pending"] == 0 and summary["failed_requests_this_run"] == 0
    assert server.request_count == 17 + 8 + 2  # accepted outputs + rejected outputs + the two HTTP errors retried
    assert summary["tokens"]["prompt"] == 100 * 17 + 10 * 8  # usage as the server reported it

    records = read_output(tmp_path, "llava_instruct.json")
    assert [r["id"] for r in records[:3]] == [f"{ids[0]}_conversation", f"{ids[0]}_detail", f"{ids[0]}_complex"]
    assert len({r["id"] for r in records}) == len(records) == 17
    prompts = load_prompt_set()
    for record in records:
        turns = record["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
        assert turns[0]["value"].startswith("<image>\n") and record["image"].endswith(".jpg")
        generation = record["generation"]
        assert generation["teacher_kind"] == "llm" and generation["teacher_model"] == "teacher-x"
        assert json.loads(generation["sampling"]) == {"temperature": 0.3, "max_tokens": 1024}
        assert generation["prompt_version"] == prompts.version(generation["type"])
        if generation["type"] == "detail":
            assert turns[0]["value"].removeprefix("<image>\n") in prompts.detailed_instructions
    assert next(r for r in records if r["id"] == f"{ids[0]}_conversation")["generation"]["attempt"] == 1

    rejects = read_output(tmp_path, "rejects.jsonl")
    assert Counter(r["reason"] for r in rejects) == Counter(summary["rejects"])
    assert all(r["text"] is not None and r["key"].count("/") == 2 for r in rejects)
    captions = read_output(tmp_path, "llava_caption.json")
    assert len(captions) == 6 and captions[0]["conversations"][1]["value"] in coco_images[0].captions
    assert captions[0]["conversations"][0]["value"].removeprefix("<image>\n") in prompts.brief_instructions


def test_budget_stops_cleanly_and_resume_sends_nothing_twice(tmp_path):
    coco_images = load_coco_images()
    teacher_script = TeacherScript(coco_images)
    with OpenAIServer(responder=teacher_script) as server:
        summary = run_generation(openai_config(server, tmp_path, max_total_tokens=1000), progress=False)
        assert summary["stopped_by_budget"] and summary["pending"] > 0
        first_run = len(teacher_script.jobs_requested)
        # Each request costs ~110 tokens: dispatch stops at the budget, in-flight requests (<= concurrency) finish.
        assert 1000 / 110 <= first_run <= 1000 / 110 + 4
        summary = run_generation(openai_config(server, tmp_path), progress=False)
    assert not summary["stopped_by_budget"] and summary["pending"] == 0
    assert summary["records"] == {"conversation": 6, "detail": 6, "complex": 6}
    assert summary["requests_this_run"] == 18 - first_run
    assert len(teacher_script.jobs_requested) == len(set(teacher_script.jobs_requested)) == 18
    journal = read_output(tmp_path, "journal.jsonl")
    assert len(journal) == len({entry["key"] for entry in journal}) == 18


def test_failed_requests_are_not_journaled_and_retried_on_rerun(tmp_path, capsys):
    coco_images = load_coco_images()
    teacher_script = TeacherScript(coco_images)
    broken = (coco_images[1].id, "complex")
    teacher_script.overrides[broken] = [Reply(status=500, headers={"Retry-After": "0"})] * 3
    with OpenAIServer(responder=teacher_script) as server:
        argv = ["--input", str(CAPS_BOXES), "--output-dir", str(tmp_path), "--teacher-base-url", server.base_url]
        argv += ["--teacher-model", "teacher-x", "--limit", "3", "--max-retries", "2"]
        assert cli.main(argv) == 1
        assert "re-run the same command" in capsys.readouterr().out
        assert all(
            entry["type"] != "complex" or entry["id"] != broken[0] for entry in read_output(tmp_path, "journal.jsonl")
        )
        assert cli.main(argv) == 0
    assert 'records: {"conversation": 3, "detail": 3, "complex": 3}' in capsys.readouterr().out
    assert teacher_script.jobs_requested.count(broken) == 4  # 3 failed tries, then 1 on the re-run


def test_torn_last_journal_line_is_dropped(tmp_path):
    config = GenerateDataArguments(output_dir=str(tmp_path), input=str(CAPS_BOXES), teacher="rule-based", limit=4)
    run_generation(config, progress=False)
    journal = tmp_path / "journal.jsonl"
    lines = journal.read_text().splitlines(keepends=True)
    journal.write_text("".join(lines[:-1]) + lines[-1][:25])  # the last request's line, torn mid-write
    summary = run_generation(config, progress=False)
    assert summary["requests_this_run"] == 1  # only the torn one is done again
    assert journal.read_text().splitlines(keepends=True)[:-1] == lines[:-1]
    assert [json.loads(line)["key"] for line in journal.read_text().splitlines()] == [
        json.loads(line)["key"] for line in lines
    ]
    journal.write_text(lines[0] + "{not json\n" + "".join(lines[1:]))
    with pytest.raises(ValueError, match=r"journal.jsonl:2 is not valid JSON.*remove that line"):
        run_generation(config, progress=False)


def test_refuses_to_mix_settings_in_one_folder(tmp_path):
    run_generation(GenerateDataArguments(str(tmp_path), input=str(CAPS_BOXES), teacher="rule-based", limit=1), False)
    other = GenerateDataArguments(
        str(tmp_path), input=str(CAPS_BOXES), teacher_base_url="http://127.0.0.1:9/v1", teacher_model="m"
    )
    with pytest.raises(ValueError, match="model, sampling, teacher_kind differ"):
        run_generation(other, progress=False)


def test_rule_based_cli_run_and_dataset(tmp_path, capsys):
    argv = ["--input", str(CAPS_BOXES), "--output-dir", str(tmp_path), "--teacher", "rule-based", "--limit", "5"]
    assert cli.main(argv + ["--save-dataset", "--types", "conversation", "detail"]) == 0
    out = capsys.readouterr().out
    assert "rule-based" in out and "stage-1 captions: 5" in out
    import datasets

    dataset = datasets.load_from_disk(str(tmp_path / "dataset"))
    assert len(dataset) == 10 and dataset[0]["generation"]["teacher_kind"] == "rule-based"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--output-dir", "x"], "exactly one input"),
        (
            ["--output-dir", "x", "--input", "a.jsonl"],
            "needs --teacher-base-url (e.g. https://api.openai.com/v1) and --teacher-model",
        ),
        (["--output-dir", "x", "--input", "a.jsonl", "--teacher", "rule-based", "--types", "chat"], "unknown types"),
    ],
)
def test_cli_argument_errors_name_the_fix(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_datagen_imports_no_model_code():
    package = Path(cli.__file__).parent
    for path in [*package.glob("*.py"), package.parent / "utils" / "endpoints.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            for name in names:
                assert name.split(".")[0] not in {"torch", "transformers"}, (path, name)
                assert not name.lstrip(".").startswith(("modeling", "processing", "llava_hf")), (path, name)

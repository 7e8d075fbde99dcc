"""The task interface end to end on the tiny model: batched left-padded greedy generation (equal to one at a time and
to transformers' built-in Llava), resumable predictions files, results files, the CLI and the model card."""

import json

import pytest

from helpers.evaluation_data import LLAVA_BENCH_WILD, POPE, SCIENCEQA
from llava_hf.evaluation import (
    Example,
    Task,
    add_results_to_model_card,
    evaluate,
    generate_predictions,
    llava_bench,
    pope,
    read_predictions,
    scienceqa,
)
from llava_hf.testing import OpenAIServer, Reply, make_image, make_tiny_model, make_tiny_processor


@pytest.fixture(scope="module")
def tiny():
    return make_tiny_model(), make_tiny_processor()


def texts(path):
    return {qid: record["text"] for qid, record in read_predictions(path).items()}


def counting_generate(model, monkeypatch):
    """Wrap model.generate to count the rows it generates."""
    rows = []
    original = model.generate

    def generate(**kwargs):
        rows.append(kwargs["input_ids"].shape[0])
        return original(**kwargs)

    monkeypatch.setattr(model, "generate", generate)
    return rows


def test_scienceqa_end_to_end_batched_equals_one_at_a_time(tmp_path, tiny, monkeypatch):
    model, processor = tiny
    task = scienceqa.build_task(SCIENCEQA, "test", max_new_tokens=4)  # 3 questions with images, 3 without
    rows = counting_generate(model, monkeypatch)
    results = evaluate(task, model, processor, output_dir=tmp_path / "batched", batch_size=4, progress=False)
    assert rows == [4, 2]
    assert results["num_answered"] == 6 and results["missing"] == []
    records = read_predictions(tmp_path / "batched" / "predictions.jsonl")
    # the tiny model's answers are random: each one is read as a valid letter or listed as unparseable, never lost
    unparseable = {item["question_id"] for item in results["unparseable"]}
    for example in task.examples:
        assert (task.parse(records[example.id]["text"], example) is None) == (example.id in unparseable)
    first = records["3"]
    assert first["prompt"].endswith("Answer with the option's letter from the given choices directly. ASSISTANT:")
    assert first["prompt"].count("<image>") == 1 and first["metadata"]["decoding"] == "greedy"
    assert (tmp_path / "batched" / "results.json").is_file() and (tmp_path / "batched" / "results.md").is_file()

    evaluate(task, model, processor, output_dir=tmp_path / "single", batch_size=1, progress=False)
    assert texts(tmp_path / "batched" / "predictions.jsonl") == texts(tmp_path / "single" / "predictions.jsonl")


def test_resume_skips_finished_ids_and_repairs_a_torn_line(tmp_path, tiny, monkeypatch):
    model, processor = tiny
    task = scienceqa.build_task(SCIENCEQA, "test", max_new_tokens=3)
    path = tmp_path / "predictions.jsonl"
    generate_predictions(task, model, processor, path, batch_size=3, progress=False)
    complete = texts(path)
    lines = path.read_text().splitlines(keepends=True)
    # a run killed after 3 answers, in the middle of writing the 4th
    path.write_text("".join(lines[:3]) + lines[3][:25])
    rows = counting_generate(model, monkeypatch)
    generate_predictions(task, model, processor, path, batch_size=8, progress=False)
    assert rows == [3]
    assert texts(path) == complete
    assert all(json.loads(line) for line in path.read_text().splitlines())  # every line is whole again
    generate_predictions(task, model, processor, path, progress=False)
    assert rows == [3]  # nothing left to do

    other_prompts = scienceqa.build_task(SCIENCEQA, "test", prompt_format="QCM-A")
    with pytest.raises(ValueError, match="different prompts"):
        generate_predictions(other_prompts, model, processor, path, progress=False)
    with pytest.raises(ValueError, match="another dataset or split"):
        generate_predictions(scienceqa.build_task(SCIENCEQA, "train"), model, processor, path, progress=False)


def test_builtin_llava_gives_the_same_predictions(tmp_path, tiny):
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    from llava_hf.processing import get_chat_template

    model, processor = tiny
    config = model.config
    builtin = LlavaForConditionalGeneration(
        LlavaConfig(
            vision_config=config.vision_config.to_dict(),
            text_config=config.text_config.to_dict(),
            image_token_index=config.image_token_id,
        )
    )
    builtin.load_state_dict(model.state_dict(), strict=True)
    builtin.eval()
    builtin_processor = LlavaProcessor(
        image_processor=processor.image_processor,
        tokenizer=processor.tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=get_chat_template("vicuna_v1"),
    )
    task = pope.build_task(POPE, image_folder=str(POPE / "images"), max_new_tokens=4)
    ours = generate_predictions(task, model, processor, tmp_path / "ours.jsonl", batch_size=4, progress=False)
    theirs = generate_predictions(
        task, builtin, builtin_processor, tmp_path / "theirs.jsonl", batch_size=4, progress=False
    )
    assert {k: r["text"] for k, r in ours.items()} == {k: r["text"] for k, r in theirs.items()}
    assert {k: r["prompt"] for k, r in ours.items()} == {k: r["prompt"] for k, r in theirs.items()}


def test_llava_bench_end_to_end_with_a_judge(tmp_path, tiny):
    model, processor = tiny
    with OpenAIServer(default=Reply(text="8 2\nthe second answer is noise")) as server:
        settings = llava_bench.JudgeArguments(base_url=server.base_url, model="judge")
        task = llava_bench.build_task(LLAVA_BENCH_WILD, settings, tmp_path / "judgments.jsonl", max_new_tokens=4)
        results = evaluate(task, model, processor, output_dir=tmp_path, batch_size=3, progress=False)
        assert server.request_count == 3
        # the candidate the judge saw is exactly what the model generated
        generated = texts(tmp_path / "predictions.jsonl")
        shown = {json.dumps(request["body"]["messages"]) for request in server.requests}
        assert all(any(json.dumps(text)[1:-1] in body for body in shown) for text in generated.values())
    assert results["metrics"]["overall"] == pytest.approx(25.0)


def test_in_memory_task_on_synthetic_images(tmp_path, tiny):
    """What a demo does: its own multiple-choice questions on generated images, from Python."""
    model, processor = tiny
    examples = [
        scienceqa.make_example(
            f"shape-{index}",
            {
                "question": "Which shape is shown?",
                "choices": ["circle", "square"],
                "answer": index % 2,
                "image": make_image(index),
                "subject": "natural science",
                "grade": "grade1",
            },
        )
        for index in range(3)
    ]
    task = Task(
        name="shapes",
        examples=examples,
        score=scienceqa.score,
        max_new_tokens=2,
        parse=lambda text, example: scienceqa.parse_choice(text, example.metadata["choices"]),
    )
    results = evaluate(task, model, processor, output_dir=tmp_path, progress=False)
    assert results["counts"]["IMG"]["total"] == 3 and results["num_answered"] == 3
    with pytest.raises(ValueError, match="occurs twice"):
        Task(name="dup", examples=[Example("a", "q"), Example("a", "q")], score=scienceqa.score)


def test_cli_generates_scores_and_fills_the_model_card(tmp_path, tiny):
    from huggingface_hub import ModelCard

    from llava_hf.cli import main

    model, processor = tiny
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    processor.save_pretrained(checkpoint)
    readme = checkpoint / "README.md"
    arguments = [
        "evaluate",
        "--task",
        "pope",
        "--model",
        str(checkpoint),
        "--data",
        str(POPE),
        "--image-folder",
        str(POPE / "images"),
        "--pope-splits",
        "popular",
        "random",
        "--output-dir",
        str(tmp_path / "out"),
        "--max-new-tokens",
        "3",
        "--batch-size",
        "5",
        "--no-progress",
        "--model-card",
        str(readme),
        "--model-name",
        "tiny-llava",
    ]
    assert main(arguments) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["num_answered"] == 5 and set(results["per_split"]) == {"popular", "random"}
    card = ModelCard.load(readme)
    entries = {(r.dataset_type, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert entries[("lmms-lab/POPE", "f1")] == pytest.approx(results["metrics"]["f1"])
    assert card.data.model_name == "tiny-llava"

    # re-scoring the same answers with no model gives the same numbers
    rescored = tmp_path / "rescored"
    assert (
        main(
            [
                "evaluate",
                "--task",
                "pope",
                "--predictions",
                str(tmp_path / "out" / "predictions.jsonl"),
                "--data",
                str(POPE),
                "--image-folder",
                str(POPE / "images"),
                "--pope-splits",
                "popular",
                "random",
                "--output-dir",
                str(rescored),
            ]
        )
        == 0
    )
    assert json.loads((rescored / "results.json").read_text())["metrics"] == results["metrics"]
    assert main(["evaluate", "--task", "pope", "--data", str(POPE), "--output-dir", str(tmp_path)]) == 2


def test_model_card_entries_are_replaced_not_duplicated(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("---\nlicense: apache-2.0\n---\n\n# My model\n\nSome text.\n")
    result = {
        "task": "scienceqa",
        "dataset": {"type": "derek-thomas/ScienceQA", "name": "ScienceQA", "split": "test"},
        "metrics": {"Avg": 50.0, "IMG": 40.0},
    }
    add_results_to_model_card(readme, result, "m")
    add_results_to_model_card(readme, {**result, "metrics": {"Avg": 60.0}}, "m")
    from huggingface_hub import ModelCard

    card = ModelCard.load(readme)
    values = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert values == {"Avg": 60.0, "IMG": 40.0} and len(card.data.eval_results) == 2
    assert card.data.license == "apache-2.0" and "Some text." in readme.read_text()


def test_cli_generates_one_prompt_at_a_time_on_cpu_unless_told(tmp_path, tiny, monkeypatch):
    """On CPU every prompt of a batch keeps its own KV cache in the memory the weights leave (0.3 GiB per prompt for
    a 7B), so the CLI's default batch there is 1; --batch-size still sets it."""
    from llava_hf.cli import main
    from llava_hf.evaluation import generation

    model, processor = tiny
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    processor.save_pretrained(checkpoint)
    batches = []
    original = generation.generate_answers

    def recording(model, processor, prompts, images, **kwargs):
        batches.append(len(prompts))
        return original(model, processor, prompts, images, **kwargs)

    monkeypatch.setattr(generation, "generate_answers", recording)
    arguments = ["evaluate", "--task", "pope", "--model", str(checkpoint), "--data", str(POPE), "--device", "cpu"]
    arguments += ["--pope-splits", "popular", "random", "--max-new-tokens", "2", "--no-progress"]
    assert main([*arguments, "--output-dir", str(tmp_path / "default")]) == 0
    assert batches == [1, 1, 1, 1, 1]
    batches.clear()
    assert main([*arguments, "--output-dir", str(tmp_path / "batched"), "--batch-size", "5"]) == 0
    assert batches == [5]

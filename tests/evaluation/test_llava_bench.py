"""LLaVA-Bench: layouts, the judge request, judgment parsing, retries, caching, relative scores, swapped order —
judged by a real OpenAI-compatible HTTP server on 127.0.0.1."""

import json
import re

import pytest

from helpers.evaluation_data import LLAVA_BENCH_COCO, LLAVA_BENCH_WILD, write_jsonl
from llava_hf.evaluation import evaluate, llava_bench, score_task
from llava_hf.evaluation.llava_bench import JudgeArguments
from llava_hf.testing import OpenAIServer, Reply, make_image
from llava_hf.utils.endpoints import EndpointArguments


@pytest.mark.parametrize(
    "text, scores",
    [
        ("8 6\nAssistant 1 is better.", (8.0, 6.0)),
        ("8, 6", (8.0, 6.0)),
        ("  7.5 10  \nreason", (7.5, 10.0)),
        ("8\n6", None),  # scores must share the first line
        ("Scores: 8 6", None),
        ("8 6 7", None),
        ("8/10 6/10", None),
        ("0 6", None),  # outside 1..10
        ("11 6", None),
        ("", None),
        ("-1 -1", None),  # the original's failure value is never a score
    ],
)
def test_parse_judgment(text, scores):
    assert llava_bench.parse_judgment(text) == scores


def test_coco_layout_and_context(tmp_path):
    questions = [json.loads(line) for line in (LLAVA_BENCH_COCO / "qa90_questions.jsonl").read_text().splitlines()]
    for index, name in enumerate(sorted({question["image"] for question in questions})):
        make_image(index, (20, 16)).save(tmp_path / name)
    settings = JudgeArguments(base_url="http://127.0.0.1:9/v1", model="judge")
    task = llava_bench.build_task(LLAVA_BENCH_COCO, settings, tmp_path / "j.jsonl", image_folder=str(tmp_path))
    assert task.name == "llava_bench_coco" and len(task.examples) == 90
    assert {example.metadata["category"] for example in task.examples} == {"conv", "detail", "complex"}
    first = task.examples[0]
    assert first.prompt == "What is the color of the two suitcases in the image?"
    assert first.answer.startswith("The colors of the two suitcases")
    context = first.metadata["context"]
    captions, boxes = context.split("\n\n")
    assert len(captions.splitlines()) == 5
    assert re.fullmatch(r"(\w[\w ]*: \[[\d.]+, [\d.]+, [\d.]+, [\d.]+\]\n?)+", boxes)
    assert str(first.images[0]) == str(tmp_path / "000000441147.jpg")


def wild_task(tmp_path, settings, **overrides):
    return llava_bench.build_task(LLAVA_BENCH_WILD, settings, tmp_path / "judgments.jsonl", **overrides)


ANSWERS = {"0": "It is red.", "1": "Children and a kite.", "2": "For fun."}


class Judge:
    """Scores by question: q0 "8 6"; q1 unparseable once, then "9 9"; q2 never parseable. Swapped order is detected
    from which answer comes first, and the judge adds +1 to whichever answer is shown first (a position bias)."""

    def __init__(self):
        self.calls = {}

    def __call__(self, body):
        content = body["messages"][1]["content"]
        question = re.search(r"\[Question\]\n(.*)\n", content).group(1)
        first = re.search(r"\[Assistant 1\]\n(.*)\n", content).group(1)
        qid = {"What colour is the kite?": "0", "Describe the image in detail.": "1"}.get(question, "2")
        swapped = first == ANSWERS[qid]
        self.calls[(qid, swapped)] = self.calls.get((qid, swapped), 0) + 1
        if qid == "2" or (qid == "1" and self.calls[(qid, swapped)] == 1):
            return Reply(text="The first answer is great, the second one too.")
        reference, candidate = {"0": (8, 6), "1": (9, 9)}[qid]
        if swapped:
            return Reply(text=f"{candidate + 1} {reference}\nswapped")
        return Reply(text=f"{reference + 1} {candidate}\nreference first")


def predictions_file(tmp_path):
    return write_jsonl(tmp_path / "answers.jsonl", [{"question_id": q, "text": t} for q, t in ANSWERS.items()])


def test_judging_retries_cache_and_relative_scores(tmp_path):
    judge = Judge()
    with OpenAIServer(responder=judge) as server:
        settings = JudgeArguments(base_url=server.base_url, model="judge-model", retries=2)
        results = evaluate(wild_task(tmp_path, settings), predictions=predictions_file(tmp_path))
        # q0 once, q1 twice (unparseable, then fine), q2 three times (1 + 2 retries) and then reported
        assert server.request_count == 6
        request = server.requests[0]["body"]
        assert request["model"] == "judge-model" and request["temperature"] == 0.0
        user = request["messages"][1]["content"]
        assert user.startswith("[Context]\nA red kite above a sandy beach with two children.\n\n[Question]\n")
        assert user.index("[Assistant 1]") < user.index("[Assistant 2]")
        assert request["messages"][0]["content"] == llava_bench.SYSTEM_PROMPT and llava_bench.RULE_PROMPT in user

        # reference_first: q0 ref 9 cand 6, q1 ref 10 cand 9; q2 excluded (never averaged in)
        assert results["metrics"] == pytest.approx({"conv": 100 * 6 / 9, "detail": 90.0, "overall": 100 * 7.5 / 9.5})
        assert results["passes"]["reference_first"]["complex"]["count"] == 0
        unparsed = results["unparsed"]["reference_first"]
        assert [item["question_id"] for item in unparsed] == ["2"] and unparsed[0]["attempts"] == 3
        assert results["judge"]["model"] == "judge-model" and results["judge"]["served_models"] == ["judge-model"]
        assert results["judge"]["prompt_hash"] == llava_bench.PROMPT_HASH
        # the endpoint fields are EndpointArguments' own; results.json keeps the order it always had
        assert isinstance(settings, EndpointArguments)
        assert list(results["judge"]) == [
            "base_url", "model", "api_key_env", "temperature", "max_tokens", "retries", "swapped", "concurrency",
            "timeout", "max_retries", "served_models", "prompt_hash",
        ]  # fmt: skip
        assert ["complex", 0, "-", "-", "-"] in results["table"]["rows"]

        # a rerun is answered from the cache: no request, same numbers
        again = evaluate(wild_task(tmp_path, settings), predictions=predictions_file(tmp_path))
        assert server.request_count == 6 and again["metrics"] == results["metrics"]
        cached = [json.loads(line) for line in (tmp_path / "judgments.jsonl").read_text().splitlines()]
        assert len(cached) == 6 and {record["prompt_hash"] for record in cached} == {llava_bench.PROMPT_HASH}

        # another judge model is another request (the model is part of the key)
        other = JudgeArguments(base_url=server.base_url, model="other-judge", retries=0)
        evaluate(wild_task(tmp_path, other), predictions=predictions_file(tmp_path))
        assert server.request_count == 9


def test_swapped_pass_measures_position_bias(tmp_path):
    with OpenAIServer(responder=Judge()) as server:
        settings = JudgeArguments(base_url=server.base_url, model="judge", retries=1, swapped=True)
        results = evaluate(wild_task(tmp_path, settings), predictions=predictions_file(tmp_path))
    swapped = results["passes"]["candidate_first"]
    # candidate first gets the +1: q0 ref 8 cand 7, q1 ref 9 cand 10
    assert swapped["conv"]["relative"] == pytest.approx(100 * 7 / 8)
    assert swapped["overall"]["relative"] == pytest.approx(100 * 8.5 / 8.5)
    assert results["metrics"]["swapped/overall"] == pytest.approx(100.0)
    overall_row = results["table"]["rows"][-1]
    assert results["table"]["columns"][-1] == "position bias"
    assert overall_row[-1] == pytest.approx(100 * 7.5 / 9.5 - 100.0)


def test_http_failures_are_reported_not_scored(tmp_path):
    with OpenAIServer(default=Reply(status=400)) as server:
        settings = JudgeArguments(base_url=server.base_url, model="judge", max_retries=0)
        results = evaluate(wild_task(tmp_path, settings), predictions=predictions_file(tmp_path))
    assert results["metrics"] == {}
    errors = results["judge_errors"]["reference_first"]
    assert len(errors) == 3 and "HTTP 400" in errors[0]["error"]
    assert not (tmp_path / "judgments.jsonl").read_text().strip()  # failures are not cached: a rerun asks again


def test_hub_layout_and_in_memory_examples(tmp_path):
    import datasets

    rows = {
        "question_id": ["a", "b"],
        "question": ["What is it?", "Describe it."],
        "image": [make_image(1), make_image(2)],
        "category": ["conv", "detail"],
        "caption": ["A blue square.", "A blue square on grey."],
        "gpt_answer": ["A square.", "A blue square on a grey background."],
        "image_id": ["1", "2"],
    }
    path = tmp_path / "data" / "train-00000-of-00001.parquet"
    path.parent.mkdir()
    datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image()).to_parquet(str(path))
    with OpenAIServer(default=Reply(text="8 4\nok")) as server:
        settings = JudgeArguments(base_url=server.base_url, model="judge")
        task = llava_bench.build_task(tmp_path / "data", settings, tmp_path / "cache.jsonl")
        assert task.name == "llava_bench_wild" and task.examples[1].metadata["context"] == "A blue square on grey."
        results = score_task(task, {"a": {"question_id": "a", "text": "x"}, "b": {"question_id": "b", "text": "y"}})
        assert results["metrics"]["overall"] == pytest.approx(50.0)

        examples = [llava_bench.make_example(7, "Q?", make_image(3), "ref", "conv", "ctx")]
        memory = llava_bench.build_task(examples=examples, judge_settings=settings, cache_path=tmp_path / "m.jsonl")
        assert memory.name == "llava_bench_custom"
        assert score_task(memory, {"7": {"question_id": 7, "text": "c"}})["metrics"]["conv"] == pytest.approx(50.0)
    with pytest.raises(ValueError, match="needs a judge"):
        llava_bench.build_task(LLAVA_BENCH_WILD)


def test_cli_prints_how_many_judge_replies_were_unparsed(tmp_path, capsys):
    from llava_hf.cli import main

    with OpenAIServer(responder=Judge()) as server:
        argv = ["evaluate", "--task", "llava_bench", "--data", str(LLAVA_BENCH_WILD), "--predictions"]
        argv += [str(predictions_file(tmp_path)), "--output-dir", str(tmp_path / "out")]
        argv += ["--judge-base-url", server.base_url, "--judge-model", "judge", "--judge-retries", "0"]
        assert main(argv) == 0
    out = capsys.readouterr().out
    # q1 and q2 get an unparseable first reply and there are no retries
    assert "2 unparsed judge reply(ies), left out of every mean; see results.json" in out
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(results["unparsed"]["reference_first"]) == 2

"""llava_hf's lmms-eval plug-in (`llava_hf_native`, registered through the `lmms_eval.models` entry point) through
lmms-eval's own API: its registry finds the class, its CLI (`lmms-eval --model llava_hf_native`) runs a local
generate_until task and logs llava_hf's own greedy answers, and `loglikelihood` on the requests lmms-eval builds for
a local multiple-choice task equals the model's own loss on the continuation, computed directly.

lmms-eval 0.7.3's evaluator turns every `loglikelihood` result into a string before scoring (its
`unwrap_generation_output`), so no multiple-choice task scores through its CLI or `simple_evaluate` for any model; the
loglikelihood requests are built by the task and answered by the model class here, as the evaluator would."""

import json
import os
import sys

import pytest
import torch
from datasets import Dataset, DatasetDict, Features, Value
from datasets import Image as ImageFeature
from PIL import Image

from helpers.consumers import write_checkpoint, write_images
from helpers.processes import run_to_exit
from llava_hf.evaluation.generation import generate_answers, load_image
from llava_hf.utils.loading import load_checkpoint

if os.environ.get("LLAVA_HF_CI") == "1":
    import lmms_eval  # noqa: F401  (CI installs lmms-eval: a missing one fails here, it is not skipped)
lmms_eval = pytest.importorskip("lmms_eval", reason="lmms-eval is not installed here (.ci/run installs it)")

pytestmark = pytest.mark.slow

TASK_HELPERS = """
def doc_to_visual(document):
    return [document["image"]]


def doc_to_text(document):
    return document["question"]
"""
TASKS = {
    "llava_hf_local_answers": """
output_type: generate_until
doc_to_target: answer
generation_kwargs: {max_new_tokens: 8, temperature: 0, until: ["</s>"]}
metric_list: [{metric: exact_match}]
""",
    "llava_hf_local_choices": """
output_type: multiple_choice
doc_to_choice: ["yes", "no", "a red square"]
doc_to_target: 0
metric_list: [{metric: acc}]
""",
}


@pytest.fixture(scope="module")
def local_tasks(tmp_path_factory):
    """A native llava_hf checkpoint, and two lmms-eval tasks over a local dataset of three images."""
    root = tmp_path_factory.mktemp("lmms_eval")
    write_checkpoint(root / "checkpoint")
    images = write_images(root / "images")
    rows = [
        {"image": Image.open(images[name]), "question": f"Is there a square in the {name} picture?", "answer": "yes"}
        for name in ("wide", "tall", "greyscale")
    ]
    features = Features({"image": ImageFeature(), "question": Value("string"), "answer": Value("string")})
    DatasetDict({"test": Dataset.from_list(rows, features=features)}).save_to_disk(root / "data")
    (root / "tasks").mkdir()
    (root / "tasks" / "local_tasks.py").write_text(TASK_HELPERS)
    for name, body in TASKS.items():
        header = f"task: {name}\ndataset_path: {root / 'data'}\ndataset_kwargs: {{load_from_disk: true}}\n"
        header += "test_split: test\ndoc_to_visual: !function local_tasks.doc_to_visual\n"
        header += "doc_to_text: !function local_tasks.doc_to_text\n"
        (root / "tasks" / f"{name}.yaml").write_text(header + body)
    return root, rows


def test_the_entry_point_registers_llava_hf_native_beside_lmms_evals_own_llava_hf():
    from lmms_eval.models import get_model

    from llava_hf.evaluation.lmms_eval_model import LlavaHfNative

    assert get_model("llava_hf_native") is LlavaHfNative
    assert get_model("llava_hf").__module__ == "lmms_eval.models.chat.llava_hf"


def test_lmms_eval_cli_logs_llava_hfs_own_answers(local_tasks):
    root, rows = local_tasks
    command = [sys.executable, "-m", "lmms_eval", "--model", "llava_hf_native"]
    command += ["--model_args", f"pretrained={root / 'checkpoint'},device=cpu,dtype=float32"]
    command += ["--tasks", "llava_hf_local_answers", "--include_path", str(root / "tasks"), "--batch_size", "1"]
    command += ["--output_path", str(root / "results"), "--log_samples"]
    result = run_to_exit(command, cwd=root, env={**os.environ, "HF_DATASETS_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-6000:]
    assert "llava_hf_local_answers" in result.stdout and "exact_match" in result.stdout  # lmms-eval's results table
    (samples,) = (root / "results").rglob("*_samples_llava_hf_local_answers.jsonl")
    logged = {
        sample["doc_id"]: sample["filtered_resps"] for sample in map(json.loads, samples.read_text().splitlines())
    }

    model, processor = load_checkpoint(str(root / "checkpoint"), device="cpu", dtype="float32")
    for doc_id, row in enumerate(rows):
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": row["question"]}]}]
        prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
        assert logged[doc_id] == generate_answers(model, processor, [prompt], [[row["image"]]], max_new_tokens=8)[0]


def test_loglikelihood_equals_the_models_own_loss_on_the_continuation(local_tasks):
    from lmms_eval.models import get_model
    from lmms_eval.tasks import TaskManager, get_task_dict

    root, rows = local_tasks
    task = get_task_dict(["llava_hf_local_choices"], TaskManager(include_path=str(root / "tasks")))[
        "llava_hf_local_choices"
    ]
    task.build_all_requests(limit=None, rank=0, world_size=1)
    requests = task.instances
    assert len(requests) == 3 * 3 and {request.request_type for request in requests} == {"loglikelihood"}
    lm = get_model("llava_hf_native").create_from_arg_string(
        f"pretrained={root / 'checkpoint'},dtype=float32", {"device": "cpu", "batch_size": 1}
    )
    lm.task_dict = {"llava_hf_local_choices": task.dataset}
    scores = lm.loglikelihood(requests)

    model, processor = load_checkpoint(str(root / "checkpoint"), device="cpu", dtype="float32")
    for request, (log_likelihood, greedy) in zip(requests, scores):
        context, continuation, _, doc_id, _, _ = request.args
        image = load_image(rows[doc_id]["image"])
        conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": context}]}]
        prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
        prompt_length = processor(images=image, text=prompt, return_tensors="pt")["input_ids"].shape[1]
        inputs = processor(images=image, text=prompt + continuation, return_tensors="pt")
        labels = inputs["input_ids"].clone()
        labels[:, :prompt_length] = -100
        num_tokens = int((labels != -100).sum())
        with torch.inference_mode():
            loss = model(**inputs, labels=labels).loss  # mean negative log-likelihood of the continuation's tokens
            generated = model.generate(
                **processor(images=image, text=prompt, return_tensors="pt"), do_sample=False, max_new_tokens=num_tokens
            )
        assert log_likelihood == pytest.approx(-float(loss) * num_tokens, rel=1e-5, abs=1e-5)
        assert greedy == (generated[0, prompt_length:].tolist() == inputs["input_ids"][0, prompt_length:].tolist())

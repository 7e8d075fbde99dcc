# git clone https://github.com/haotian-liu/LLaVA && git -C LLaVA archive c121f0432da27facab705978f83c4ada465e46fd | tar -x -C /tmp/llava_c121f04
# python tests/assets/evaluation/make_scienceqa_original_outputs.py /tmp/llava_c121f04
"""Runs the ORIGINAL LLaVA ScienceQA scripts (haotian-liu/LLaVA at commit c121f04) on the ScienceQA fixture and
writes what they produce to scienceqa_original/, so the tests compare our strings with the original's byte for byte
without the original code being present at test time (it is not in this repository, and CI has no network).

The argument is a checkout (work tree) of https://github.com/haotian-liu/LLaVA at
c121f0432da27facab705978f83c4ada465e46fd. What runs, unchanged, from that checkout:
- `scripts/convert_sqa_to_llava.py::convert_to_llava(base_dir, split, prompt_format)` for every prompt format
  llava_hf offers and the train, val and test splits -> `llava_{split}_{format}.json` (copied as written);
- `llava/eval/model_vqa_science.py::eval_model(args)` on `llava_test_{format}.json`: with `--single-pred-prompt
  --conv-mode vicuna_v1` on CQM-A (LLaVA-1.5's `scripts/v1_5/eval/sqa.sh`) and with `--conv-mode llava_v1` on the
  fine-tuning formats (`scripts/sqa_eval_batch.sh`) -> `answers_{run}.jsonl` (its answers file, whose `prompt` is the
  user text) and `prompts_{run}.json` (`{question_id: the full prompt string it tokenizes}`);
- `llava/eval/eval_science_qa.py` as a script (`__main__`) on answers files with scripted model outputs ->
  `eval_{n}_output.json` / `eval_{n}_result.json` (its --output-file / --output-result).

Only what needs weights or a GPU is replaced, and nothing that builds a string: the model loader and `generate`
(a stand-in model whose decoded output is the scripted text), `tokenizer_image_token` (records the prompt string it
is given), `process_images` (a stand-in tensor), `disable_torch_init`, and the `fire` / `shortuuid` imports
(`fire.Fire` only runs under `__main__`; `shortuuid.uuid` gives the answer ids). The `llava` package is entered
without its `__init__` (which imports the model classes of transformers 4.37).
"""

import json
import os
import runpy
import shutil
import sys
import tempfile
import types
from pathlib import Path

import torch

HERE = Path(__file__).parent
DATA = HERE / "scienceqa"
OUTPUT = HERE / "scienceqa_original"
COMMIT = "c121f0432da27facab705978f83c4ada465e46fd"
PROMPT_FORMATS = [f"{i}-{o}" for i in ("QCM", "CQM") for o in ("A", "AL", "AE", "ALE", "AEL", "LA", "EA", "LEA", "ELA")]
SPLITS = ["train", "val", "test"]

# Scripted model outputs for the scoring runs, one list per run, in the order of the test split (pids 1..6; their
# options: 2, 3, 3, 3, 2, 2; gold B, A, C, B, A, B). They cover the original parser's three rules and its edges.
SCRIPTED_OUTPUTS = [
    ["B", "A. rock", "The answer is C.", "I think the answer is B.", "A", "Not sure"],
    ["(B)", "B)", "The answer is (C).", "Paris", "A.", "The answer is B"],
    ["C", "The answer is A. The answer is A.", "E", "b", "A cat", "The answer is R."],
    ["B. ", "A:", "Answer: The answer is C. Maine is farthest north.", "The answer is B.", "A. table", "R"],
]


def stub_modules(repo: Path, recorded_prompts: list, outputs: list) -> None:
    """Enter the original `llava` package without its __init__, and stand in for what needs weights."""
    sys.modules["fire"] = types.SimpleNamespace(Fire=lambda *args, **kwargs: None)
    sys.modules["shortuuid"] = types.SimpleNamespace(uuid=lambda: "answer-id")
    package = types.ModuleType("llava")
    package.__path__ = [str(repo / "llava")]
    sys.modules["llava"] = package

    class StandInTensor:
        def unsqueeze(self, dim):
            return self

        def half(self):
            return self

        def cuda(self):
            return self

    class Tokenizer:
        def batch_decode(self, output_ids, skip_special_tokens=True):
            return [outputs.pop(0)]

    class Model:
        config = types.SimpleNamespace(mm_use_im_start_end=False)

        def generate(self, input_ids, **kwargs):
            return torch.zeros(1, 1, dtype=torch.long)

    def tokenizer_image_token(prompt, tokenizer, image_token_index, return_tensors=None):
        recorded_prompts.append(prompt)
        return StandInTensor()

    builder = types.ModuleType("llava.model.builder")
    builder.load_pretrained_model = lambda path, base, name: (Tokenizer(), Model(), None, 2048)
    mm_utils = types.ModuleType("llava.mm_utils")
    mm_utils.tokenizer_image_token = tokenizer_image_token
    mm_utils.process_images = lambda images, processor, config: [StandInTensor() for _ in images]
    mm_utils.get_model_name_from_path = lambda path: "stand-in-model"
    utils = types.ModuleType("llava.utils")
    utils.disable_torch_init = lambda: None
    model_package = types.ModuleType("llava.model")
    model_package.__path__ = []
    sys.modules.update(
        {"llava.model": model_package, "llava.model.builder": builder, "llava.mm_utils": mm_utils, "llava.utils": utils}
    )


def main(repo: Path) -> None:
    recorded_prompts: list[str] = []
    outputs: list[str] = []
    stub_modules(repo, recorded_prompts, outputs)
    sys.path.insert(0, str(repo / "scripts"))
    from convert_sqa_to_llava import convert_to_llava  # the original converter
    from llava.eval.model_vqa_science import eval_model  # the original answer generation (prompt building)

    if OUTPUT.exists():
        shutil.rmtree(OUTPUT)
    OUTPUT.mkdir()
    with tempfile.TemporaryDirectory() as work:
        base_dir = Path(work) / "scienceqa"
        shutil.copytree(DATA, base_dir)
        for split in SPLITS:
            for prompt_format in PROMPT_FORMATS:
                convert_to_llava(str(base_dir), split, prompt_format)
                name = f"llava_{split}_{prompt_format}.json"
                shutil.copyfile(base_dir / name, OUTPUT / name)

        def answer(question_format: str, single_pred: bool, conv_mode: str, texts: list[str], name: str) -> Path:
            question_file = base_dir / f"llava_test_{question_format}.json"
            count = len(json.loads(question_file.read_text()))
            outputs[:] = texts or ["A"] * count
            recorded_prompts.clear()
            answers = OUTPUT / f"answers_{name}.jsonl"
            args = types.SimpleNamespace(
                model_path="stand-in-model",
                model_base=None,
                image_folder=str(base_dir / "test"),
                question_file=str(question_file),
                answers_file=str(answers),
                conv_mode=conv_mode,
                num_chunks=1,
                chunk_idx=0,
                temperature=0,
                answer_prompter=False,
                single_pred_prompt=single_pred,
            )
            eval_model(args)
            ids = [json.loads(line)["question_id"] for line in answers.read_text().splitlines()]
            prompts = dict(zip(ids, recorded_prompts, strict=True))
            (OUTPUT / f"prompts_{name}.json").write_text(json.dumps(prompts, indent=1, ensure_ascii=False) + "\n")
            return answers

        answer("CQM-A", True, "vicuna_v1", [], "CQM-A_single-pred_vicuna_v1")
        for prompt_format in PROMPT_FORMATS:
            answer(prompt_format, False, "llava_v1", [], f"{prompt_format}_llava_v1")
        script = repo / "llava" / "eval" / "eval_science_qa.py"
        for number, texts in enumerate(SCRIPTED_OUTPUTS):
            answers = answer("CQM-A", True, "vicuna_v1", list(texts), f"scored_{number}")
            argv = ["eval_science_qa.py", "--base-dir", str(base_dir), "--result-file", str(answers)]
            argv += ["--output-file", str(OUTPUT / f"eval_{number}_output.json")]
            argv += ["--output-result", str(OUTPUT / f"eval_{number}_result.json")]
            sys.argv = argv
            runpy.run_path(str(script), run_name="__main__")
    (OUTPUT / "SOURCE.md").write_text(
        f"Written by ../make_scienceqa_original_outputs.py from haotian-liu/LLaVA at {COMMIT}; do not edit.\n"
    )


if __name__ == "__main__":
    checkout = Path(sys.argv[1])
    if not (checkout / "scripts" / "convert_sqa_to_llava.py").is_file():
        raise SystemExit(f"{checkout} is not a haotian-liu/LLaVA checkout (scripts/convert_sqa_to_llava.py missing).")
    os.chdir(checkout)  # the original scripts resolve nothing relative to it, but keep the run where it would be
    main(checkout.resolve())

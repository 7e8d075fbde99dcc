"""lmms-eval's own `llava_hf` model classes (no llava_hf installed) evaluate the `llava-hf export --to transformers`
folder: `generate_until`, with requests built as lmms-eval's evaluator builds them, answers exactly what llava_hf
answers to the same question about the same image."""

import json

import pytest

from helpers.consumers import QUESTION, run_client, written_folders  # noqa: F401  (the `written` fixture)

pytestmark = pytest.mark.slow


def test_lmms_eval_llava_hf_generate_until_answers_as_llava_hf(written):
    root, folders, images, reference = written
    # lmms-eval's image tasks convert to RGB themselves; the 16-bit case is covered with plain transformers.
    images_json = json.dumps({name: str(images[name]) for name in ("wide", "tall", "greyscale")})
    answers = run_client("lmms_eval_client", folders["exported"], images_json, QUESTION, cwd=root)
    assert not answers["llava_hf_imported"]
    assert answers["classes"] == ["lmms_eval.models.simple.llava_hf.LlavaHf", "lmms_eval.models.chat.llava_hf.LlavaHf"]
    for kind in ("simple", "chat"):
        assert answers[kind] == {name: reference[name]["text"] for name in answers[kind]}, kind

"""`llava-hf chat` in a real subprocess driven through stdin: streamed answers, history, /image, /reset, errors."""

import subprocess
import sys

from helpers.serving import checkpoint, subprocess_env, tiny  # noqa: F401  (fixtures)
from llava_hf.serving import chat_command as chat
from llava_hf.serving.generate_command import answer, user_message
from llava_hf.serving.inference import SamplingArguments
from llava_hf.testing import make_image


def test_chat_session_over_stdin(checkpoint, tiny, tmp_path):  # noqa: F811
    model, processor = tiny
    first, second = make_image(1), make_image(2)
    first.save(tmp_path / "first.png")
    second.save(tmp_path / "second.png")
    script = "\n".join(
        [
            "What is in the picture?",  # about first.png (given with --image)
            "And what colour is it?",  # second turn: the history is part of the prompt
            f"/image {tmp_path / 'second.png'}",
            "Describe it.",  # new conversation about second.png
            "/image /nonexistent.png",  # an error, the session goes on
            "/reset",
            "Describe it.",  # same image, fresh history: the same answer as before
            "/wat",
            "/quit",
        ]
    )
    command = [sys.executable, "-m", "llava_hf.cli", "chat", "--model", str(checkpoint), "--image"]
    command += [str(tmp_path / "first.png"), "--max_new_tokens", "10"]
    result = subprocess.run(command, input=script, capture_output=True, text=True, env=subprocess_env(), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]

    sampling = SamplingArguments(max_new_tokens=10, temperature=0.0)
    history = [user_message("What is in the picture?", with_image=True)]
    answer_1 = answer(model, processor, history, [first], sampling)
    history += [
        {"role": "assistant", "content": [{"type": "text", "text": answer_1}]},
        user_message("And what colour is it?", with_image=False),
    ]
    answer_2 = answer(model, processor, history, [first], sampling)
    answer_3 = answer(model, processor, [user_message("Describe it.", with_image=True)], [second], sampling)

    replies = [segment.split("\nUSER: ")[0].strip() for segment in result.stdout.split("ASSISTANT:")[1:]]
    assert replies == [answer_1, answer_2, answer_3, answer_3]
    assert f"(loaded {tmp_path / 'second.png'}; new conversation)" in result.stdout
    assert "(error: image file '/nonexistent.png' does not exist.)" in result.stdout
    assert "(conversation cleared)" in result.stdout
    assert "(unknown command /wat;" in result.stdout


def test_chat_refuses_a_missing_start_image(checkpoint, capsys):  # noqa: F811
    assert chat.main(["--model", str(checkpoint), "--image", "/nope.png"]) == 2
    assert "image file '/nope.png' does not exist" in capsys.readouterr().err

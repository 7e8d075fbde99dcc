"""The teacher and judge endpoint flags, declared once in `utils/endpoints.py`: every command that talks to a teacher
or a judge takes the same flags, refuses spellings without the role (`--base-url`, `--judge-url`, ...), and hands
the settings (API key variable included) to the client that sends the requests."""

import pytest

from llava_hf.datagen.pipeline import GenerateDataArguments, LLMTeacher
from llava_hf.demo.end_to_end import DemoArguments
from llava_hf.evaluation.evaluate_command import EvaluateArguments
from llava_hf.testing import OpenAIServer
from llava_hf.utils.command_line import parse_args
from llava_hf.utils.endpoints import ChatClient, EndpointArguments

TEACHER = ["--teacher-base-url", "http://127.0.0.1:9/v1", "--teacher-model", "t", "--teacher-api-key-env", "T_KEY"]
JUDGE = ["--judge_base_url", "http://127.0.0.1:8/v1", "--judge_model", "j", "--judge_api_key_env", "J_KEY"]
GENERATE = ["--output-dir", "out", "--input", "a.jsonl"]
EVALUATE = ["--task", "llava_bench", "--data", "d", "--output-dir", "out"]


@pytest.mark.parametrize(
    "arguments_class, argv, roles",
    [
        (GenerateDataArguments, GENERATE + TEACHER, ["teacher"]),
        (EvaluateArguments, EVALUATE + JUDGE, ["judge"]),
        (DemoArguments, TEACHER + JUDGE, ["teacher", "judge"]),
    ],
)
def test_each_command_takes_the_role_flags(arguments_class, argv, roles):
    (arguments,) = parse_args(arguments_class, argv, "llava-hf test")
    expected = {
        "teacher": EndpointArguments("http://127.0.0.1:9/v1", "t", api_key_env="T_KEY", concurrency=3),
        "judge": EndpointArguments("http://127.0.0.1:8/v1", "j", api_key_env="J_KEY", concurrency=3),
    }
    for role in roles:
        assert getattr(arguments, f"{role}_endpoint")(concurrency=3) == expected[role]


@pytest.mark.parametrize(
    "arguments_class, argv",
    [
        (GenerateDataArguments, GENERATE + ["--base-url", "http://127.0.0.1:9/v1", "--teacher-model", "t"]),
        (GenerateDataArguments, GENERATE + ["--teacher-base-url", "http://127.0.0.1:9/v1", "--model", "t"]),
        (DemoArguments, ["--teacher-url", "http://127.0.0.1:9/v1", "--teacher-model", "t"]),
        (DemoArguments, ["--judge-url", "http://127.0.0.1:8/v1", "--judge-model", "j"]),
        (DemoArguments, ["--api-key-env", "KEY"]),
    ],
)
def test_spellings_without_the_role_are_refused(arguments_class, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(arguments_class, argv, "llava-hf test")
    assert exit_info.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--teacher-base-url", "http://127.0.0.1:9/v1"], "--teacher-base-url and --teacher-model go together"),
        (["--teacher-model", "t"], "--teacher-base-url and --teacher-model go together"),
        (["--judge-base-url", "http://127.0.0.1:8/v1"], "--judge-base-url and --judge-model go together"),
        (["--judge-model", "j"], "--judge-base-url and --judge-model go together"),
    ],
)
def test_demo_wants_url_and_model_together(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(DemoArguments, argv, "llava-hf demo")
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_teacher_key_variable_reaches_the_request(monkeypatch):
    monkeypatch.setenv("T_KEY", "sk-teacher")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-default")
    with OpenAIServer() as server:
        argv = ["--output-dir", "out", "--input", "a.jsonl", "--teacher-base-url", server.base_url]
        (config,) = parse_args(
            GenerateDataArguments, argv + ["--teacher-model", "t", "--teacher-api-key-env", "T_KEY"], "x"
        )
        teacher = LLMTeacher(config)
        teacher.client.complete_many([[{"role": "user", "content": "Hi"}]])
        (judge_arguments,) = parse_args(
            EvaluateArguments, EVALUATE + ["--judge-base-url", server.base_url, "--judge-model", "j"], "x"
        )
        ChatClient.from_settings(judge_arguments.judge_endpoint()).complete_many([[{"role": "user", "content": "Hi"}]])
    assert teacher.model == "t" and server.requests[0]["body"]["model"] == "t"
    assert server.requests[0]["headers"]["Authorization"] == "Bearer sk-teacher"
    assert server.requests[1]["body"]["model"] == "j"
    assert server.requests[1]["headers"]["Authorization"] == "Bearer sk-default"

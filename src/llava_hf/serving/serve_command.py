# llava-hf serve --model PATH_OR_REPO [--port 8000 --max_batch_size 8 --allowed_image_hosts images.example.org]
"""`llava-hf serve`: read the settings, then load the checkpoint and run the OpenAI-compatible server (server.py).

The settings are parsed before FastAPI, uvicorn and torch are imported, so `--help` and bad flags answer at once, and
`--help` works without the `serve` extra; running the server without it exits 2 with the `pip install` that fixes it.
"""

import sys

from llava_hf.serving.arguments import ModelArguments, ServeArguments
from llava_hf.utils.command_line import build_parser, parse_into_dataclasses, usage_error

PROG = "llava-hf serve"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser((ModelArguments, ServeArguments), PROG)
    try:
        model_args, settings = parse_into_dataclasses(parser, argv)
    except ValueError as error:
        return usage_error(PROG, error)
    try:
        from llava_hf.serving.server import serve
    except ImportError as error:  # the serve extra is missing: the message names the pip install
        return usage_error(PROG, error)
    return serve(model_args, settings)


if __name__ == "__main__":
    sys.exit(main())

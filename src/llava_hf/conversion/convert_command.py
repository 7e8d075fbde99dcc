# llava-hf convert SRC DST [--vision_tower PATH_OR_REPO] [--base_model PATH_OR_REPO] [--verify]
"""`llava-hf convert` (convert.py): the arguments are parsed and the source checked before torch loads. A source that
is neither a folder nor a Hub repo id is bad input (exit 2); a conversion that fails (unknown layout, failed
--verify) exits 1."""

import os
import re
import sys

from ..utils.command_line import usage_error
from .arguments import ConvertArguments, parse

CONVERT_DESCRIPTION = (
    "Original LLaVA checkpoints (and transformers' built-in llava layout) -> a complete llava_hf checkpoint folder."
)
REPO_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")  # `name` or `org/name` (huggingface_hub's rule, without its length limits)


def main(argv: list[str] | None = None) -> int:
    prog = "llava-hf convert"
    source_help = "original LLaVA / stage-1 / LoRA / llava-hf checkpoint folder or repo id"
    arguments, positional = parse(ConvertArguments, argv, prog, CONVERT_DESCRIPTION, source_help)
    if not os.path.exists(positional.source) and not REPO_ID.fullmatch(positional.source):
        return usage_error(prog, f"source {positional.source!r} is neither a folder nor a Hub repo id (org/name).")
    from .common import ConversionError
    from .convert import convert_checkpoint

    try:
        result = convert_checkpoint(positional.source, positional.destination, arguments)
    except ConversionError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 1
    print(f"converted {result.source_format} checkpoint {positional.source} -> {result.destination}")
    if result.verification is not None:
        check = result.verification
        print(
            f"verified: max |Δlogit| = {check['max_abs_logit_diff']:.3g} over {check['positions']} positions, "
            f"greedy tokens agree: {check['greedy_agree']}, token ids identical: {check['token_ids_identical']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Hub side of a checkpoint: the format plain transformers loads, a filled model card, push.

`push_to_hub(folder, repo_id, ...)` uploads a finished checkpoint folder (model, processor, README.md) in one commit
with huggingface_hub; `prepare_for_hub` alone leaves the folder exactly as it would be uploaded (what
`examples/release_checkpoints.py --push_to_folder` writes). Users without llava_hf must be able to load what is
pushed: a model transformers' built-in llava can express is written in its format (a folder saved in the older
`llava_hf` format is rewritten; the weights are the same bytes); any other (linear, identity, deeper projectors)
gets the llava_hf modeling/processing files and `auto_map` entries (transformers' `register_for_auto_class`), so it
loads with `trust_remote_code=True`, which the card then says.
"""

import shutil
from pathlib import Path

from ..utils.io import staged_directory
from .common import read_json, write_safetensors
from .convert_transformers_checkpoint import copy_tokenizer_legacy, write_builtin_files
from .model_card import write_model_card


def add_remote_code(folder: str | Path) -> Path:
    """Re-save the checkpoint in `folder` with its code files and `auto_map`, in place (atomically)."""
    from llava_hf.modeling import LlavaHfConfig, LlavaHfForConditionalGeneration
    from llava_hf.processing import LlavaHfImageProcessor, LlavaHfProcessor

    folder = Path(folder)
    model = LlavaHfForConditionalGeneration.from_pretrained(folder)
    processor = LlavaHfProcessor.from_pretrained(folder)
    classes = [
        (LlavaHfConfig, "AutoConfig"),
        (LlavaHfForConditionalGeneration, "AutoModelForImageTextToText"),
        (LlavaHfProcessor, "AutoProcessor"),
        (LlavaHfImageProcessor, "AutoImageProcessor"),
    ]
    try:
        with staged_directory(folder, replace=True) as staging:
            for cls, auto_class in classes:
                cls.register_for_auto_class(auto_class)
            model.save_pretrained(staging)
            # Without llava_hf, nothing registers the checkpoint conversion mapping that turns the on-disk built-in layout
            # (language_model.model.*) into the class's names, so every weight would load as missing (random). Store the
            # in-memory names instead; llava_hf's mapping leaves them untouched, so both ways of loading work.
            for path in [*staging.glob("*.safetensors"), *staging.glob("model.safetensors.index.json")]:
                path.unlink()
            write_safetensors({name: tensor.detach() for name, tensor in model.state_dict().items()}, staging)
            processor.save_pretrained(staging)
            copy_tokenizer_legacy(folder, staging)  # save_pretrained drops `legacy`, which changes tokenization
            for extra in folder.iterdir():  # README.md, generation config, anything save_pretrained did not rewrite
                if extra.is_file() and not (staging / extra.name).exists():
                    shutil.copyfile(extra, staging / extra.name)
    finally:
        for cls, _ in classes:  # register_for_auto_class is process-wide; later plain saves must not ship code
            cls._auto_class = None
    return folder


def write_builtin_format(folder: str | Path) -> Path:
    """Rewrite config.json and the processor files of `folder` in transformers' built-in llava format, in place
    (atomically); the weights already have the built-in's layout and are kept."""
    folder = Path(folder)
    with staged_directory(folder, replace=True) as staging:
        write_builtin_files(folder, staging)
        for extra in folder.iterdir():  # weights, README.md, anything not rewritten
            if extra.is_file() and not (staging / extra.name).exists():
                shutil.copyfile(extra, staging / extra.name)
    return folder


def prepare_for_hub(folder: str | Path, repo_id: str, **card_fields) -> Path:
    """Make `folder` exactly what `push_to_hub` uploads: loadable without llava_hf, README.md filled for `repo_id`.

    The built-in llava format when it can express the model, else the remote code (see the module docstring).
    `card_fields` go to `render_model_card`; provenance and verification recorded at conversion are kept.
    """
    from llava_hf.modeling import LlavaHfConfig

    folder = Path(folder)
    remote_code = not LlavaHfConfig.from_pretrained(folder).builtin_expressible
    if remote_code:
        if "auto_map" not in read_json(folder / "config.json"):
            add_remote_code(folder)
    elif read_json(folder / "config.json").get("model_type") != "llava":
        write_builtin_format(folder)
    write_model_card(folder, repo_id=repo_id, remote_code=remote_code, **card_fields)
    return folder


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    private: bool = False,
    commit_message: str = "Upload llava_hf checkpoint",
    **card_fields,
) -> str:
    """`prepare_for_hub(folder, repo_id, **card_fields)`, then upload the folder in one commit.

    Returns the commit URL. Credentials come from huggingface_hub's usual places (HF_TOKEN, `hf auth login`).
    """
    from huggingface_hub import HfApi

    folder = prepare_for_hub(folder, repo_id, **card_fields)
    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message)
    return str(getattr(commit, "commit_url", commit))


__all__ = ["add_remote_code", "prepare_for_hub", "push_to_hub", "write_builtin_format"]

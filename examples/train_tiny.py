# python examples/train_tiny.py [--workdir build/tiny]
"""LLaVA's two stages end to end on CPU in about a minute, with the tiny YAML recipes in examples/configs/.

1. copies tiny stand-ins of CLIP-L/336 and Vicuna (shaped like the real ones: a full CLIPModel, a SentencePiece
   tokenizer with no `<image>` and no pad) as the "pretrained parts", and writes a synthetic LLaVA JSON + image
   folder (coloured shapes);
2. `llava-hf train --config examples/configs/tiny_stage1_pretrain.yaml`: projector only, `plain` template;
3. `llava-hf train --config examples/configs/tiny_stage2_finetune.yaml`: projector + LLM, loading stage 1's projector;
4. `llava-hf train --config examples/configs/tiny_stage2_lora.yaml`: LoRA instead of full fine-tuning.
The recipes point at build/tiny/...; `--workdir` moves everything (the paths are passed as overrides).
"""

import argparse
import json
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "examples" / "configs"
REAL_SHAPED = REPO / "tests" / "assets" / "real_shaped"  # made by make_real_shaped.py there


def make_tiny_parts(folder: Path) -> tuple[Path, Path]:
    """Copy the tiny stand-ins of openai/clip-vit-large-patch14-336 (a full CLIPModel, old-format preprocessor
    config) and lmsys/vicuna-7b-v1.5 (SentencePiece tokenizer without `<image>` or pad) to `folder`; returns their
    two folders. They are shaped like the real parts, so this run takes the same path as the 7B recipes."""
    vision_dir, language_dir = folder / "vision", folder / "language"
    shutil.copytree(REAL_SHAPED / "clip-vit-large-patch14-336", vision_dir, dirs_exist_ok=True)
    shutil.copytree(REAL_SHAPED / "vicuna-7b-v1.5", language_dir, dirs_exist_ok=True)
    return vision_dir, language_dir


def make_tiny_data(folder: Path, num_rows: int = 64, seed: int = 0) -> tuple[Path, Path]:
    """A synthetic LLaVA JSON (original format) and its image folder; returns (json path, image folder)."""
    from llava_hf.data.synthetic import make_shape_rows

    image_folder = folder / "images"
    image_folder.mkdir(parents=True, exist_ok=True)
    records = []
    for row in make_shape_rows(num_rows, seed=seed, image_size=64, lengths="realistic"):
        record = {"id": row["id"], "conversations": []}
        if row["images"]:
            record["image"] = f"{row['id']}.png"
            row["images"][0].save(image_folder / record["image"])
        for message in row["messages"]:
            text = "".join(part["text"] for part in message["content"] if part["type"] == "text")
            has_image = any(part["type"] == "image" for part in message["content"])
            speaker = "human" if message["role"] == "user" else "gpt"
            record["conversations"].append({"from": speaker, "value": ("<image>\n" if has_image else "") + text})
        records.append(record)
    json_path = folder / "tiny_llava.json"
    json_path.write_text(json.dumps(records, indent=1))
    return json_path, image_folder


def main() -> None:
    from llava_hf.cli import main as llava_hf

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="build/tiny")
    workdir = Path(parser.parse_args().workdir)
    vision_dir, language_dir = make_tiny_parts(workdir / "parts")
    json_path, image_folder = make_tiny_data(workdir / "data")
    common = ["--vision_tower", str(vision_dir), "--language_model", str(language_dir), "--data_path", str(json_path)]
    common += ["--image_folder", str(image_folder)]
    stage1, stage2, lora = workdir / "stage1", workdir / "stage2", workdir / "stage2_lora"
    llava_hf(["train", "--config", str(CONFIGS / "tiny_stage1_pretrain.yaml"), *common, "--output_dir", str(stage1)])
    for config, output in (("tiny_stage2_finetune.yaml", stage2), ("tiny_stage2_lora.yaml", lora)):
        llava_hf(
            [
                "train",
                "--config",
                str(CONFIGS / config),
                *common,
                "--projector_path",
                str(stage1),
                "--output_dir",
                str(output),
            ]
        )


if __name__ == "__main__":
    main()

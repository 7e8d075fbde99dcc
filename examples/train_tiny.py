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
from pathlib import Path

from llava_hf.testing import make_tiny_data, make_tiny_parts

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "examples" / "configs"
REAL_SHAPED = REPO / "tests" / "assets" / "real_shaped"  # made by make_real_shaped.py there


def main() -> None:
    from llava_hf.cli import main as llava_hf

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="build/tiny")
    workdir = Path(parser.parse_args().workdir)
    vision_dir, language_dir = make_tiny_parts(workdir / "parts", REAL_SHAPED)
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

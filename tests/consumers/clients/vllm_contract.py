"""What vLLM reads from a LLaVA checkpoint before it runs one, with plain transformers (vLLM itself needs a GPU build).

    python vllm_contract.py FOLDER IMAGES_JSON

vLLM's `llava` model and its Transformers backend take the architecture and the image token from config.json, build
the processor with AutoProcessor, size each image's placeholder run without processing the image (the processor's
`_get_num_multimodal_tokens`, or for `llava` the CLIP tower's (image_size / patch_size)^2 with the CLS feature
dropped), and then expect the processor's output to hold exactly that many image tokens. Prints JSON with each of
these, per image of IMAGES_JSON.
"""

import json
import sys

from PIL import Image
from transformers import AutoConfig, AutoProcessor

folder, images_json = sys.argv[1:]
config = AutoConfig.from_pretrained(folder)
processor = AutoProcessor.from_pretrained(folder)
vision = config.vision_config
images = {name: Image.open(path) for name, path in json.loads(images_json).items()}
sizes = [(image.height, image.width) for image in images.values()]
counted = {}
for name, image in images.items():
    input_ids = processor(images=image, text=f"{processor.image_token}\nWhat is this?")["input_ids"][0]
    counted[name] = sum(token == config.image_token_id for token in input_ids)
print(
    json.dumps(
        {
            "llava_hf_imported": "llava_hf" in sys.modules,
            "architectures": config.architectures,
            "model_type": config.model_type,
            "processor": type(processor).__name__,
            "image_token_id": config.image_token_id,
            "processor_image_token_id": processor.tokenizer.convert_tokens_to_ids(processor.image_token),
            "image_seq_length": config.image_seq_length,
            "vision_feature_select_strategy": config.vision_feature_select_strategy,
            "tower_tokens": (vision.image_size // vision.patch_size) ** 2,
            "num_image_tokens": processor._get_num_multimodal_tokens(image_sizes=sizes).num_image_tokens,
            "counted": counted,
        }
    )
)

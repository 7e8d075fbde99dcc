"""A user with plain transformers: Auto classes and `pipeline("image-text-to-text")` on a checkpoint folder.

    python transformers_client.py FOLDER IMAGES_JSON QUESTION OUTPUT_PT

IMAGES_JSON maps names to image files. Writes, per image, the prompt ids, pixel values and greedy new tokens of the
Auto classes and the pipeline's answer to OUTPUT_PT (torch.save); prints the class names it loaded as JSON.
"""

import json
import sys

import torch
from PIL import Image
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor, pipeline

folder, images_json, question, output_path = sys.argv[1:]
config = AutoConfig.from_pretrained(folder)
processor = AutoProcessor.from_pretrained(folder, backend="pil")  # LLaVA's exact pixels even with torchvision
model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32).eval()
generator = pipeline("image-text-to-text", model=folder, dtype=torch.float32)

prompt = processor.apply_chat_template(
    [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}], add_generation_prompt=True
)
results = {}
for name, path in json.loads(images_json).items():
    inputs = processor(images=Image.open(path), text=prompt, return_tensors="pt")
    with torch.inference_mode():
        output = model.generate(**inputs, do_sample=False, max_new_tokens=8)
    messages = [{"role": "user", "content": [{"type": "image", "url": path}, {"type": "text", "text": question}]}]
    answer = generator(text=messages, max_new_tokens=8, do_sample=False, return_full_text=False)
    results[name] = {
        "input_ids": inputs["input_ids"][0].tolist(),
        "pixel_values": inputs["pixel_values"],
        "new_tokens": output[0, inputs["input_ids"].shape[1] :].tolist(),
        "pipeline_text": answer[0]["generated_text"],
    }
torch.save(results, output_path)
print(
    json.dumps(
        {
            "llava_hf_imported": "llava_hf" in sys.modules,
            "model_type": config.model_type,
            "model": type(model).__name__,
            "processor": type(processor).__name__,
            "image_processor": type(processor.image_processor).__name__,
            "pipeline_model": type(generator.model).__name__,
            "answers": {name: result["pipeline_text"] for name, result in results.items()},
        }
    )
)

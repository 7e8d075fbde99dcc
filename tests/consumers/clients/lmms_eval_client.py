"""A user with lmms-eval: its own `llava_hf` model classes (the simple one and the chat one that `--model llava_hf`
picks) answering `generate_until` requests built the way lmms-eval's evaluator builds them.

    python lmms_eval_client.py FOLDER IMAGES_JSON QUESTION

Prints JSON: {"simple": {name: answer}, "chat": {name: answer}, "classes": [...]}.
"""

import json
import sys

from lmms_eval.api.instance import Instance
from lmms_eval.models import get_model
from PIL import Image

folder, images_json, question = sys.argv[1:]
names = list(json.loads(images_json))
# A task's documents, as the evaluator hands them to the model through `task_dict[task][split]`.
documents = [{"image": Image.open(path), "question": question} for path in json.loads(images_json).values()]
generation = {"max_new_tokens": 8, "temperature": 0, "until": ["</s>"]}


def doc_to_visual(document):
    return [document["image"].convert("RGB")]  # what lmms-eval's image tasks return


def doc_to_messages(document):
    content = [{"type": "image", "url": doc_to_visual(document)[0]}, {"type": "text", "text": document["question"]}]
    return [{"role": "user", "content": content}]


answers, classes = {}, []
for kind, force_simple in (("simple", True), ("chat", False)):
    model_class = get_model("llava_hf", force_simple=force_simple)
    classes.append(f"{model_class.__module__}.{model_class.__name__}")
    # device_map must be given: the class's default "" is refused by transformers 5's from_pretrained.
    model = model_class(pretrained=folder, device="cpu", device_map="cpu", dtype="float32")
    model.task_dict = {"local": {"test": documents}}
    requests = []
    for doc_id, document in enumerate(documents):
        if force_simple:
            arguments = (document["question"], dict(generation), doc_to_visual, doc_id, "local", "test")
        else:
            arguments = (document["question"], doc_to_messages, dict(generation), doc_id, "local", "test")
        metadata = {"task": "local", "doc_id": doc_id, "repeats": 1}
        requests.append(Instance(request_type="generate_until", arguments=arguments, idx=0, metadata=metadata))
    outputs = model.generate_until(requests)
    answers[kind] = {name: getattr(output, "text", output) for name, output in zip(names, outputs)}

print(json.dumps({**answers, "classes": classes, "llava_hf_imported": "llava_hf" in sys.modules}))

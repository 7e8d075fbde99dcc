"""`LlavaHfProcessor`: tokenizer + image processor + LLaVA chat templates.

Each `<image>` placeholder in the text becomes `image_seq_length` copies of the image token (576 for CLIP-L/336),
the positions the model fills with projected image features. Counts are checked per sample before anything is
tokenized, and transformers' own check after tokenization refuses a truncation that cut an image's tokens.
The class is not called `LlavaProcessor`: transformers resolves `processor_class` names to its built-ins first,
so a saved checkpoint would silently load the built-in class (`processor_class` lookup in transformers'
`models/auto/processing_auto.py`).

The templates render no leading BOS: the tokenizer adds it, as the original did, so `processor(text=rendered)` and
`apply_chat_template(..., tokenize=True)` give the same ids with exactly one BOS (a template that wrote `<s>` itself
would get a second one from every caller that tokenizes the rendered text, the pipeline included).
"""

from pathlib import Path

from PIL import Image
from transformers.processing_utils import MultiModalData, ProcessorMixin

from .image_processing_llava import LlavaHfImageProcessor, to_rgb

CHAT_TEMPLATE_DIR = Path(__file__).parent / "chat_templates"
CHAT_TEMPLATE_NAMES = tuple(sorted(path.stem for path in CHAT_TEMPLATE_DIR.glob("*.jinja")))
DEFAULT_CHAT_TEMPLATE = "vicuna_v1"


def get_chat_template(name: str) -> str:
    """The Jinja source of one of LLaVA's conversation templates (`vicuna_v1`, `plain`, ...), by name."""
    path = CHAT_TEMPLATE_DIR / f"{name}.jinja"
    if not path.is_file():
        raise ValueError(f"unknown chat template {name!r}; choose one of {', '.join(CHAT_TEMPLATE_NAMES)}.")
    return path.read_text()


def resolve_chat_template(template: str | None) -> str | None:
    """The one rule for every `chat_template` setting (processor, collator, training, `data check`, `evaluate`): a name
    from `CHAT_TEMPLATE_NAMES`, a path to a `.jinja` file (read), or Jinja source (used as is). None stays None."""
    if template is None or template in CHAT_TEMPLATE_NAMES:
        return get_chat_template(template) if template else None
    if "{" not in template and Path(template).expanduser().is_file():
        return Path(template).expanduser().read_text()
    if "{" not in template:
        raise ValueError(
            f"chat template {template!r} is neither a template name ({', '.join(CHAT_TEMPLATE_NAMES)}), nor a Jinja "
            "file that exists, nor Jinja source."
        )
    return template


def _map_images(images, function):
    """Apply `function` to every PIL image in a (possibly nested) list, keeping the nesting."""
    if isinstance(images, Image.Image):
        return function(images)
    if isinstance(images, (list, tuple)):
        return [_map_images(item, function) for item in images]
    return images  # arrays and tensors are taken as already-decoded RGB


class LlavaHfProcessor(ProcessorMixin):
    """Tokenizer + image processor for LLaVA.

    Args:
        image_processor: a CLIP-style image processor (see `build_image_processor`).
        tokenizer: a tokenizer in which `<image>` is a registered special token.
        chat_template: a template name from `CHAT_TEMPLATE_NAMES` (default `vicuna_v1`) or a Jinja string.
        image_seq_length: tokens per image; must equal the model config's `image_seq_length`.
        image_token: the placeholder string users write in prompts.
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        chat_template: str | None = None,
        image_seq_length: int = 576,
        image_token: str = "<image>",
        **kwargs,
    ):
        chat_template = resolve_chat_template(chat_template or DEFAULT_CHAT_TEMPLATE)
        self.image_seq_length = image_seq_length
        self.image_token = getattr(tokenizer, "image_token", None) or image_token
        if self.image_token not in tokenizer.all_special_tokens:
            # Without this the tokenizer splits "<image>" into "<", "image", ">" and the count checks still pass,
            # silently feeding image features into the wrong positions.
            raise ValueError(
                f"{self.image_token!r} is not a special token of this tokenizer; load the tokenizer with it, "
                f"AutoTokenizer.from_pretrained(name_or_path, image_token={self.image_token!r}), and resize the "
                "language model's embeddings to len(tokenizer) (llava_hf.training.build_from_parts does both)."
            )
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        if type(image_processor).__name__ in ("LlavaImageProcessor", "LlavaImageProcessorPil"):
            # transformers' built-in classes, e.g. from a checkpoint saved before LlavaHfImageProcessor existed: with
            # torchvision installed AutoImageProcessor loads the torchvision one, whose bicubic is not the
            # original's. Same settings, the exact (and faster) class.
            image_processor = LlavaHfImageProcessor(**image_processor.to_dict())
        super().__init__(image_processor, tokenizer, chat_template=chat_template, **kwargs)

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        return self.image_token * self.image_seq_length

    def prepare_inputs_layout(self, images=None, text=None, videos=None, audio=None, **kwargs):
        images, text, videos, audio = super().prepare_inputs_layout(images, text, videos, audio, **kwargs)
        if images is not None:
            images = _map_images(images, to_rgb)
        return images, text, videos, audio

    def validate_inputs(self, images=None, text=None, videos=None, audio=None, **kwargs):
        # With one list of images per sample we can say which sample is wrong, not only that the totals differ.
        if (
            isinstance(text, list)
            and isinstance(images, (list, tuple))
            and len(images) == len(text)
            and all(isinstance(sample_images, (list, tuple)) for sample_images in images)
        ):
            for index, (sample_text, sample_images) in enumerate(zip(text, images)):
                placeholders = sample_text.count(self.image_token)
                if placeholders != len(sample_images):
                    raise ValueError(
                        f"sample {index} has {placeholders} {self.image_token} placeholder(s) but {len(sample_images)} "
                        f"image(s); write one {self.image_token} per image in that sample's text."
                    )
        elif isinstance(text, list) and images is not None:
            placeholders = sum(sample_text.count(self.image_token) for sample_text in text)
            flat_count = len(list(_flatten(images)))
            if placeholders != flat_count:
                per_sample = [sample_text.count(self.image_token) for sample_text in text]
                raise ValueError(
                    f"the text has {placeholders} {self.image_token} placeholder(s) ({per_sample} per sample) but "
                    f"{flat_count} image(s) were given; write one {self.image_token} per image, in order."
                )
        elif isinstance(text, list) and images is None:
            for index, sample_text in enumerate(text):
                if self.image_token in sample_text:
                    raise ValueError(
                        f"sample {index} contains {self.image_token} but no images were given; pass images= or "
                        f"remove the placeholder."
                    )
        super().validate_inputs(images=images, text=text, videos=videos, audio=audio, **kwargs)

    def __call__(self, images=None, text=None, videos=None, audio=None, **kwargs):
        """transformers' processor call, with one guard for the way TRL's SFTTrainer encodes samples.

        Without a `data_collator`, TRL's vision collator encodes text+images with `add_special_tokens=False` ("to
        avoid adding the BOS twice") and an explicit `padding_side`; LLaVA's prompts carry no BOS in the text, so the
        model would see none:
        - `padding_side="right"` (TRL's plain `text` datasets): the caller makes labels of every id, the image
          placeholders among them (LLaVA never supervises image positions), so this raises, naming `LlavaCollator`;
        - `padding_side="left"` (TRL's prompt-completion data, whose labels are the completion only): the flag is
          ignored and the tokenizer adds the BOS, as in `apply_chat_template`.
        Calls without an explicit `padding_side`, and text that already starts with the BOS (transformers' own
        pipelines), keep `add_special_tokens=False` as asked.
        """
        padding_side = kwargs.get("padding_side")
        if images is not None and text is not None and kwargs.get("add_special_tokens") is False and padding_side:
            texts = [text] if isinstance(text, str) else list(text)
            bos = self.tokenizer.bos_token
            if any(self.image_token in sample and not (bos and sample.startswith(bos)) for sample in texts):
                if padding_side == "right":
                    raise ValueError(
                        f"encoding text with {self.image_token} and add_special_tokens=False, right-padded, is how "
                        "TRL's SFTTrainer without a data_collator reads a plain 'text' dataset: it would train on the "
                        "image placeholders and without BOS. Train with data_collator=llava_hf.data.LlavaCollator"
                        "(processor) on 'messages' rows, or with SFTConfig(assistant_only_loss=True)."
                    )
                kwargs = {key: value for key, value in kwargs.items() if key != "add_special_tokens"}
        return super().__call__(images=images, text=text, videos=videos, audio=audio, **kwargs)

    def apply_chat_template(self, conversation, chat_template=None, **kwargs):
        """transformers' `apply_chat_template`, with two guards for tokenizing whole conversations (training data).

        - Tokenizing a conversation that ends with an answer, without `return_assistant_tokens_mask`, is what TRL's
          default collator does (`SFTTrainer` without `data_collator`): its labels are every token (system prompt,
          questions, the image placeholders). That raises, naming `LlavaCollator`.
        - `processor_kwargs={"add_special_tokens": False}` (TRL passes it, assuming the template writes BOS) is
          ignored: our templates render no BOS, so the tokenizer adds it; a rendered BOS still turns it off (base
          class).
        """
        if kwargs.get("tokenize") and not kwargs.get("return_assistant_tokens_mask"):
            conversations = (
                conversation if conversation and isinstance(conversation[0], (list, tuple)) else [conversation]
            )
            generation = kwargs.get("add_generation_prompt") or kwargs.get("continue_final_message")
            if not generation and any(turns and turns[-1].get("role") == "assistant" for turns in conversations):
                raise ValueError(
                    "tokenizing a whole conversation without return_assistant_tokens_mask=True gives labels on every "
                    "token (system prompt, questions, image placeholders), which is what TRL's SFTTrainer does without "
                    "a data_collator. Train with data_collator=llava_hf.data.LlavaCollator(processor) (LLaVA's "
                    "masking: answers only, BOS, image positions ignored), or set SFTConfig(assistant_only_loss=True)."
                )
        processor_kwargs = kwargs.get("processor_kwargs")
        if kwargs.get("tokenize") and processor_kwargs and processor_kwargs.get("add_special_tokens") is False:
            kwargs["processor_kwargs"] = {
                key: value for key, value in processor_kwargs.items() if key != "add_special_tokens"
            }
        return super().apply_chat_template(conversation, chat_template, **kwargs)

    def _get_num_multimodal_tokens(self, image_sizes=None, **kwargs) -> MultiModalData:
        """Placeholder tokens per image for images of `image_sizes` ((height, width) each), without processing them.

        The hook vLLM's Transformers backend calls to size image placeholders (transformers' built-in processors have
        it too). LLaVA pads or resizes every image to one square, so each costs `image_seq_length` tokens, one patch.
        """
        if image_sizes is None:
            return MultiModalData()
        return MultiModalData(
            num_image_tokens=[self.image_seq_length] * len(image_sizes), num_image_patches=[1] * len(image_sizes)
        )

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values"]


def _flatten(images):
    if isinstance(images, (list, tuple)):
        for item in images:
            yield from _flatten(item)
    else:
        yield images


__all__ = [
    "LlavaHfProcessor",
    "get_chat_template",
    "resolve_chat_template",
    "CHAT_TEMPLATE_NAMES",
    "DEFAULT_CHAT_TEMPLATE",
]

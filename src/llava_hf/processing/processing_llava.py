"""`LlavaHfProcessor`: tokenizer + image processor + LLaVA chat templates.

Each `<image>` placeholder in the text becomes `image_seq_length` copies of the image token (576 for CLIP-L/336),
the positions the model fills with projected image features. Counts are checked per sample before anything is
tokenized, and transformers' own check after tokenization refuses a truncation that cut an image's tokens.
The class is not called `LlavaProcessor`: transformers resolves `processor_class` names to its built-ins first
(`processor_class` lookup in transformers' `models/auto/processing_auto.py`), so a folder in the llava_hf format
would silently load the built-in class.

On disk the processor is transformers' own `LlavaProcessor` (`processor_class: "LlavaProcessor"`, image processor
`LlavaImageProcessor`) with the `patch_size`, `vision_feature_select_strategy` and `num_additional_image_tokens` from
which the built-in computes exactly `image_seq_length` tokens per image, so plain transformers loads it; loading
either format back into this class restores our exact image processor. Only a processor that ships with its code
(`register_for_auto_class`, for `trust_remote_code`) is saved as itself.

The templates render no leading BOS: the tokenizer adds it, as the original did, so `processor(text=rendered)` and
`apply_chat_template(..., tokenize=True)` give the same ids with exactly one BOS (a template that wrote `<s>` itself
would get a second one from every caller that tokenizes the rendered text, the pipeline included).
"""

import math
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


class _SavedChatTemplate(str):
    """A chat template read back from a saved processor ("" for none): taken as it is, never resolved."""


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
        patch_size, vision_feature_select_strategy, num_additional_image_tokens: the vision tower's patch size, the
            model's feature selection and the tower's extra tokens (1 for CLIP's CLS), as transformers'
            `LlavaProcessor` takes them to count `image_seq_length`; derived from `image_seq_length` when not given.
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        chat_template: str | None = None,
        image_seq_length: int | None = None,
        image_token: str = "<image>",
        patch_size: int | None = None,
        vision_feature_select_strategy: str | None = None,
        num_additional_image_tokens: int | None = None,
        **kwargs,
    ):
        if isinstance(chat_template, _SavedChatTemplate):
            chat_template = str(chat_template) or None
        elif not isinstance(chat_template, dict):
            chat_template = resolve_chat_template(chat_template or DEFAULT_CHAT_TEMPLATE)
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
            # transformers' built-in classes, as a folder in the built-in format (what we save) holds: with
            # torchvision installed AutoImageProcessor loads the torchvision one, whose bicubic is not the
            # original's. Same settings, the exact (and faster) class.
            image_processor = LlavaHfImageProcessor(**image_processor.to_dict())
        super().__init__(image_processor, tokenizer, chat_template=chat_template, **kwargs)
        (
            self.image_seq_length,
            self.patch_size,
            self.vision_feature_select_strategy,
            self.num_additional_image_tokens,
        ) = _image_token_settings(
            self.image_processor,
            image_seq_length,
            patch_size,
            vision_feature_select_strategy,
            num_additional_image_tokens,
        )

    @classmethod
    def from_dict(cls, processor_dict: dict, **kwargs):
        # A saved chat template is state, restored verbatim (any string, even one that looks like a template name or a
        # path); only a `chat_template=` the caller passes goes through the name/file resolution of `__init__`.
        saved = processor_dict.get("chat_template")
        if "chat_template" not in kwargs and not isinstance(saved, dict):
            processor_dict = {**processor_dict, "chat_template": _SavedChatTemplate(saved or "")}
        return super().from_dict(processor_dict, **kwargs)

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        """Saves transformers' built-in `LlavaProcessor` + `LlavaImageProcessor` (same tokenizer, template and
        settings), which expand `<image>` to the same `image_seq_length` tokens; saves this class itself when its code
        ships with the checkpoint (`register_for_auto_class`) or the built-in cannot count its tokens."""
        builtin = self.to_builtin() if self._auto_class is None and self.patch_size is not None else None
        if builtin is None:
            return super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        return builtin.save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)

    def to_builtin(self):
        """This processor as transformers' built-in `LlavaProcessor` with the PIL `LlavaImageProcessor`.

        Same numbers for RGB and greyscale images; the built-in composites an alpha channel over white (LLaVA drops
        it), clips 16-bit greyscale and ignores EXIF orientation, where `to_rgb` scales and rotates.
        """
        from transformers import LlavaImageProcessorPil
        from transformers import LlavaProcessor as BuiltinLlavaProcessor

        if self.patch_size is None:
            raise ValueError(
                f"image_seq_length={self.image_seq_length} is not a square number of patches (+1 for a CLS token) of "
                "the image processor's crop size, which is all transformers' LlavaProcessor can count."
            )
        return self.as_builtin(BuiltinLlavaProcessor, LlavaImageProcessorPil)

    def as_builtin(self, processor_class: type, image_processor_class: type):
        """This processor's tokenizer, template and image-token settings in transformers' `processor_class`, with the
        image processor's settings in `image_processor_class` (a built-in pair: LlavaProcessor, LlavaNextProcessor)."""
        settings = {k: v for k, v in self.image_processor.to_dict().items() if k != "image_processor_type"}
        return processor_class(
            image_processor=image_processor_class(**settings),
            tokenizer=self.tokenizer,
            patch_size=self.patch_size,
            vision_feature_select_strategy=self.vision_feature_select_strategy,
            num_additional_image_tokens=self.num_additional_image_tokens,
            chat_template=self.chat_template,
            image_token=self.image_token,
        )

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


def _crop_size(image_processor) -> tuple[int, int]:
    """(height, width) of the pixel_values the image processor returns (its crop, LLaVA always crops)."""
    crop = image_processor.crop_size
    crop = crop if isinstance(crop, dict) else vars(crop)
    return crop["height"], crop["width"]


def _image_token_settings(image_processor, image_seq_length, patch_size, strategy, num_additional):
    """(image_seq_length, patch_size, vision_feature_select_strategy, num_additional_image_tokens), consistent.

    transformers' `LlavaProcessor` counts `(height // patch_size) * (width // patch_size) + num_additional_image_tokens`
    tokens per image, minus one for the "default" strategy (the CLS token it drops). Given the patch settings (a
    built-in processor being loaded, or a caller that knows the model), `image_seq_length` follows or is checked;
    given only `image_seq_length` (576 by default), the settings are the CLIP ones that count it: n x n patches of
    the crop for "default" (CLS dropped), n x n + 1 for "full". A length no such square explains gets no patch
    settings (saved as this class only).
    """
    height, width = _crop_size(image_processor)
    if patch_size is not None:
        strategy = strategy or "default"
        num_additional = 0 if num_additional is None else num_additional
        counted = (height // patch_size) * (width // patch_size) + num_additional - (strategy == "default")
        if image_seq_length is not None and image_seq_length != counted:
            raise ValueError(
                f"image_seq_length={image_seq_length} disagrees with patch_size={patch_size}, "
                f"vision_feature_select_strategy={strategy!r}, num_additional_image_tokens={num_additional} on "
                f"{height}x{width} crops ({counted} tokens per image); pass the model config's values."
            )
        return counted, patch_size, strategy, num_additional
    image_seq_length = 576 if image_seq_length is None else image_seq_length
    for strategy, patches in (("default", image_seq_length), ("full", image_seq_length - 1)):
        side = math.isqrt(max(patches, 0))
        if side and side * side == patches and height == width and height % side == 0:
            return image_seq_length, height // side, strategy, 1
    return image_seq_length, None, None, None


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

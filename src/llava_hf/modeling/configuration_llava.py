"""`LlavaHfConfig`: a CLIP/SigLIP vision tower, a projector and a causal LM, as one `PreTrainedConfig` dataclass.

The field names follow transformers' built-in `LlavaConfig` so checkpoints move between the two. In memory the
`model_type` is our own ("llava_hf"): "llava" belongs to transformers (registering it again would hijack the built-in).
On disk, a config the built-in can express (an `mlp2x_gelu` projector: the built-in always builds Linear, act, Linear)
is saved as the built-in's own `config.json` (`model_type: "llava"`, `LlavaForConditionalGeneration`), so plain
transformers loads it without llava_hf; `from_pretrained` reads that format back into this class. Configs the built-in
cannot express (linear, identity, deeper projectors) keep `model_type: "llava_hf"`.
"""

import re
from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

# `mlp{N}x_gelu` is LLaVA's name for Linear followed by N-1 x [GELU, Linear] (LLaVA-1.5 uses N=2).
PROJECTOR_TYPE_PATTERN = re.compile(r"^(linear|identity|mlp([1-9][0-9]*)x_gelu)$")

# Vision towers whose hidden states start with a CLS token. "default" feature selection drops that token (LLaVA's
# "patch"), which would silently drop a real patch on towers without one (SigLIP).
VISION_TOWERS_WITH_CLS_TOKEN = ("clip_vision_model", "clip")

# The one projector transformers' built-in `LlavaMultiModalProjector` builds (Linear, act, Linear).
BUILTIN_PROJECTOR_TYPE = "mlp2x_gelu"
# Our class names <-> the built-in's, as written in `architectures`.
BUILTIN_ARCHITECTURES = {
    "LlavaHfForConditionalGeneration": "LlavaForConditionalGeneration",
    "LlavaHfModel": "LlavaModel",
}


def from_builtin_config_dict(config_dict: dict) -> dict:
    """A built-in `llava` config.json dict as a `llava_hf` one (the built-in's projector is always mlp2x_gelu)."""
    if config_dict.get("model_type") != "llava":
        return config_dict
    ours = {builtin: name for name, builtin in BUILTIN_ARCHITECTURES.items()}
    config_dict = {**config_dict, "model_type": LlavaHfConfig.model_type, "projector_type": BUILTIN_PROJECTOR_TYPE}
    if config_dict.get("architectures"):
        config_dict["architectures"] = [ours.get(name, name) for name in config_dict["architectures"]]
    return config_dict


@strict
class LlavaHfConfig(PreTrainedConfig):
    """Configuration of a LLaVA model.

    Args:
        vision_config: config of the vision tower (any transformers vision model; CLIP-L/14-336 by default).
        text_config: config of the causal language model (Llama by default; Mistral, Qwen2, ... work too).
        image_token_index: id of the `<image>` token whose positions receive the image features.
        image_seq_length: number of tokens one image occupies; derived from the vision config (576 for 336 px and
            patch 14 with the CLS token dropped), stored so processors and serving engines can read it.
        projector_type: `linear`, `mlp{N}x_gelu` (Linear then N-1 x [GELU, Linear]) or `identity`.
        projector_hidden_act: activation between projector layers (LLaVA: gelu).
        vision_feature_select_strategy: "default" drops the CLS token (LLaVA's "patch"), "full" keeps it ("cls_patch").
        vision_feature_layer: hidden-state index of the vision tower to use (LLaVA: -2, the penultimate layer), or a
            list of indices whose features are concatenated.
        multimodal_projector_bias: whether the projector's linear layers have a bias.
        image_aspect_ratio: "pad" (LLaVA-1.5: pad to a square with the mean colour first) or "square" (plain CLIP).
        tie_word_embeddings: tie `lm_head` to the input embeddings (lifted from `text_config` when set there).
    """

    model_type = "llava_hf"
    attribute_map = {"image_token_id": "image_token_index"}
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(
            config_class=AutoConfig,
            model_type="clip_vision_model",
            init_kwargs={  # openai/clip-vit-large-patch14-336, LLaVA-1.5's vision tower
                "intermediate_size": 4096,
                "hidden_size": 1024,
                "patch_size": 14,
                "image_size": 336,
                "num_hidden_layers": 24,
                "num_attention_heads": 16,
                "projection_dim": 768,
            },
        ),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    image_token_index: int = 32000
    image_seq_length: int | None = None
    projector_type: str = "mlp2x_gelu"
    projector_hidden_act: str = "gelu"
    vision_feature_select_strategy: Literal["default", "full"] = "default"
    vision_feature_layer: int | list[int] = -2
    multimodal_projector_bias: bool = True
    image_aspect_ratio: Literal["pad", "square"] = "pad"
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.text_config.tie_word_embeddings and not self.tie_word_embeddings:
            self.tie_word_embeddings = True  # transformers decides tying on the top-level flag only

        if not PROJECTOR_TYPE_PATTERN.match(self.projector_type):
            raise ValueError(
                f"projector_type={self.projector_type!r} is not supported; use 'linear', 'identity' or "
                "'mlp{N}x_gelu' with N >= 1 (LLaVA-1.5 uses 'mlp2x_gelu')."
            )

        layers = (
            [self.vision_feature_layer] if isinstance(self.vision_feature_layer, int) else self.vision_feature_layer
        )
        num_hidden_states = self.vision_config.num_hidden_layers + 1  # the embeddings output is hidden state 0
        if not layers:
            raise ValueError(
                "vision_feature_layer is an empty list; give one layer index such as -2 or a non-empty list."
            )
        for layer in layers:
            if not -num_hidden_states <= layer < num_hidden_states:
                raise ValueError(
                    f"vision_feature_layer {layer} is out of range: the vision tower has {num_hidden_states} hidden "
                    f"states (indices {-num_hidden_states}..{num_hidden_states - 1}); LLaVA uses -2."
                )

        has_cls = self.vision_config.model_type in VISION_TOWERS_WITH_CLS_TOKEN
        if self.vision_feature_select_strategy == "default" and not has_cls:
            raise ValueError(
                f"vision_feature_select_strategy='default' drops a CLS token, but the {self.vision_config.model_type} "
                "vision tower has none; use vision_feature_select_strategy='full'."
            )

        if self.projector_type == "identity" and self.projector_input_size != self.text_config.hidden_size:
            raise ValueError(
                f"projector_type='identity' needs the vision feature size ({self.projector_input_size}) to equal the "
                f"language model's hidden size ({self.text_config.hidden_size}); use 'linear' or 'mlp2x_gelu'."
            )

        patches_per_side = self.vision_config.image_size // self.vision_config.patch_size
        derived_length = patches_per_side**2 + (1 if has_cls and self.vision_feature_select_strategy == "full" else 0)
        if self.image_seq_length is not None and self.image_seq_length != derived_length:
            raise ValueError(
                f"image_seq_length={self.image_seq_length} disagrees with the vision tower, which yields "
                f"{derived_length} features per image ({patches_per_side}x{patches_per_side} patches, strategy "
                f"{self.vision_feature_select_strategy!r}); leave image_seq_length unset to derive it."
            )
        self.image_seq_length = derived_length

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs):
        # A folder saved in the built-in format reads as ours before transformers compares model types.
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        return from_builtin_config_dict(config_dict), kwargs

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        return super().from_dict(from_builtin_config_dict(config_dict), **kwargs)

    @property
    def builtin_expressible(self) -> bool:
        """Whether transformers' built-in `LlavaConfig`/`LlavaForConditionalGeneration` describe this model exactly.

        The built-in composes any vision tower and language model with `AutoModel.from_config`, selects features like
        ours (layer or list of layers, CLS dropped for "default") and always builds Linear, act, Linear: only the
        projector can be out of its reach. (`image_aspect_ratio` is the image processor's `do_pad`.)
        """
        return self.projector_type == BUILTIN_PROJECTOR_TYPE

    @property
    def num_additional_image_tokens(self) -> int:
        """Tokens the vision tower adds to its patches (CLIP's CLS token), as transformers' `LlavaProcessor` counts."""
        return 1 if self.vision_config.model_type in VISION_TOWERS_WITH_CLS_TOKEN else 0

    @property
    def image_token_settings(self) -> dict:
        """The processor settings that count `image_seq_length` tokens per image the way transformers' `LlavaProcessor`
        does: `LlavaHfProcessor(image_processor, tokenizer, **config.image_token_settings)`."""
        return {
            "image_seq_length": self.image_seq_length,
            "patch_size": self.vision_config.patch_size,
            "vision_feature_select_strategy": self.vision_feature_select_strategy,
            "num_additional_image_tokens": self.num_additional_image_tokens,
        }

    def to_builtin(self):
        """This config as transformers' built-in `LlavaConfig` (same fields; ValueError if it cannot express it)."""
        from transformers import LlavaConfig

        if not self.builtin_expressible:
            raise ValueError(
                f"projector_type={self.projector_type!r} cannot be represented by transformers' "
                "LlavaForConditionalGeneration, which always builds Linear -> act -> Linear (mlp2x_gelu)."
            )
        fields = self.to_dict()
        # `auto_map` would point at llava_hf code (a folder once shipped with it) that the built-in format never needs
        for name in ("model_type", "projector_type", "transformers_version", "auto_map"):
            fields.pop(name, None)
        if fields.get("architectures"):
            fields["architectures"] = [BUILTIN_ARCHITECTURES.get(name, name) for name in fields["architectures"]]
        return LlavaConfig(**fields)

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        """Writes the built-in `llava` config.json when the built-in can express this model (see the module docstring),
        unless the code ships with the checkpoint (`register_for_auto_class`, for `trust_remote_code`)."""
        if self.builtin_expressible and self._auto_class is None:
            return self.to_builtin().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        return super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)

    @property
    def projector_input_size(self) -> int:
        """Width of the vision features fed to the projector (several selected layers are concatenated)."""
        num_layers = 1 if isinstance(self.vision_feature_layer, int) else len(self.vision_feature_layer)
        return self.vision_config.hidden_size * num_layers

    @property
    def projector_depth(self) -> int:
        """Number of Linear layers in the projector (0 for identity)."""
        if self.projector_type == "identity":
            return 0
        if self.projector_type == "linear":
            return 1
        return int(PROJECTOR_TYPE_PATTERN.match(self.projector_type).group(2))


__all__ = ["LlavaHfConfig"]

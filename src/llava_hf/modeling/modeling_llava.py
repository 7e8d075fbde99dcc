"""LLaVA (Liu et al. 2023, arXiv 2304.08485): a vision tower, a projector and a causal LM, top to bottom.

    image -> vision tower hidden state `vision_feature_layer` (-2) -> drop CLS ("default") -> projector
          -> spliced into the LM's input embeddings at the `<image>` token positions -> causal LM -> lm_head

Reads like transformers' built-in `models/llava/modeling_llava.py` and keeps its module names, so the same weights
load in both (see `llava_hf/__init__.py` for the on-disk key mapping). What differs: any `mlp{N}x_gelu`/linear/identity
projector, a per-sample image-token check, and a vision tower that is frozen unless the user unfreezes it.
"""

import re

import torch
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.modeling_outputs import MultimodalBaseModelOutputWithPast, MultimodalCausalLMOutputWithPast

from .configuration_llava import LlavaHfConfig

# On disk, checkpoints use transformers' built-in llava key layout, so either class loads the other's weights; in
# memory the names are the built-in's too. `llava_hf/__init__.py` registers this mapping for `from_pretrained` /
# `save_pretrained`; `LlavaHfForConditionalGeneration.load_state_dict` applies it to raw state dicts.
CHECKPOINT_KEY_MAPPING = {
    r"^language_model\.lm_head": "lm_head",
    r"^language_model\.model": "model.language_model",
    r"^vision_tower": "model.vision_tower",
    r"^multi_modal_projector": "model.multi_modal_projector",
}


class LlavaHfMultiModalProjector(nn.Module):
    """LLaVA's projector: `linear_1` then (N-1) x [act, `linear_k`]; no layers for "identity".

    Layer names match the built-in `LlavaMultiModalProjector` (`linear_1`, `act`, `linear_2`) for mlp2x_gelu.
    """

    def __init__(self, config: LlavaHfConfig):
        super().__init__()
        self.depth = config.projector_depth
        self.act = ACT2FN[config.projector_hidden_act]
        for index in range(1, self.depth + 1):
            in_features = config.projector_input_size if index == 1 else config.text_config.hidden_size
            layer = nn.Linear(in_features, config.text_config.hidden_size, bias=config.multimodal_projector_bias)
            self.add_module(f"linear_{index}", layer)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        hidden_states = image_features  # [num_images, num_patches, projector_input_size]
        for index in range(1, self.depth + 1):
            if index > 1:
                hidden_states = self.act(hidden_states)
            hidden_states = getattr(self, f"linear_{index}")(hidden_states)
        return hidden_states  # [num_images, num_patches, text_hidden_size]


class LlavaHfPreTrainedModel(PreTrainedModel):
    config_class = LlavaHfConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _can_compile_fullgraph = True
    _supports_attention_backend = True

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        # Loading recreates every parameter with requires_grad=True; put the vision tower back to frozen so a loaded
        # model trains like a freshly built one (LLaVA never trains CLIP unless asked).
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        for module in model.modules():
            if isinstance(module, LlavaHfModel):
                module.vision_tower.requires_grad_(False)
        return loaded


class LlavaHfModel(LlavaHfPreTrainedModel):
    """Vision tower + projector + language model without the LM head; returns `last_hidden_state` (TRL needs it)."""

    def __init__(self, config: LlavaHfConfig):
        super().__init__(config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.multi_modal_projector = LlavaHfMultiModalProjector(config)
        self.language_model = AutoModel.from_config(config.text_config)
        # LLaVA keeps CLIP frozen in both stages (paper §4.2). Training code unfreezes it explicitly when asked.
        self.vision_tower.requires_grad_(False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module):
        self.language_model.set_input_embeddings(value)

    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
    ) -> torch.Tensor:
        """Projected features of each image: `[num_images, image_seq_length, text_hidden_size]`."""
        layer = self.config.vision_feature_layer if vision_feature_layer is None else vision_feature_layer
        strategy = vision_feature_select_strategy or self.config.vision_feature_select_strategy
        layers = [layer] if isinstance(layer, int) else list(layer)
        # A frozen tower needs no autograd graph: skipping it saves the activations of every vision layer.
        tower_trains = any(parameter.requires_grad for parameter in self.vision_tower.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and tower_trains):
            vision_outputs = self.vision_tower(
                pixel_values.to(self.vision_tower.dtype), output_hidden_states=True, return_dict=True
            )
        selected = [vision_outputs.hidden_states[index] for index in layers]  # each [num_images, 1 + patches, D]
        if strategy == "default":
            selected = [hidden[:, 1:] for hidden in selected]  # LLaVA's "patch": the CLS token is not an image patch
        return self.multi_modal_projector(torch.cat(selected, dim=-1))

    def get_placeholder_mask(
        self, input_ids: torch.LongTensor | None, inputs_embeds: torch.Tensor, image_features: torch.Tensor
    ) -> torch.Tensor:
        """Boolean `[B, T]` mask of image-token positions, checked against the features computed for the batch."""
        if input_ids is None:
            image_embedding = self.get_input_embeddings()(
                torch.tensor(self.config.image_token_id, device=inputs_embeds.device)
            )
            mask = (inputs_embeds == image_embedding).all(-1)
        else:
            mask = input_ids == self.config.image_token_id
        num_images, features_per_image = image_features.shape[:2]
        tokens_per_sample = mask.sum(-1).tolist()
        if sum(tokens_per_sample) != num_images * features_per_image:
            detail = next(
                (
                    f"sample {index} has {count} image tokens, not a multiple of {features_per_image}"
                    for index, count in enumerate(tokens_per_sample)
                    if count % features_per_image
                ),
                f"the batch has {sum(tokens_per_sample)} image tokens in all ({tokens_per_sample} per sample)",
            )
            raise ValueError(
                f"Image features and image tokens do not match: {detail}, but {num_images} image(s) x "
                f"{features_per_image} = {num_images * features_per_image} image features were computed. Build inputs "
                "with LlavaHfProcessor (one <image> per image, expanded to image_seq_length tokens) and make sure "
                "truncation (max_length) does not cut an image's tokens."
            )
        return mask

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        **kwargs,
    ) -> MultimodalBaseModelOutputWithPast:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)  # [B, T, D]

        # Decode steps carry no pixel_values (generate drops them after prefill), so this path stays compilable.
        if pixel_values is not None and pixel_values.shape[0] > 0:
            image_features = self.get_image_features(pixel_values, vision_feature_layer, vision_feature_select_strategy)
            mask = self.get_placeholder_mask(input_ids, inputs_embeds, image_features)
            image_features = image_features.reshape(-1, inputs_embeds.shape[-1]).to(inputs_embeds)
            inputs_embeds = inputs_embeds.masked_scatter(mask.unsqueeze(-1).expand_as(inputs_embeds), image_features)

        outputs = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            **kwargs,
        )
        return MultimodalBaseModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


class LlavaHfForConditionalGeneration(LlavaHfPreTrainedModel, GenerationMixin):
    """LLaVA with the LM head: `forward` returns logits (and the shifted cross-entropy on `labels`, -100 ignored)."""

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}

    def __init__(self, config: LlavaHfConfig):
        super().__init__(config)
        self.model = LlavaHfModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module):
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Module):
        self.lm_head = new_embeddings

    def get_image_features(self, pixel_values: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.model.get_image_features(pixel_values, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # A raw state dict read from one of our checkpoint files (Trainer's resume does exactly this) carries the
        # on-disk names; without renaming, `strict=False` would match no key and silently load nothing.
        renamed = {}
        for key, value in state_dict.items():
            for pattern, replacement in CHECKPOINT_KEY_MAPPING.items():
                key, count = re.subn(pattern, replacement, key)
                if count:
                    break
            renamed[key] = value
        return super().load_state_dict(renamed, strict=strict, assign=assign)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        **kwargs,
    ) -> MultimodalCausalLMOutputWithPast:
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            vision_feature_layer=vision_feature_layer,
            vision_feature_select_strategy=vision_feature_select_strategy,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state  # [B, T, D]
        # generate() asks for the last position only (logits_to_keep=1): no [B, T, vocab] tensor during decoding.
        kept = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, kept, :])

        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        return MultimodalCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


__all__ = [
    "CHECKPOINT_KEY_MAPPING",
    "LlavaHfForConditionalGeneration",
    "LlavaHfModel",
    "LlavaHfPreTrainedModel",
    "LlavaHfMultiModalProjector",
]

"""LLaVA (Liu et al. 2023, arXiv 2304.08485): a vision tower, a projector and a causal LM, top to bottom.

    image -> vision tower hidden state `vision_feature_layer` (-2) -> drop CLS ("default") -> projector
          -> spliced into the LM's input embeddings at the `<image>` token positions -> causal LM -> lm_head

Reads like transformers' built-in `models/llava/modeling_llava.py` and keeps its module names, so the same weights
load in both (see `llava_hf/__init__.py` for the on-disk key mapping). What differs: any `mlp{N}x_gelu`/linear/identity
projector, a per-sample image-token check, and a vision tower that is frozen unless the user unfreezes it.
"""

import re
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    MultimodalBaseModelOutputWithPast,
    MultimodalCausalLMOutputWithPast,
)
from transformers.utils.deprecation import deprecate_kwarg

from .configuration_llava import LlavaHfConfig

# On disk, checkpoints use transformers' built-in llava key layout, so either class loads the other's weights; in
# memory the names are the built-in's too. Two on-disk -> in-memory mappings, chained exactly like transformers' own
# "llava" + "LlavaModel" mappings: the head model's (every rule applies in turn, so `language_model.model.*` first
# becomes `model.language_model.model.*`), then `LlavaHfModel`'s, which drops the LM's inner `model.` level, under the
# head's `model.` or at the top of a `LlavaHfModel` saved alone (the same layout without `lm_head`). Base and head
# checkpoints thus load into either class. `llava_hf/__init__.py` registers both for `from_pretrained` /
# `save_pretrained`; `LlavaHfForConditionalGeneration.load_state_dict` applies them to raw state dicts.
CHECKPOINT_KEY_MAPPING = {
    r"^language_model\.lm_head": "lm_head",
    r"^language_model": "model.language_model",
    r"^vision_tower": "model.vision_tower",
    r"^multi_modal_projector": "model.multi_modal_projector",
}
BASE_MODEL_KEY_MAPPING = {r"^language_model\.model": "language_model"}


@dataclass
class LlavaHfModelOutputWithPast(MultimodalBaseModelOutputWithPast):
    """`last_hidden_state`, `cache`, `hidden_states`, `attentions` of the LM + `image_outputs` of `get_image_features`."""

    @property
    def image_hidden_states(self) -> list[torch.Tensor] | None:
        """The projected features of each image (the name transformers 4 used; `image_outputs.pooler_output`)."""
        return None if self.image_outputs is None else self.image_outputs.pooler_output


@dataclass
class LlavaHfCausalLMOutputWithPast(MultimodalCausalLMOutputWithPast):
    """`loss`, `logits`, `cache`, `hidden_states`, `attentions` + `image_outputs` of `get_image_features`."""

    @property
    def image_hidden_states(self) -> list[torch.Tensor] | None:
        """The projected features of each image (the name transformers 4 used; `image_outputs.pooler_output`)."""
        return None if self.image_outputs is None else self.image_outputs.pooler_output


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

    def initialize_weights(self):
        # transformers initialises each sub-model with its own `_init_weights`, but passes down the root's "custom
        # code" flag, under which a module without parameters of its own (CLIPAttention, CLIPMLP, SigLIP's) counts as
        # done once its Linear children got the generic N(0, 0.02): the towers' own attention/MLP init never ran for
        # weights missing from a checkpoint. The towers are transformers' classes: let each run its own full init first
        # (weights already loaded keep their `_is_hf_initialized` flag and are left alone), then ours (projector).
        for module in self.modules():
            if module is not self and isinstance(module, PreTrainedModel) and not module.is_custom_code():
                module.initialize_weights()
        super().initialize_weights()


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
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple:
        """The vision tower's output with `pooler_output` = the projected features of each image.

        As in transformers' built-in Llava: `pooler_output` is a list with one `[image_seq_length, text_hidden_size]`
        tensor per image; `last_hidden_state` is the tower's `[num_images, 1 + patches, vision_hidden_size]`;
        `hidden_states` / `attentions` are the tower's, returned when asked for (`output_hidden_states=True` /
        `output_attentions=True` or the config flags); `return_dict=False` gives a tuple. Those three come through
        `kwargs`, like the built-in's: generate() hands this method every model kwarg named in its signature (to
        encode images once before prefill) and would take them away from the language model.
        """
        layer = self.config.vision_feature_layer if vision_feature_layer is None else vision_feature_layer
        strategy = vision_feature_select_strategy or self.config.vision_feature_select_strategy
        kwargs.pop("image_sizes", None)  # every image is one square here: its size does not change its features
        return_dict = kwargs.pop("return_dict", None)
        return_dict = self.config.return_dict if return_dict is None else return_dict
        output_hidden_states = kwargs.pop("output_hidden_states", None)
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if kwargs.get("output_attentions") is None:
            kwargs["output_attentions"] = self.config.output_attentions
        layers = [layer] if isinstance(layer, int) else list(layer)
        # A frozen tower needs no autograd graph: skipping it saves the activations of every vision layer.
        tower_trains = any(parameter.requires_grad for parameter in self.vision_tower.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and tower_trains):
            vision_outputs = self.vision_tower(
                pixel_values.to(self.vision_tower.dtype),
                output_hidden_states=True,
                return_dict=True,
                **kwargs,
            )
        selected = [vision_outputs.hidden_states[index] for index in layers]  # each [num_images, 1 + patches, D]
        if strategy == "default":
            selected = [hidden[:, 1:] for hidden in selected]  # LLaVA's "patch": the CLS token is not an image patch
        image_features = self.multi_modal_projector(torch.cat(selected, dim=-1))  # [num_images, seq, text D]
        outputs = BaseModelOutputWithPooling(
            last_hidden_state=vision_outputs.last_hidden_state,
            pooler_output=list(image_features),
            hidden_states=vision_outputs.hidden_states if output_hidden_states else None,
            attentions=vision_outputs.attentions,
        )
        return outputs if return_dict else outputs.to_tuple()

    def get_placeholder_mask(
        self,
        input_ids: torch.LongTensor | None,
        inputs_embeds: torch.Tensor,
        image_features: torch.Tensor | list[torch.Tensor],
    ) -> torch.Tensor:
        """Boolean `[B, T]` mask of image-token positions, checked against the features computed for the batch.

        `image_features` is `[num_images, image_seq_length, D]`, or one `[tokens, D]` tensor per image when images
        cost different numbers of tokens (LLaVA-1.6).
        """
        if input_ids is None:
            image_embedding = self.get_input_embeddings()(
                torch.tensor(self.config.image_token_id, device=inputs_embeds.device)
            )
            mask = (inputs_embeds == image_embedding).all(-1)
        else:
            mask = input_ids == self.config.image_token_id
        lengths = [len(features) for features in image_features]
        tokens_per_sample = mask.sum(-1).tolist()
        if sum(tokens_per_sample) != sum(lengths):
            uniform = len(set(lengths)) == 1
            detail = next(
                (
                    f"sample {index} has {count} image tokens, not a multiple of {lengths[0]}"
                    for index, count in enumerate(tokens_per_sample)
                    if uniform and count % lengths[0]
                ),
                f"the batch has {sum(tokens_per_sample)} image tokens in all ({tokens_per_sample} per sample)",
            )
            computed = f"{len(lengths)} image(s) x {lengths[0]}" if uniform else f"{len(lengths)} image(s) ({lengths})"
            raise ValueError(
                f"Image features and image tokens do not match: {detail}, but {computed} = {sum(lengths)} image "
                "features were computed. Build inputs with the model's processor (one <image> per image, expanded to "
                "that image's token count) and make sure truncation (max_length) does not cut an image's tokens."
            )
        return mask

    # transformers 5 renamed `past_key_values` to `cache`; much code (older TRL/PEFT, lm-eval, hand-written decode loops)
    # still passes the old name, which `**kwargs` would swallow silently. Same decorator and version as the built-in.
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
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
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        image_sizes: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> LlavaHfModelOutputWithPast | tuple:
        """LM hidden states with image features spliced in at the image-token positions.

        `mm_encoder_outputs={"image": get_image_features(...)}` reuses image features computed earlier (as the
        built-in Llava accepts) instead of `pixel_values`; `past_key_values` is accepted as the old name of `cache`.
        `image_sizes` ((height, width) per image) is what AnyRes models need to tile and unpad; LLaVA-1.5 ignores it.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        return_dict = self.config.return_dict if return_dict is None else return_dict
        # The flags default to this config's (the LM and the tower would otherwise read only their sub-configs').
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if output_attentions is None:
            output_attentions = self.config.output_attentions
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)  # [B, T, D]

        if pixel_values is not None and mm_encoder_outputs is not None:
            raise ValueError("Pass pixel_values or mm_encoder_outputs (precomputed get_image_features), not both.")
        # Decode steps carry no pixel_values (generate drops them after prefill), so this path stays compilable.
        image_outputs = (mm_encoder_outputs or {}).get("image")
        if image_outputs is None and pixel_values is not None and pixel_values.shape[0] > 0:
            image_outputs = self.get_image_features(
                pixel_values,
                vision_feature_layer=vision_feature_layer,
                vision_feature_select_strategy=vision_feature_select_strategy,
                output_hidden_states=output_hidden_states,
                output_attentions=output_attentions,
                return_dict=True,
                **({} if image_sizes is None else {"image_sizes": image_sizes}),
            )
        if image_outputs is not None:
            per_image = list(image_outputs.pooler_output)  # one [tokens, D] tensor per image
            mask = self.get_placeholder_mask(input_ids, inputs_embeds, per_image)
            image_features = torch.cat(per_image).to(inputs_embeds)  # [all image tokens, D]
            inputs_embeds = inputs_embeds.masked_scatter(mask.unsqueeze(-1).expand_as(inputs_embeds), image_features)

        outputs = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
            **kwargs,
        )
        output = LlavaHfModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_outputs=image_outputs,
        )
        return output if return_dict else output.to_tuple()


class LlavaHfForConditionalGeneration(LlavaHfPreTrainedModel, GenerationMixin):
    """LLaVA with the LM head: `forward` returns logits (and the shifted cross-entropy on `labels`, -100 ignored)."""

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}
    backbone_class = LlavaHfModel  # the model without head that `self.model` is

    def __init__(self, config: LlavaHfConfig):
        super().__init__(config)
        self.model = self.backbone_class(config)
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

    def get_image_features(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling | tuple:
        return self.model.get_image_features(pixel_values, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # A raw state dict read from one of our checkpoint files (Trainer's resume does exactly this) carries the
        # on-disk names; without renaming, `strict=False` would match no key and silently load nothing.
        prefix = f"{self.base_model_prefix}."
        renamed = {}
        for key, value in state_dict.items():
            for pattern, replacement in CHECKPOINT_KEY_MAPPING.items():
                key = re.sub(pattern, replacement, key, count=1)
            if key.startswith(prefix):
                inner = key.removeprefix(prefix)
                for pattern, replacement in BASE_MODEL_KEY_MAPPING.items():
                    inner = re.sub(pattern, replacement, inner, count=1)
                key = prefix + inner
            renamed[key] = value
        return super().load_state_dict(renamed, strict=strict, assign=assign)

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
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
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        image_sizes: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> LlavaHfCausalLMOutputWithPast | tuple:
        return_dict = self.config.return_dict if return_dict is None else return_dict
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
            mm_encoder_outputs=mm_encoder_outputs,
            image_sizes=image_sizes,
            return_dict=True,
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
        output = LlavaHfCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_outputs=outputs.image_outputs,
        )
        return output if return_dict else output.to_tuple()


__all__ = [
    "CHECKPOINT_KEY_MAPPING",
    "BASE_MODEL_KEY_MAPPING",
    "LlavaHfCausalLMOutputWithPast",
    "LlavaHfForConditionalGeneration",
    "LlavaHfModelOutputWithPast",
    "LlavaHfModel",
    "LlavaHfPreTrainedModel",
    "LlavaHfMultiModalProjector",
]

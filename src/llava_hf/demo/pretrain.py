"""The parts LLaVA starts from, made at toy scale: a tokenizer, a CLIP-style vision tower and a Llama-style LLM.

LLaVA never trains its towers: it takes CLIP ViT-L (pretrained contrastively on image-caption pairs) and Vicuna
(a pretrained, chat-tuned LLM) and only learns to connect them. No weights can be downloaded here, so the demo first
makes its own "pretrained" towers on the shapes world, the same way they were made, only tiny:
- `train_tokenizer`: a byte-level BPE on the world's text, `<image>` registered as a special token;
- `pretrain_clip`: a `CLIPModel` trained with CLIP's contrastive loss on (image, caption) pairs of the train split,
  optionally plus an auxiliary per-cell loss: small linear heads read the tower's penultimate-layer patch features
  of each cell of the world's 3x3 grid and predict that cell's shape and colour (or "empty"), and which cell each
  patch lies in. This is a stand-in for what CLIP ViT-L learns from 400M image-text pairs and the toy captions
  cannot teach: measured with a linear probe, contrastive pretraining alone on these captions trains shape *out* of
  the features, because colour, count and place already tell a batch's captions apart, and it trains out where a
  patch sits too (docs/demo.md). Its vision half becomes the frozen vision tower; the heads
  are dropped;
- `pretrain_language_model`: a `LlamaForCausalLM` trained on the world's text (captions and chat-formatted Q&A),
  standing in for Vicuna. In that text each image is written in a *scene notation* (`scene_text`): one word per
  patch, `<upper left part:red circle>` or `<center:empty>`, standing exactly where LLaVA will put the image's patch
  tokens, each word's embedding started as the sum of parts it shares with the words naming the same row, column,
  colour or shape (`init_scene_embeddings`). So
  the LLM has words for what an image can hold before it ever sees one, and stage 1 does what the paper says it
  does, at toy scale: it learns "a compatible visual tokenizer for the frozen LLM" (Section 4.2, stage 1), a projector that
  turns each patch's features into something the LLM reads like the word for that cell;
- `assemble`: a `LlavaHfForConditionalGeneration` with those weights loaded into `model.model.vision_tower`,
  `model.model.language_model` and `lm_head` (the projector stays random: learning it is stage 1), and its processor.

The two pretraining loops are plain PyTorch (AdamW, cosine schedule): they are the towers' own pretraining, not the
LLaVA recipe, which runs through llava_hf's training code.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPTextConfig,
    CLIPVisionConfig,
    LlamaConfig,
    LlamaForCausalLM,
    TokenizersBackend,
    get_cosine_schedule_with_warmup,
)

from ..datagen.rule_teacher import REGION_NAMES
from ..modeling import LlavaHfConfig, LlavaHfForConditionalGeneration
from ..processing import LlavaHfProcessor, build_image_processor, get_chat_template
from .world import COLOURS, SHAPES

# "<pad>" first and "</s>" at id 3: CLIP's text tower treats eos_token_id == 2 as a legacy checkpoint and pools at the
# highest token id instead of at the end-of-text token, which would pool at a random word here.
SPECIAL_TOKENS = ["<pad>", "<unk>", "<s>", "</s>", "<image>"]
# The scene notation of the LLM's pretraining text: one word per cell of the world's 3x3 grid, saying which cell it
# is and what is in it ("<upper left part:red circle>", "<center:empty>").
CELL_CONTENTS = ["empty"] + [f"{colour} {shape}" for colour in sorted(COLOURS) for shape in SHAPES]
SCENE_TOKENS = [f"<{region}:{content}>" for region in REGION_NAMES.values() for content in CELL_CONTENTS]


@dataclass
class TowerSizes:
    """Sizes of the toy towers (all tiny: the whole demo runs on a laptop CPU)."""

    image_size: int = 48
    patch_size: int = 16  # 3 x 3 = 9 image tokens, one per cell of the world's grid (LLaVA: 24 x 24 patches)
    vision_hidden_size: int = 64
    vision_layers: int = 4
    text_hidden_size: int = 128
    text_layers: int = 3
    text_heads: int = 4
    vocab_size: int = 1024
    max_positions: int = 320


def train_tokenizer(texts: list[str], vocab_size: int) -> TokenizersBackend:
    """A byte-level BPE tokenizer trained on `texts`, wrapped as a transformers tokenizer with `<s>` prepended,
    `</s>` as end of turn, `<pad>` for padding, `<image>` as the registered image token (tokenizer.image_token) and
    the scene notation's cell words (`SCENE_TOKENS`) as single tokens, which come on top of `vocab_size`."""
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size + len(SCENE_TOKENS),
        special_tokens=SPECIAL_TOKENS + SCENE_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", backend.token_to_id("<s>"))]
    )
    return TokenizersBackend(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
        model_max_length=1024,
    )


def _train(
    model: torch.nn.Module,
    next_loss: Callable[[int], torch.Tensor],
    steps: int,
    learning_rate: float,
    description: str,
    progress: bool,
) -> list[float]:
    """AdamW + 5% warmup + cosine decay for `steps` steps; `next_loss(step)` computes one batch's loss."""
    from tqdm.auto import tqdm

    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(optimizer, max(1, steps // 20), steps)
    model.train()
    losses = []
    bar = tqdm(range(steps), desc=description, unit="step", disable=not progress, leave=False)
    for step in bar:
        loss = next_loss(step)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return losses


def _batches(count: int, batch_size: int, seed: int) -> Iterator[list[int]]:
    """Endless shuffled batches of indices into `count` items, epoch after epoch, from `seed`."""
    rng = random.Random(seed)
    while True:
        order = list(range(count))
        rng.shuffle(order)
        for start in range(0, count - batch_size + 1, batch_size):
            yield order[start : start + batch_size]


def pretrain_clip(
    pixel_values: torch.Tensor,
    captions: list[list[str]],
    tokenizer: TokenizersBackend,
    sizes: TowerSizes,
    steps: int,
    batch_size: int,
    seed: int,
    device: str = "cpu",
    learning_rate: float = 2e-3,
    progress: bool = True,
    hard_negatives: bool = False,
    cell_labels: torch.Tensor | None = None,
    cell_loss_weight: float = 0.0,
    contrastive: bool = True,
) -> tuple[CLIPModel, list[float]]:
    """Contrastive pretraining (CLIP's symmetric InfoNCE over in-batch pairs): image i with one of its captions.

    Args:
        pixel_values: `[N, 3, image_size, image_size]`, preprocessed like LLaVA's processor will feed the tower.
        captions: per image, its captions; each step pairs every image with one of them at random.
        cell_labels: `[N, 9, 2]` from `cell_labels`, the targets of the auxiliary per-cell heads.
        cell_loss_weight: weight of the per-cell loss added to the contrastive one (0: plain CLIP). Needs the patch
            grid aligned to the 3x3 cells (image_size / patch_size a multiple of 3).
        contrastive: False trains the tower with the per-cell loss only (no text tower in the loss).
    Returns the trained `CLIPModel` (its `vision_model` is the LLaVA vision tower) and the loss per step.
    """
    torch.manual_seed(seed)
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=96,
        projection_dim=64,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    vision_config = CLIPVisionConfig(
        hidden_size=sizes.vision_hidden_size,
        intermediate_size=2 * sizes.vision_hidden_size,
        num_hidden_layers=sizes.vision_layers,
        num_attention_heads=4,
        image_size=sizes.image_size,
        patch_size=sizes.patch_size,
        projection_dim=64,
    )
    model = CLIPModel(CLIPConfig(text_config=text_config, vision_config=vision_config)).to(device)
    cell_heads = None
    if cell_loss_weight > 0:
        cell_heads = CellHeads(sizes.vision_hidden_size, sizes.image_size // sizes.patch_size).to(device)
        model.add_module("cell_heads", cell_heads)
    # Every caption ends with </s>: CLIP's text tower pools the hidden state at the end-of-text token.
    encoded = [
        tokenizer([text + tokenizer.eos_token for text in image_captions], add_special_tokens=True)["input_ids"]
        for image_captions in captions
    ]
    longest = max(len(ids) for image_ids in encoded for ids in image_ids)
    if longest > text_config.max_position_embeddings:
        raise ValueError(f"a caption has {longest} tokens, more than the CLIP text tower's 96 positions.")
    rng = random.Random(seed)
    batches = _batches(len(captions), min(batch_size, len(captions)), seed)

    def next_loss(step: int) -> torch.Tensor:
        indices = next(batches)
        picked = [rng.randrange(len(encoded[index])) for index in indices]
        ids = [encoded[index][choice] for index, choice in zip(indices, picked)]
        if hard_negatives:
            negatives = [swap_one_word(captions[index][choice], rng) for index, choice in zip(indices, picked)]
            ids += tokenizer([text + tokenizer.eos_token for text in negatives])["input_ids"]
        width = max(len(item) for item in ids)
        input_ids = torch.full((len(ids), width), tokenizer.pad_token_id)
        attention_mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, item in enumerate(ids):
            input_ids[row, : len(item)] = torch.tensor(item)
            attention_mask[row, : len(item)] = 1
        if not contrastive:
            hidden = model.vision_model(pixel_values[indices].to(device), output_hidden_states=True).hidden_states
            return cell_heads.loss(hidden[-2], cell_labels[indices].to(device))
        outputs = model(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            pixel_values=pixel_values[indices].to(device),
            return_loss=not hard_negatives,
            output_hidden_states=cell_heads is not None,
        )
        extra = 0.0
        if cell_heads is not None:
            extra = cell_loss_weight * cell_heads.loss(
                outputs.vision_model_output.hidden_states[-2], cell_labels[indices].to(device)
            )
        if not hard_negatives:
            return outputs.loss + extra
        # NegCLIP: each image picks its caption among all true captions and all hard negatives; each true caption
        # picks its image among the batch's images (the negatives describe no image, so they have no row there).
        targets = torch.arange(len(indices), device=device)
        image_loss = torch.nn.functional.cross_entropy(outputs.logits_per_image, targets)
        text_loss = torch.nn.functional.cross_entropy(outputs.logits_per_text[: len(indices)], targets)
        return (image_loss + text_loss) / 2

    losses = _train(model, next_loss, steps, learning_rate, "pretrain vision tower (CLIP)", progress)
    if cell_heads is not None:
        del model.cell_heads
    return model.cpu(), losses


def cell_labels(world_images) -> torch.Tensor:
    """`[N, 9, 2]` targets of the cell heads: per cell (reading order) shape index + 1 and colour index + 1, 0 = empty."""
    colours = sorted(COLOURS)
    labels = torch.zeros(len(world_images), 9, 2, dtype=torch.long)
    for row, world_image in enumerate(world_images):
        for item in world_image.objects:
            cell = 3 * item.cell[0] + item.cell[1]
            labels[row, cell, 0] = SHAPES.index(item.shape) + 1
            labels[row, cell, 1] = colours.index(item.colour) + 1
    return labels


class CellHeads(torch.nn.Module):
    """Auxiliary per-cell prediction heads: the patch features of each cell of the 3x3 grid, averaged, predict that
    cell's shape (or empty) and colour (or empty), and each patch's features predict which cell it lies in."""

    def __init__(self, hidden_size: int, grid: int):
        super().__init__()
        if grid % 3:
            raise ValueError(f"cell heads need the patch grid aligned to the 3x3 cells; got a {grid}x{grid} grid.")
        self.grid = grid
        self.shape = torch.nn.Linear(hidden_size, 5)
        self.colour = torch.nn.Linear(hidden_size, 6)
        self.cell = torch.nn.Linear(hidden_size, 9)
        self.register_buffer("patch_cell", torch.tensor(patch_cells(grid)), persistent=False)  # [grid * grid]

    def loss(self, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        patches = hidden[:, 1:]  # without the class token
        batch, _, width = patches.shape
        k = self.grid // 3
        cells = patches.reshape(batch, 3, k, 3, k, width).mean(dim=(2, 4)).reshape(batch, 9, width)
        shape_loss = torch.nn.functional.cross_entropy(self.shape(cells).reshape(-1, 5), labels[..., 0].reshape(-1))
        colour_loss = torch.nn.functional.cross_entropy(self.colour(cells).reshape(-1, 6), labels[..., 1].reshape(-1))
        # Which cell each patch lies in: ViT features keep where a patch sits (from its position embedding), which
        # the two content losses alone train out, and LLaVA's LLM has nothing else to tell positions by.
        cell_loss = torch.nn.functional.cross_entropy(self.cell(patches).reshape(-1, 9), self.patch_cell.repeat(batch))
        return shape_loss + colour_loss + cell_loss


def patch_cells(grid: int) -> list[int]:
    """The cell of the world's 3x3 grid (3 * row + column) that each patch of a `grid` x `grid` patch grid lies in,
    patches row by row as LLaVA feeds them to the LLM; a patch straddling two cells counts where its centre is."""
    return [
        3 * int((row + 0.5) * 3 / grid) + int((column + 0.5) * 3 / grid)
        for row in range(grid)
        for column in range(grid)
    ]


SWAPPABLE_WORDS = {
    "shape": ("circle", "square", "triangle", "star"),
    "colour": ("red", "green", "blue", "yellow", "purple"),
    "region": tuple(REGION_NAMES.values()),
}
_SWAP_PATTERNS = {kind: re.compile(r"\b(" + "|".join(words) + r")\b") for kind, words in SWAPPABLE_WORDS.items()}


def swap_one_word(caption: str, rng: random.Random) -> str:
    """A hard negative caption (NegCLIP): one shape, colour or region word replaced by another of its kind, so the
    caption no longer matches the image and telling them apart needs that attribute. Shapes are swapped in half the
    cases, because in-batch negatives almost never differ in shape alone."""
    kinds = [kind for kind, pattern in _SWAP_PATTERNS.items() if pattern.search(caption)]
    if not kinds:
        return caption
    weights = [2 if kind == "shape" else 1 for kind in kinds]
    kind = rng.choices(kinds, weights)[0]
    matches = list(_SWAP_PATTERNS[kind].finditer(caption))
    match = rng.choice(matches)
    replacement = rng.choice([word for word in SWAPPABLE_WORDS[kind] if word != match.group(1)])
    return caption[: match.start()] + replacement + caption[match.end() :]


def pretrain_language_model(
    texts: list[str],
    tokenizer: TokenizersBackend,
    sizes: TowerSizes,
    steps: int,
    batch_size: int,
    seed: int,
    device: str = "cpu",
    learning_rate: float = 3e-3,
    progress: bool = True,
) -> tuple[LlamaForCausalLM, list[float]]:
    """Next-token pretraining of a small Llama on `texts` (each already formatted, e.g. by the chat template)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=sizes.text_hidden_size,
        intermediate_size=2 * sizes.text_hidden_size,
        num_hidden_layers=sizes.text_layers,
        num_attention_heads=sizes.text_heads,
        num_key_value_heads=sizes.text_heads,
        max_position_embeddings=sizes.max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,  # LLaVA's LLMs have an untied lm_head
    )
    model = LlamaForCausalLM(config)
    init_scene_embeddings(model, tokenizer)
    model.to(device)
    encoded = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=sizes.max_positions)["input_ids"]
    batches = _batches(len(encoded), min(batch_size, len(encoded)), seed)

    def next_loss(step: int) -> torch.Tensor:
        ids = [encoded[index] for index in next(batches)]
        width = max(len(item) for item in ids)
        input_ids = torch.full((len(ids), width), tokenizer.pad_token_id)
        labels = torch.full((len(ids), width), -100)
        attention_mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, item in enumerate(ids):
            input_ids[row, : len(item)] = torch.tensor(item)
            labels[row, 1 : len(item)] = torch.tensor(item[1:])  # no loss on the leading <s>
            attention_mask[row, : len(item)] = 1
        return model(
            input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), labels=labels.to(device)
        ).loss

    losses = _train(model, next_loss, steps, learning_rate, "pretrain language model", progress)
    return model.cpu(), losses


def scene_text(world_image, grid: int) -> str:
    """The image in the scene notation, one cell word per patch of the vision tower's `grid` x `grid` patch grid in
    the order LLaVA feeds patches to the LLM (row by row): the word of the 3x3 cell the patch lies in."""
    words = {cell: f"<{region}:empty>" for cell, region in REGION_NAMES.items()}
    for item in world_image.objects:
        words[item.cell] = f"<{item.region}:{item.category}>"
    return "".join(words[divmod(cell, 3)] for cell in patch_cells(grid))


def init_scene_embeddings(model: LlamaForCausalLM, tokenizer: TokenizersBackend) -> None:
    """Start each scene word's input embedding as the sum of parts shared with the other words that name the same
    thing: a row part, a column part, a colour part and a shape part ("<upper left part:red circle>" = upper + left
    + red + circle; "empty" has a part of its own), the way new tokens are commonly started from the embeddings of
    the words they stand for; training then moves each row on its own."""
    embeddings = model.get_input_embeddings().weight
    generator = torch.Generator().manual_seed(0)

    def parts(names) -> dict:
        vectors = torch.randn(len(names), embeddings.shape[1], generator=generator) * model.config.initializer_range
        return dict(zip(names, vectors))

    rows, columns = parts(range(3)), parts(range(3))
    contents = parts(["empty"]) | parts(sorted(COLOURS)) | parts(SHAPES)
    with torch.no_grad():
        for (row, column), region in REGION_NAMES.items():
            for content in CELL_CONTENTS:
                token_id = tokenizer.convert_tokens_to_ids(f"<{region}:{content}>")
                embeddings[token_id] = rows[row] + columns[column] + sum(contents[word] for word in content.split())


def language_model_texts(
    records: list[dict],
    captions: list[tuple[str, str]],
    tokenizer: TokenizersBackend,
    scenes: dict[str, str] | None = None,
) -> list[str]:
    """LM pretraining text in the layouts LLaVA will use, so the LLM already knows the chat format (as Vicuna does
    before LLaVA starts): each (image, caption) pair as a stage-1 `plain` sample and each question/answer pair of
    the LLaVA records as a one-turn vicuna_v1 chat. Single turns keep sequences short, which is what makes CPU
    pretraining cheap.

    With `scenes` (image file -> `scene_text`), the image's scene notation stands where LLaVA puts the image tokens,
    so the LLM learns to caption and answer from it; without, the `<image>` placeholder is dropped (an LLM that
    has never seen what it is asked about)."""
    template = get_chat_template("vicuna_v1")

    def image(record_image: str) -> str:
        return scenes[record_image] if scenes is not None else ""

    texts = [tokenizer.bos_token + image(name) + caption + "\n" for name, caption in captions]
    for record in records:
        turns = record["conversations"]
        for question, answer in zip(turns[0::2], turns[1::2]):
            text = question["value"].replace("<image>", "").strip()
            if scenes is not None:
                text = "<image>\n" + text  # every turn sees the scene: single turns are trained apart
            messages = [{"role": "user", "content": text}, {"role": "assistant", "content": answer["value"]}]
            chat = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False)
            texts.append(tokenizer.bos_token + chat.replace("<image>", image(record["image"])))
    return texts


def assemble(
    clip: CLIPModel,
    language_model: LlamaForCausalLM,
    tokenizer: TokenizersBackend,
    vision_feature_layer: int = -2,
    projector_type: str = "mlp2x_gelu",
    seed: int = 0,
) -> tuple[LlavaHfForConditionalGeneration, LlavaHfProcessor]:
    """A LLaVA model made of the pretrained towers plus a fresh projector, and its processor (vicuna_v1 template,
    LLaVA-1.5 "pad" preprocessing at the tower's resolution)."""
    vision_config = clip.vision_model.config
    config = LlavaHfConfig(
        vision_config=vision_config.to_dict(),
        text_config=language_model.config.to_dict(),
        image_token_index=tokenizer.image_token_id,
        projector_type=projector_type,
        vision_feature_layer=vision_feature_layer,
    )
    torch.manual_seed(seed)
    model = LlavaHfForConditionalGeneration(config)
    model.model.vision_tower.load_state_dict(clip.vision_model.state_dict())
    model.model.language_model.load_state_dict(language_model.model.state_dict())
    model.lm_head.load_state_dict(language_model.lm_head.state_dict())
    model.model.vision_tower.requires_grad_(False)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.max_new_tokens = 48
    model.generation_config.do_sample = False
    processor = LlavaHfProcessor(
        image_processor=build_image_processor(vision_config.image_size, "pad"),
        tokenizer=tokenizer,
        chat_template="vicuna_v1",
        **config.image_token_settings,
    )
    return model.eval(), processor


def clip_retrieval_accuracy(clip: CLIPModel, pixel_values: torch.Tensor, captions: list[str], tokenizer) -> float:
    """Share of images whose own caption scores highest among all `captions` (one per image): a quick check that the
    contrastive pretraining learned something (chance = 1 / len(captions))."""
    encoded = tokenizer([text + tokenizer.eos_token for text in captions], padding=True, return_tensors="pt")
    with torch.no_grad():
        outputs = clip(
            input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"], pixel_values=pixel_values
        )
    predicted = outputs.logits_per_image.argmax(-1)
    return float((predicted == torch.arange(len(captions))).float().mean())


def perplexity(losses: list[float], last: int = 20) -> float:
    tail = losses[-last:]
    return math.exp(sum(tail) / len(tail))


__all__ = [
    "SPECIAL_TOKENS",
    "CellHeads",
    "CELL_CONTENTS",
    "SCENE_TOKENS",
    "SWAPPABLE_WORDS",
    "TowerSizes",
    "assemble",
    "cell_labels",
    "clip_retrieval_accuracy",
    "language_model_texts",
    "patch_cells",
    "pretrain_clip",
    "pretrain_language_model",
    "scene_text",
    "swap_one_word",
    "train_tokenizer",
]

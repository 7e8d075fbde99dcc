"""The toy towers: the tokenizer registers <image>, pretraining lowers the losses and is deterministic, and the
assembled LLaVA model carries the pretrained weights with a working processor."""

import random
import re

import pytest
import torch
from PIL import Image

from llava_hf.demo import pretrain
from llava_hf.demo.world import build_world
from llava_hf.processing import build_image_processor

SIZES = pretrain.TowerSizes(
    image_size=48, vision_hidden_size=32, vision_layers=2, text_hidden_size=32, text_layers=2, vocab_size=400
)


def _world_inputs(tmp_path):
    world = build_world(tmp_path, num_train=64, num_test=8, seed=0, image_size=SIZES.image_size)
    images = world.splits["train"]
    captions = [list(image.captions) for image in images]
    pixel_values = build_image_processor(SIZES.image_size, "pad")(
        [world.open(image) for image in images], return_tensors="pt"
    )["pixel_values"]
    return world, captions, pixel_values


def test_tokenizer_has_llava_special_tokens():
    tokenizer = pretrain.train_tokenizer(["A red circle in the center.", "Two shapes: a blue star."] * 20, 300)
    assert tokenizer.image_token == "<image>"
    assert tokenizer.convert_ids_to_tokens(tokenizer.image_token_id) == "<image>"
    assert tokenizer.eos_token_id != 2  # CLIP's text tower treats eos id 2 as a legacy checkpoint
    ids = tokenizer("a red <image> circle")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.image_token_id) == 1


def test_hard_negative_swaps_one_attribute_word_for_another_of_its_kind():
    rng = random.Random(0)
    caption = "Two shapes: a red circle in the upper left part and a blue star in the center."
    kind_of = {word: kind for kind, words in pretrain.SWAPPABLE_WORDS.items() for word in words}
    pattern = re.compile(r"\b(" + "|".join(sorted(kind_of, key=len, reverse=True)) + r")\b")
    skeleton = pattern.sub("#", caption)
    swapped_kinds = []
    for _ in range(200):
        negative = pretrain.swap_one_word(caption, rng)
        assert pattern.sub("#", negative) == skeleton  # only attribute words changed
        changed = [(a, b) for a, b in zip(pattern.findall(caption), pattern.findall(negative)) if a != b]
        assert len(changed) == 1 and kind_of[changed[0][0]] == kind_of[changed[0][1]], negative
        swapped_kinds.append(kind_of[changed[0][0]])
    counts = {kind: swapped_kinds.count(kind) for kind in pretrain.SWAPPABLE_WORDS}
    assert counts["shape"] > counts["colour"] > 0 and counts["region"] > 0  # shapes are swapped most often
    assert pretrain.swap_one_word("Nothing to swap here.", rng) == "Nothing to swap here."


def test_pretraining_learns_and_is_deterministic(tmp_path):
    torch.set_num_threads(1)
    _, captions, pixel_values = _world_inputs(tmp_path)
    flat = [caption for image_captions in captions for caption in image_captions]
    tokenizer = pretrain.train_tokenizer(flat, SIZES.vocab_size)
    runs = []
    for _ in range(2):
        clip, clip_losses = pretrain.pretrain_clip(
            pixel_values, captions, tokenizer, SIZES, steps=30, batch_size=32, seed=5, progress=False
        )
        texts = pretrain.language_model_texts([], [("", caption) for caption in flat], tokenizer)
        language_model, lm_losses = pretrain.pretrain_language_model(
            texts, tokenizer, SIZES, steps=30, batch_size=16, seed=5, progress=False
        )
        runs.append((clip, clip_losses, language_model, lm_losses))
    (clip, clip_losses, language_model, lm_losses), second = runs[0], runs[1]
    assert clip_losses == second[1] and lm_losses == second[3]
    for key, value in language_model.state_dict().items():
        assert torch.equal(value, second[2].state_dict()[key]), key
    assert sum(lm_losses[-5:]) / 5 < 0.8 * sum(lm_losses[:5]) / 5
    assert sum(clip_losses[-5:]) / 5 < sum(clip_losses[:5]) / 5
    _, negative_losses = pretrain.pretrain_clip(
        pixel_values, captions, tokenizer, SIZES, steps=30, batch_size=32, seed=5, progress=False, hard_negatives=True
    )
    # Twice the captions to choose from: the loss starts higher (log 64 vs log 32) and still falls.
    assert sum(negative_losses[:5]) / 5 > sum(clip_losses[:5]) / 5
    assert sum(negative_losses[-5:]) / 5 < sum(negative_losses[:5]) / 5

    model, processor = pretrain.assemble(clip, language_model, tokenizer, vision_feature_layer=-1)
    assert model.config.vision_feature_layer == -1
    assert model.config.image_seq_length == (SIZES.image_size // SIZES.patch_size) ** 2
    assert torch.equal(
        model.model.vision_tower.embeddings.patch_embedding.weight, clip.vision_model.embeddings.patch_embedding.weight
    )
    assert torch.equal(model.lm_head.weight, language_model.lm_head.weight)
    assert not any(parameter.requires_grad for parameter in model.model.vision_tower.parameters())
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    image = Image.new("RGB", (SIZES.image_size, SIZES.image_size), (200, 30, 30))
    inputs = processor(images=image, text=prompt, return_tensors="pt")  # the template has no BOS: the tokenizer adds it
    output = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert output.shape[1] == inputs["input_ids"].shape[1] + 3 or tokenizer.eos_token_id in output[0].tolist()


def test_cell_labels_and_cell_heads_pretraining(tmp_path):
    torch.set_num_threads(1)
    world, captions, pixel_values = _world_inputs(tmp_path)
    images = world.splits["train"]
    labels = pretrain.cell_labels(images)
    assert labels.shape == (len(images), 9, 2)
    for row, world_image in enumerate(images):
        occupied = {3 * item.cell[0] + item.cell[1]: item for item in world_image.objects}
        for cell in range(9):
            shape, colour = labels[row, cell].tolist()
            if cell in occupied:
                assert pretrain.SHAPES[shape - 1] == occupied[cell].shape and shape > 0 and colour > 0
            else:
                assert shape == colour == 0
    tokenizer = pretrain.train_tokenizer([c for image_captions in captions for c in image_captions], SIZES.vocab_size)
    runs = [
        pretrain.pretrain_clip(
            pixel_values, captions, tokenizer, SIZES, steps=30, batch_size=32, seed=5, progress=False,
            cell_labels=labels, cell_loss_weight=1.0, contrastive=False,
        )
        for _ in range(2)
    ]  # fmt: skip
    (clip, losses), (_, again) = runs
    # The heads also ask each patch which cell it lies in (row by row; a 6x6 grid puts 2x2 patches on a cell).
    assert pretrain.patch_cells(3) == list(range(9))
    assert pretrain.patch_cells(6)[:12] == [0, 0, 1, 1, 2, 2] * 2 and pretrain.patch_cells(6)[-1] == 8
    assert pretrain.patch_cells(4)[:4] == [0, 1, 1, 2]  # unaligned grids: the cell of the patch's centre
    heads = pretrain.CellHeads(SIZES.vision_hidden_size, 3)
    hidden = torch.randn(4, 10, SIZES.vision_hidden_size)
    expected = torch.nn.functional.cross_entropy(heads.shape(hidden[:, 1:]).flatten(0, 1), labels[:4, :, 0].flatten())
    expected += torch.nn.functional.cross_entropy(heads.colour(hidden[:, 1:]).flatten(0, 1), labels[:4, :, 1].flatten())
    expected += torch.nn.functional.cross_entropy(heads.cell(hidden[:, 1:]).flatten(0, 1), torch.arange(9).repeat(4))
    assert torch.allclose(heads.loss(hidden, labels[:4]), expected)
    assert losses == again and sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    assert not hasattr(clip, "cell_heads")  # the heads are pretraining-only; the tower is a plain CLIPModel
    unaligned = pretrain.TowerSizes(image_size=64, patch_size=16, vision_hidden_size=32, vision_layers=2)
    with pytest.raises(ValueError, match="aligned to the 3x3 cells"):
        pretrain.pretrain_clip(
            pixel_values, captions, tokenizer, unaligned, steps=1, batch_size=8, seed=0, progress=False,
            cell_labels=labels, cell_loss_weight=1.0,
        )  # fmt: skip


def test_vision_tower_trains_the_same_in_the_worker_process(tmp_path):
    """On a CPU with two cores the demo trains the vision tower in a spawned process beside the LLM: the weights that
    come back are bit for bit those of the same training in this process."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from llava_hf.demo.end_to_end import pretrain_clip_weights

    world, captions, pixel_values = _world_inputs(tmp_path)
    tokenizer = pretrain.train_tokenizer([c for image_captions in captions for c in image_captions], SIZES.vocab_size)
    arguments = dict(
        pixel_values=pixel_values, captions=captions, tokenizer=tokenizer, sizes=SIZES, steps=4, batch_size=16,
        seed=3, progress=False, cell_labels=pretrain.cell_labels(world.splits["train"]), cell_loss_weight=1.0,
    )  # fmt: skip
    config, weights, losses, seconds = pretrain_clip_weights(1, **arguments)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        worker_config, worker_weights, worker_losses, worker_seconds = pool.submit(
            pretrain_clip_weights, 1, **arguments
        ).result()
    assert worker_losses == losses and len(losses) == 4 and seconds > 0 and worker_seconds > 0
    assert worker_config.to_dict() == config.to_dict() and worker_weights.keys() == weights.keys()
    assert all(torch.equal(worker_weights[key], weights[key]) for key in weights)


def test_scene_notation_stands_where_llava_puts_the_image_tokens(tmp_path):
    world, captions, _ = _world_inputs(tmp_path)
    world_image = next(image for image in world.splits["train"] if len(image.objects) >= 2)
    tokenizer = pretrain.train_tokenizer([c for image_captions in captions for c in image_captions], SIZES.vocab_size)
    grid = SIZES.image_size // SIZES.patch_size
    scene = pretrain.scene_text(world_image, grid)
    scene_ids = tokenizer(scene, add_special_tokens=False)["input_ids"]
    assert len(scene_ids) == grid * grid == 9  # one word per patch, each a single token
    words = tokenizer.convert_ids_to_tokens(scene_ids)
    for item in world_image.objects:  # row by row, like the patches: cell (row, column) is word 3 * row + column
        assert words[3 * item.cell[0] + item.cell[1]] == f"<{item.region}:{item.colour} {item.shape}>"
    assert sum(word.endswith(":empty>") for word in words) == 9 - len(world_image.objects)
    # Each scene word starts as the sum of a row, a column, a colour and a shape part (or an "empty" part), each
    # shared with the other words that name the same thing.
    language_model, _ = pretrain.pretrain_language_model(["x"], tokenizer, SIZES, 0, 1, 0, progress=False)
    rows = language_model.get_input_embeddings().weight
    row = {token: rows[tokenizer.convert_tokens_to_ids(token)] for token in pretrain.SCENE_TOKENS}

    def same(first, second) -> bool:
        return torch.allclose(row[first[0]] - row[first[1]], row[second[0]] - row[second[1]], atol=1e-6)

    assert same(
        ("<center:red star>", "<center:blue circle>"), ("<upper left part:red star>", "<upper left part:blue circle>")
    )
    assert same(("<center:red star>", "<center:blue star>"), ("<center:red circle>", "<center:blue circle>"))
    assert same(("<center:red star>", "<center:red circle>"), ("<center:green star>", "<center:green circle>"))
    assert same(
        ("<upper left part:empty>", "<upper right part:empty>"),
        ("<lower left part:red star>", "<lower right part:red star>"),
    )
    assert same(
        ("<upper left part:empty>", "<lower left part:empty>"),
        ("<upper middle part:empty>", "<lower middle part:empty>"),
    )
    assert not same(("<center:red star>", "<center:blue star>"), ("<center:red star>", "<center:green star>"))
    # A 4x4 patch grid (64 px, 16 px patches): each patch takes the word of the cell its centre lies in.
    corners = pretrain.scene_text(world_image, 4).split(">")[:-1]
    assert len(corners) == 16 and corners[0] + ">" == words[0] and corners[15] + ">" == words[8]

    record = {
        "image": world_image.image,
        "conversations": [
            {"from": "human", "value": "<image>\nWhat color is the star?"},
            {"from": "gpt", "value": "Red."},
        ],
    }
    scenes = {world_image.image: scene}
    caption_text, chat_text = pretrain.language_model_texts(
        [record], [(world_image.image, "A red star.")], tokenizer, scenes
    )
    clip, _ = pretrain.pretrain_clip(
        torch.zeros(1, 3, SIZES.image_size, SIZES.image_size), [["x"]], tokenizer, SIZES, 0, 1, 0, progress=False
    )
    language_model, _ = pretrain.pretrain_language_model([chat_text], tokenizer, SIZES, 0, 1, 0, progress=False)
    _, processor = pretrain.assemble(clip, language_model, tokenizer)
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color is the star?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Red."}]},
    ]
    llava_ids = processor(
        images=world.open(world_image), text=processor.apply_chat_template(messages), return_tensors="pt"
    )["input_ids"][0].tolist()
    text_ids = tokenizer(chat_text, add_special_tokens=False)["input_ids"]
    image_positions = [index for index, token in enumerate(llava_ids) if token == tokenizer.image_token_id]
    assert len(text_ids) == len(llava_ids) and len(image_positions) == 9
    assert [text_ids[index] for index in image_positions] == scene_ids
    assert [t for i, t in enumerate(text_ids) if i not in image_positions] == [
        t for i, t in enumerate(llava_ids) if i not in image_positions
    ]
    assert caption_text == tokenizer.bos_token + scene + "A red star.\n"  # stage 1's `plain` layout
    # Without scenes (--scene-pretraining false) the image is simply absent from the text.
    (plain_chat,) = pretrain.language_model_texts([record], [], tokenizer)
    assert ":empty>" not in plain_chat and "What color is the star?" in plain_chat

# python benchmarks/standins/make_mix665k_standin.py [--output /work/standins/mix665k] [--rows 665298] [--seed 0]
"""A stand-in for LLaVA-1.5's stage-2 data, `llava_v1_5_mix665k.json`, with its image folder, for start-up benchmarks.

What it reproduces (the real file is not redistributable here; its layout is documented in LLaVA's
`docs/Finetune_Custom_Data.md` and read by `llava/train/train.py`'s `LazySupervisedDataset`):
- 665,298 records `{"id", "image" (absent for text-only), "conversations": [{"from": "human"|"gpt", "value"}]}`,
  written like the original (a JSON list, two-space indent), about the same size (~1 GB);
- the mix of the LLaVA-1.5 paper (Table 7), each source with its own conversation shape: LLaVA-Instruct
  conversations (multi-turn) / detailed descriptions / complex reasoning, ShareGPT (text-only, 1/16 of the rows, long
  multi-turn), VQAv2, GQA and OCR-VQA (many short answers per image, merged into multi-turn rows), OKVQA, A-OKVQA
  (multiple choice), TextCaps (one caption), RefCOCO and Visual Genome (region descriptions with boxes);
- the image paths of the original folder layout: `coco/train2017/000000xxxxxx.jpg`, `gqa/images/NNNNNNN.jpg`,
  `ocr_vqa/images/NNNNNNNNNN.jpg`, `textvqa/train_images/<16 hex>.jpg`, `vg/VG_100K/N.jpg`, `vg/VG_100K_2/N.jpg`,
  with the original's reuse (a COCO image serves several rows; every other source mostly one row per image).

The images: a pool of a few hundred real files (JPEG, a few PNG) of the sizes each source has (COCO 640x480, book
covers, 1024-px TextVQA photos, ...); every distinct path of the JSON is a symlink into that pool, so the dataset has
as many image files to check as the real one (~380k) while the disk holds only the pool.

Also written: `mix665k_cauldron.parquet`, the same conversations as the_cauldron rows (`images` with the bytes
embedded, `texts`: [{"user", "assistant", "source"}]). Embedding full-size photos for 624k rows would take ~60 GB;
this file embeds small JPEG thumbnails of the pool (a few kB each) instead, so its row count and text are real-size
and its image bytes are not.
"""

import argparse
import io
import json
import os
import random
import time
from pathlib import Path

import numpy as np
from PIL import Image

# source -> (rows in the real mix, image folder or None for text-only); sizes from the LLaVA-1.5 paper's Table 7,
# scaled to the real total of 665,298 rows at the end.
SOURCES = {
    "llava_conversation": (56_681, "coco"),
    "llava_detail": (23_240, "coco"),
    "llava_reasoning": (76_643, "coco"),
    "sharegpt": (40_688, None),
    "vqav2": (82_783, "coco"),
    "gqa": (72_140, "gqa"),
    "okvqa": (8_998, "coco"),
    "ocr_vqa": (80_000, "ocr_vqa"),
    "aokvqa": (66_160, "coco"),
    "textcaps": (21_953, "textvqa"),
    "refcoco": (48_447, "coco"),
    "vg": (86_417, "vg"),
}
REAL_ROWS = 665_298
COCO_IMAGES = 118_287  # train2017; several mix sources share them
# (width, height) choices per folder, the typical sizes of each image collection
SIZES = {
    "coco": [(640, 480), (480, 640), (640, 427), (500, 375), (640, 512)],
    "gqa": [(500, 375), (500, 333), (375, 500), (800, 600)],
    "ocr_vqa": [(300, 475), (333, 500), (260, 400)],
    "textvqa": [(1024, 768), (1024, 683), (768, 1024)],
    "vg": [(800, 600), (500, 333), (800, 533), (600, 800)],
}
POOL_PER_FOLDER = 60  # real files per folder: 300 in all

WORDS = (
    "the a of and to in is that it on for with as was at by this an be from are or which his her their there "
    "image picture man woman person people dog cat car bus train street table food plate room window building sky "
    "water tree trees grass field sign shirt hat white black red blue green yellow brown large small two three "
    "standing sitting holding looking walking riding playing wearing near next behind front left right top side "
    "background scene appears shows visible several some many one other also could would may because while however "
    "likely suggests possibly indicates setting area group color colors object objects between around over under "
    "function variable code example data model python return value list string number error file system question "
    "answer reason step first second then finally important different similar using used make made provide write"
).split()


def words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(max(1, count)))


def sentence_block(rng: random.Random, mean_words: int) -> str:
    """Prose of about `mean_words` words in sentences (answers of the GPT-4 generated sources)."""
    total, sentences = max(3, int(rng.gauss(mean_words, mean_words / 3))), []
    while total > 0:
        length = min(total, rng.randint(8, 25))
        text = words(rng, length)
        sentences.append(text[0].upper() + text[1:] + ".")
        total -= length
    return " ".join(sentences)


def short_question(rng: random.Random) -> str:
    return "What " + words(rng, rng.randint(3, 9)) + "?"


SHORT_SUFFIX = "\nAnswer the question using a single word or phrase."


def conversation_for(source: str, rng: random.Random) -> list[tuple[str, str]]:
    """(question, answer) turns shaped like the given mix source."""
    if source == "llava_conversation":
        return [(short_question(rng), sentence_block(rng, 45)) for _ in range(rng.randint(2, 8))]
    if source == "llava_detail":
        return [("Describe the following image in detail.", sentence_block(rng, 110))]
    if source == "llava_reasoning":
        return [("Why " + words(rng, rng.randint(6, 14)) + "?", sentence_block(rng, 130))]
    if source == "sharegpt":  # long multi-turn chats; their length dominates the file size
        return [(sentence_block(rng, 60), sentence_block(rng, 230)) for _ in range(rng.choice([1, 1, 2, 3, 4, 6, 9]))]
    if source in ("vqav2", "okvqa", "gqa"):
        turns = {"vqav2": (3, 8), "okvqa": (1, 3), "gqa": (4, 12)}[source]
        return [(short_question(rng) + SHORT_SUFFIX, words(rng, rng.randint(1, 2))) for _ in range(rng.randint(*turns))]
    if source == "ocr_vqa":
        questions = ["Who wrote this book?", "What is the title of this book?", "What is the genre of this book?",
                     "Is this a religious book?", "What type of book is this?"]  # fmt: skip
        return [(question, words(rng, rng.randint(1, 6))) for question in rng.sample(questions, rng.randint(3, 5))]
    if source == "aokvqa":
        options = "\n".join(f"{letter}. {words(rng, rng.randint(1, 3))}" for letter in "ABCD")
        question = (
            short_question(rng) + "\n" + options + "\nAnswer with the option's letter from the given choices directly."
        )
        return [(question, rng.choice("ABCD"))]
    if source == "textcaps":
        return [("Provide a one-sentence caption for the provided image.", sentence_block(rng, 14))]
    # refcoco / vg: region descriptions and boxes, many per image
    box = lambda: "[" + ", ".join(f"{rng.random():.2f}" for _ in range(4)) + "]"  # noqa: E731
    turns = (3, 8) if source == "refcoco" else (4, 12)
    if rng.random() < 0.5:
        ask = "Please provide a short description for this region: "
        return [(ask + box(), words(rng, rng.randint(2, 8))) for _ in range(rng.randint(*turns))]
    ask = "Please provide the bounding box coordinate of the region this sentence describes: "
    return [(ask + words(rng, rng.randint(2, 8)) + ".", box()) for _ in range(rng.randint(*turns))]


def image_path_for(folder: str, rng: random.Random, counters: dict) -> str:
    """A path in the original layout; COCO paths are drawn from the 118k train2017 names (shared by many rows)."""
    if folder == "coco":
        return f"coco/train2017/{rng.randrange(COCO_IMAGES) * 3 + 9:012d}.jpg"
    counters[folder] = counters.get(folder, 0) + 1
    number = counters[folder]
    if folder == "gqa":
        return f"gqa/images/{2_300_000 + number * 7}.jpg"
    if folder == "ocr_vqa":
        return f"ocr_vqa/images/{1_000_000_000 + number * 9_973}.jpg"
    if folder == "textvqa":
        return f"textvqa/train_images/{rng.getrandbits(64):016x}.jpg"
    return f"vg/VG_100K/{number}.jpg" if number % 5 else f"vg/VG_100K_2/{number}.jpg"


def make_pool(pool_dir: Path, seed: int) -> dict[str, list[Path]]:
    """`POOL_PER_FOLDER` real image files per folder: smooth colour fields plus noise, so JPEG sizes are photo-like."""
    generator = np.random.default_rng(seed)
    pool = {}
    for folder, sizes in SIZES.items():
        pool[folder] = []
        for index in range(POOL_PER_FOLDER):
            width, height = sizes[index % len(sizes)]
            coarse = generator.integers(0, 256, size=(height // 32 + 2, width // 32 + 2, 3), dtype=np.uint8)
            smooth = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
            noise = generator.normal(0, 12, size=(height, width, 3))
            pixels = np.clip(np.asarray(smooth, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
            image = Image.fromarray(pixels)
            # a few PNGs and greyscale files, as the real folders have
            suffix = ".png" if index % 20 == 7 else ".jpg"
            if index % 15 == 3:
                image = image.convert("L")
            path = pool_dir / folder / f"{index:03d}{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path, quality=90) if suffix == ".jpg" else image.save(path)
            pool[folder].append(path)
    return pool


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default="/work/standins/mix665k")
    parser.add_argument("--rows", type=int, default=REAL_ROWS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no_parquet", action="store_true", help="skip the the_cauldron-style parquet file")
    args = parser.parse_args()
    output = Path(args.output)
    image_folder = output / "images"
    image_folder.mkdir(parents=True, exist_ok=True)
    started = time.time()
    pool = make_pool(output / "pool", args.seed)
    rng = random.Random(args.seed)

    # One source label per row, in the real proportions, shuffled as the released file is.
    scale = args.rows / sum(count for count, _ in SOURCES.values())
    labels = [name for name, (count, _) in SOURCES.items() for _ in range(round(count * scale))]
    labels = (labels + ["vg"] * args.rows)[: args.rows]
    rng.shuffle(labels)

    counters: dict[str, int] = {}
    linked: set[str] = set()
    cauldron = None if args.no_parquet else CauldronWriter(output / "mix665k_cauldron.parquet", pool)
    json_path = output / "llava_v1_5_mix665k.json"
    with open(json_path, "w") as out:
        out.write("[\n")
        for index, source in enumerate(labels):
            folder = SOURCES[source][1]
            turns = conversation_for(source, rng)
            conversations = []
            for position, (question, answer) in enumerate(turns):
                if position == 0 and folder is not None:  # the image tag opens the first question, either side
                    question = "<image>\n" + question if rng.random() < 0.85 else question + "\n<image>"
                conversations += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
            record: dict = {"id": f"{source}_{index}" if folder is None else None}
            if folder is not None:
                path = image_path_for(folder, rng, counters)
                record["id"] = Path(path).stem
                record["image"] = path
                if path not in linked:
                    linked.add(path)
                    target = image_folder / path
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.symlink(rng.choice(pool[folder]), target)
            record["conversations"] = conversations
            text = json.dumps(record, indent=2)
            out.write("  " + text.replace("\n", "\n  ") + (",\n" if index < len(labels) - 1 else "\n"))
            if cauldron is not None:
                cauldron.add(folder, turns, source)
        out.write("]\n")
    print(f"{json_path}: {len(labels)} rows, {json_path.stat().st_size / 1e9:.2f} GB, {len(linked)} image paths "
          f"({sum(len(files) for files in pool.values())} real files) in {time.time() - started:.0f} s")  # fmt: skip
    if cauldron is not None:
        cauldron.close()
        print(f"{cauldron.path}: {cauldron.path.stat().st_size / 1e9:.2f} GB ({time.time() - started:.0f} s in all)")


class CauldronWriter:
    """the_cauldron's layout, written in row groups as rows come: `images` (list of {bytes, path}), `texts` (list of
    {user, assistant, source})."""

    def __init__(self, path: Path, pool: dict[str, list[Path]], batch_rows: int = 20_000):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.path, self.pool, self.batch_rows = path, pool, batch_rows
        self.thumbnails = {}
        for files in pool.values():
            for file in files:
                image = Image.open(file)
                image.thumbnail((160, 160))
                buffer = io.BytesIO()
                image.convert("RGB").save(buffer, format="JPEG", quality=85)
                self.thumbnails[file] = buffer.getvalue()
        # the_cauldron stores `images` as a datasets List(Image()) feature; the schema metadata tells `datasets` so.
        text = {"dtype": "string", "_type": "Value"}
        features = {
            "images": {"feature": {"_type": "Image"}, "_type": "List"},
            "texts": {"feature": {"user": text, "assistant": text, "source": text}, "_type": "List"},
        }
        image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
        text_type = pa.struct([("user", pa.string()), ("assistant", pa.string()), ("source", pa.string())])
        self.schema = pa.schema(
            [("images", pa.list_(image_type)), ("texts", pa.list_(text_type))],
            metadata={"huggingface": json.dumps({"info": {"features": features}})},
        )
        self.writer = pq.ParquetWriter(path, self.schema)
        self.rng = random.Random(1)
        self.images: list = []
        self.texts: list = []

    def add(self, folder: str | None, turns: list[tuple[str, str]], source: str) -> None:
        image = None if folder is None else {"bytes": self.thumbnails[self.rng.choice(self.pool[folder])], "path": None}
        self.images.append([] if image is None else [image])
        self.texts.append([{"user": question, "assistant": answer, "source": source} for question, answer in turns])
        if len(self.texts) == self.batch_rows:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        if self.texts:
            table = pa.table({"images": self.images, "texts": self.texts}, schema=self.schema)
            self.writer.write_table(table, row_group_size=2_000)
        self.images, self.texts = [], []

    def close(self) -> None:
        self.flush()
        self.writer.close()


if __name__ == "__main__":
    main()

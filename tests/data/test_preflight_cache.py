"""Real-size start-up: the LLaVA JSON is parsed record by record into a cached, memory-mapped Arrow file; the preflight
check runs once per data + settings (its report and exact per-row lengths cached), in parallel, and a changed file,
template or max_length invalidates it; images are checked by their header unless a full decode is asked for."""

import json
import os

import pytest
from datasets import Image, List

from llava_hf.data import LlavaCollator, load_llava_json
from llava_hf.data import formats as formats_module
from llava_hf.data.check import check_rows, preflight
from llava_hf.testing import TINY_IMAGE_TOKENS, make_image, make_tiny_data, make_tiny_processor


def human(value):
    return {"from": "human", "value": value}


def gpt(value):
    return {"from": "gpt", "value": value}


@pytest.mark.parametrize("layout", ["json", "jsonl"])
def test_records_are_parsed_across_read_chunks(tmp_path, monkeypatch, layout):
    # Tiny read chunks: records, escapes and multi-byte characters are cut at every possible place.
    monkeypatch.setattr(formats_module, "READ_CHUNK_BYTES", 7)
    records = [
        {"id": f"r{index}", "conversations": [human(f"caf\u00e9 \u2603 \\u00e9 {index} " * 3), gpt("ok \U0001f600")]}
        for index in range(40)
    ]
    if layout == "json":
        text = json.dumps(records, indent=2, ensure_ascii=False)
    else:
        text = "\n".join(json.dumps(record, ensure_ascii=index % 2 == 0) for index, record in enumerate(records))
    path = tmp_path / f"data.{layout}"
    path.write_text(text, encoding="utf-8")
    dataset = load_llava_json(path, cache_dir=tmp_path / "cache")
    assert dataset["id"] == [record["id"] for record in records]
    assert [row["messages"][0]["content"][0]["text"] for row in dataset] == [
        record["conversations"][0]["value"] for record in records
    ]
    truncated = tmp_path / f"cut.{layout}"
    truncated.write_text(text[: len(text) // 2], encoding="utf-8")
    with pytest.raises(ValueError, match="is not valid JSON"):
        load_llava_json(truncated, cache_dir=tmp_path / "cache")


def test_the_arrow_form_is_cached_by_content_and_image_folder(tmp_path):
    json_path, folder = make_tiny_data(tmp_path / "data", num_rows=6)
    cache = tmp_path / "cache"
    first = load_llava_json(json_path, folder, cache_dir=cache)
    again = load_llava_json(json_path, folder, cache_dir=cache)
    assert again.cache_files == first.cache_files and len(list((cache / "rows").iterdir())) == 1
    load_llava_json(json_path, tmp_path / "elsewhere", cache_dir=cache)  # other folder: other image paths
    records = json.loads(json_path.read_text())
    records[0]["conversations"][1]["value"] = "changed"
    stat = json_path.stat()
    json_path.write_text(json.dumps(records))
    os.utime(json_path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime: the content decides
    changed = load_llava_json(json_path, folder, cache_dir=cache)
    assert changed[0]["messages"][1]["content"][0]["text"] == "changed"
    assert len(list((cache / "rows").iterdir())) == 3


def test_encoded_lengths_are_what_encode_builds(tmp_path):
    json_path, folder = make_tiny_data(tmp_path / "data", num_rows=24)
    dataset = load_llava_json(json_path, folder, cache_dir=tmp_path / "cache")
    collator = LlavaCollator(make_tiny_processor(), chat_template="vicuna_v1")
    rows = list(dataset)
    assert any(not row["images"] for row in rows) and any(row["images"] for row in rows)
    assert collator.encoded_lengths(rows) == [len(collator.encode(row).input_ids) for row in rows]
    unmaskable = {**rows[0], "messages": rows[0]["messages"][:1]}  # no answer
    mismatch = {**rows[0], "images": rows[0]["images"] * 2}
    assert collator.encoded_lengths([unmaskable, mismatch, rows[1]])[:2] == [None, None]


def test_the_check_is_the_same_in_one_or_two_processes(tmp_path):
    json_path, folder = make_tiny_data(tmp_path / "data", num_rows=40)
    dataset = load_llava_json(json_path, folder, cache_dir=tmp_path / "cache")
    (folder / f"{dataset[3]['id']}.png").unlink(missing_ok=True)  # one bad row, found by either
    processor = make_tiny_processor()
    single = check_rows(dataset, processor, "vicuna_v1", 200, num_proc=1)
    double = check_rows(dataset, processor, "vicuna_v1", 200, num_proc=2)
    assert single.table() == double.table() and not single.ok
    assert single.lengths.tolist() == double.lengths.tolist() and single.has_image.tolist() == double.has_image.tolist()
    collator = LlavaCollator(processor, chat_template="vicuna_v1")
    undecoded = dataset.cast_column("images", List(Image(decode=False)))  # encode counts images, never opens them
    assert single.lengths.tolist() == [len(collator.encode(row).input_ids) for row in undecoded]


def test_a_changed_file_template_or_max_length_invalidates_the_cache(tmp_path):
    json_path, folder = make_tiny_data(tmp_path / "data", num_rows=8)
    cache = tmp_path / "cache"
    processor = make_tiny_processor()

    def run(template="vicuna_v1", max_length=512):
        dataset = load_llava_json(json_path, folder, cache_dir=cache)
        return preflight(dataset, processor, template, max_length, cache_dir=cache)

    first = run()
    assert not first.cached and min(first.lengths) > 0
    again = run()
    assert again.cached and again.lengths == first.lengths and again.has_image == first.has_image
    assert not run(template="llava_v1").cached  # another system prompt: other lengths
    assert not run(max_length=400).cached
    records = json.loads(json_path.read_text())
    records[0]["conversations"][-1]["value"] += " and a few more words"
    json_path.write_text(json.dumps(records))
    changed = run()
    assert not changed.cached and changed.lengths[0] > first.lengths[0] and changed.lengths[1:] == first.lengths[1:]
    assert run().cached


def test_images_are_checked_by_header_unless_a_decode_is_asked_for(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    make_image(0, size=(64, 64)).save(folder / "ok.jpg", quality=95)
    whole = (folder / "ok.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(whole[: len(whole) // 2])  # header intact, pixels cut
    (folder / "garbage.jpg").write_bytes(b"not an image")
    records = [
        {"id": name, "image": f"{name}.jpg", "conversations": [human("<image>\nWhat?"), gpt("Noise.")]}
        for name in ("ok", "truncated", "garbage", "missing")
    ]
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records))
    dataset = load_llava_json(path, folder, cache_dir=tmp_path / "cache")
    header = check_rows(dataset, make_tiny_processor(), max_length=64 + TINY_IMAGE_TOKENS)
    assert dict(header.problems) == {"unreadable_image": [2], "missing_image": [3]}
    assert "images: every image opened, header read (exists, format, size, mode); pixels not decoded" in header.table()
    decoded = check_rows(dataset, make_tiny_processor(), image_check="decode")
    assert dict(decoded.problems) == {"unreadable_image": [1, 2], "missing_image": [3]}
    assert "images: every image fully decoded" in decoded.table()


def _resident_bytes_of(path) -> int:
    """Resident bytes of this process's mappings of `path` (/proc/self/smaps)."""
    resident, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:  # a mapping's header line
                inside = len(fields) == 6 and fields[5] == str(path)
            elif inside and fields[0] == "Rss:":
                resident += int(fields[1]) * 1024
    return resident


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="reads /proc/self/smaps")
def test_the_check_hands_back_the_pages_it_read_from_the_arrow_file(tmp_path):
    """The check reads every row of the memory-mapped Arrow file; without handing each batch's pages back, the whole
    file stays counted in the process's memory once it is done. The lengths are the same either way."""
    answer = "A long answer about the picture. " * 60
    records = [{"id": str(index), "conversations": [human(f"Question {index}?"), gpt(answer)]} for index in range(600)]
    json_path = tmp_path / "data.json"
    json_path.write_text(json.dumps(records))
    dataset = load_llava_json(json_path, cache_dir=tmp_path / "cache")
    (arrow_file,) = [entry["filename"] for entry in dataset.cache_files]
    size = os.path.getsize(arrow_file)
    assert size > 1_000_000
    report = check_rows(dataset, make_tiny_processor(), max_length=100_000, num_proc=1)
    assert report.ok and len(report.lengths) == 600
    assert _resident_bytes_of(arrow_file) < size / 10
    dataset.with_format("arrow")[:].to_pydict()  # reading it all without the check leaves it resident
    assert _resident_bytes_of(arrow_file) > size / 2
    again = check_rows(dataset, make_tiny_processor(), max_length=100_000, num_proc=1)
    assert again.lengths.tolist() == report.lengths.tolist()

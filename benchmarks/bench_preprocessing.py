# python benchmarks/bench_preprocessing.py [--rounds 7] [--images 40] [--json out.json]
"""Image preprocessing throughput on one CPU thread: LlavaHfImageProcessor vs transformers' built-in LlavaImageProcessor.

The job (LLaVA-1.5, `image_aspect_ratio="pad"`): a 640x480 RGB JPEG -> pad to 640x640 with the mean colour -> 336x336
-> normalised float32 tensor [1, 3, 336, 336], one image per call (what a DataLoader worker does per sample).
Measured, interleaved in the same process, over `--rounds` rounds of `--images` calls each:

- `ours`: `llava_hf.build_image_processor(336, "pad")` (LlavaHfImageProcessor, fast path);
- `builtin-pil`: transformers' `LlavaImageProcessorPil` with the same settings (reproduces the original exactly);
- `builtin-torchvision`: transformers' `LlavaImageProcessor` (torchvision backend), when torchvision imports;
  not the original's numbers (torch's antialiased bicubic is not PIL's), so it is a speed anchor only;

each from a decoded PIL image ("process") and from the JPEG bytes ("decode + process", `Image.open(...).convert("RGB")`
included). Before timing, every output is compared with the original's computation (`expand2square` + transformers
4.31 `CLIPImageProcessor`, reimplemented in `llava_hf.conversion.reference.original_pixel_values`) and the maximum
absolute difference is printed. The input is a synthetic photo-like image (smooth gradients, shapes, sensor-like noise)
saved as JPEG quality 90, so decoding costs what a real 640x480 photo costs.

Prints one table (images/s per round: min / median / max; ratios ours / anchor per round, median) and, with --json,
writes every figure to a file.
"""

import argparse
import io
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import PIL
import torch
import transformers
from PIL import Image, ImageDraw
from transformers import LlavaImageProcessorPil

from llava_hf import build_image_processor
from llava_hf.conversion.reference import original_pixel_values

SIZE = 336


def photo_like_jpeg(width: int = 640, height: int = 480, seed: int = 0) -> bytes:
    """A 640x480 JPEG with gradients, filled shapes and noise: decoding it costs what a real photo costs."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width * 200 + 30, y / height * 180 + 40, (x + y) / (width + height) * 160 + 60], axis=-1)
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(25):
        x0, y0 = int(rng.integers(0, width - 40)), int(rng.integers(0, height - 40))
        box = (x0, y0, x0 + int(rng.integers(20, 200)), y0 + int(rng.integers(20, 160)))
        colour = tuple(int(value) for value in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, 6, (height, width, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def candidates(ours) -> dict:
    settings = {key: value for key, value in ours.to_dict().items() if key != "image_processor_type"}
    found = {"ours": ours, "builtin-pil": LlavaImageProcessorPil(**settings)}
    try:
        import torchvision  # noqa: F401
        from transformers.models.llava.image_processing_llava import LlavaImageProcessor

        found["builtin-torchvision"] = LlavaImageProcessor(**settings)
    except (ImportError, RuntimeError) as error:  # PyPI's torchvision fails to import beside some torch builds
        print(f"builtin-torchvision: not measured ({type(error).__name__}: {error})", file=sys.stderr)
    return found


def images_per_second(function, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        function()
    return count / (time.perf_counter() - start)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (figures: min/median/max over them)")
    parser.add_argument("--images", type=int, default=40, help="calls per processor per round")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    jpeg = photo_like_jpeg()
    decoded = Image.open(io.BytesIO(jpeg)).convert("RGB")
    ours = build_image_processor(SIZE, "pad")
    processors = candidates(ours)
    reference = original_pixel_values(decoded, SIZE, ours.image_mean, ours.image_std, "pad")  # [1, 3, 336, 336]
    max_difference = {}
    for name, processor in processors.items():
        pixel_values = processor(decoded, return_tensors="pt")["pixel_values"]
        assert pixel_values.shape == reference.shape, (name, pixel_values.shape)
        max_difference[name] = float((pixel_values - reference).abs().max())
    assert max_difference["ours"] <= 1e-5 and max_difference["builtin-pil"] <= 1e-5, max_difference

    def job(processor, from_bytes: bool):
        if from_bytes:
            return lambda: processor(Image.open(io.BytesIO(jpeg)).convert("RGB"), return_tensors="pt")
        return lambda: processor(decoded, return_tensors="pt")

    jobs = {
        (name, from_bytes): job(processor, from_bytes)
        for name, processor in processors.items()
        for from_bytes in (False, True)
    }
    jobs[("decode only", True)] = lambda: Image.open(io.BytesIO(jpeg)).convert("RGB")
    for function in jobs.values():  # warm-up
        images_per_second(function, 3)
    rates = {key: [] for key in jobs}
    for _ in range(args.rounds):
        for key, function in jobs.items():
            rates[key].append(images_per_second(function, args.images))

    def ratios(key, anchor):
        return [ours_rate / anchor_rate for ours_rate, anchor_rate in zip(rates[key], rates[anchor])]

    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end",
        "versions": f"torch {torch.__version__}, transformers {transformers.__version__}, Pillow {PIL.__version__}",
        "command": "python benchmarks/bench_preprocessing.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "max_abs_difference_vs_original": max_difference,
        "rows": [],
    }
    print(f"{report['machine']}; {report['versions']}; 1 thread; {args.rounds} rounds x {args.images} images")
    print(f"max |pixel_values - original| : {max_difference}")
    print(f"{'processor':<22} {'input':<18} {'img/s min':>10} {'median':>8} {'max':>8}   ours/this (median of rounds)")
    for (name, from_bytes), values in rates.items():
        row = {
            "processor": name,
            "input": "JPEG bytes" if from_bytes else "decoded image",
            "images_per_s": {"min": min(values), "median": statistics.median(values), "max": max(values)},
        }
        if name.startswith("builtin"):
            row["ours_over_this"] = statistics.median(ratios(("ours", from_bytes), (name, from_bytes)))
        report["rows"].append(row)
        ratio = f"{row['ours_over_this']:.2f}x" if "ours_over_this" in row else ""
        stats = row["images_per_s"]
        print(
            f"{name:<22} {row['input']:<18} {stats['min']:>10.1f} {stats['median']:>8.1f} {stats['max']:>8.1f}   {ratio}"
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
    return report


if __name__ == "__main__":
    main()

"""Where the committed test assets live."""

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
ASSETS = TESTS / "assets"
REAL_SHAPED = ASSETS / "real_shaped"  # stand-ins shaped like the real CLIP / Vicuna / Mistral / Qwen2 parts

"""The settings of `llava-hf generate`, `chat` and `serve`: dataclasses parsed by `HfArgumentParser`.

They live apart from the code that uses them and import nothing heavy, so `--help` and bad flags answer before
torch, transformers' models or FastAPI load (`llava_hf.utils.command_line`).
"""

import os
from dataclasses import dataclass, field

from llava_hf.utils.loading import QUANTIZE_4BIT_HELP, QUANTIZE_8BIT_HELP


@dataclass
class ModelArguments:
    """Which checkpoint to load and how."""

    model: str = field(default=None, metadata={"help": "Checkpoint folder or Hub repo id (org/name). Required."})
    revision: str | None = field(default=None, metadata={"help": "Hub revision (branch, tag or commit) of --model."})
    dtype: str = field(
        default="auto",
        metadata={
            "help": "Weights dtype: auto (as saved on a GPU; on CPU float32 for small models, else bfloat16 where the CPU has it natively, else as saved), float32, bfloat16, float16."
        },
    )
    device: str = field(default="auto", metadata={"help": "auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps."})
    load_in_4bit: bool = field(default=False, metadata={"help": QUANTIZE_4BIT_HELP})
    load_in_8bit: bool = field(default=False, metadata={"help": QUANTIZE_8BIT_HELP})
    attn_implementation: str | None = field(
        default=None, metadata={"help": "sdpa, eager, flash_attention_2, ... (default: transformers' choice)."}
    )


@dataclass
class SamplingArguments:
    """How to sample an answer. temperature 0 is greedy decoding, the setting of LLaVA's evaluations."""

    max_new_tokens: int = field(default=256, metadata={"help": "Most tokens to generate per answer."})
    temperature: float = field(default=0.0, metadata={"help": "0 for greedy decoding; > 0 samples."})
    top_p: float = field(
        default=1.0, metadata={"help": "Nucleus sampling mass, in (0, 1] (used when temperature > 0)."}
    )

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"--max_new_tokens must be >= 1, got {self.max_new_tokens}.")
        if self.temperature < 0:
            raise ValueError(f"--temperature must be >= 0, got {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"--top_p must be in (0, 1], got {self.top_p}.")


@dataclass
class GenerateArguments:
    """The question to answer."""

    prompt: str = field(default=None, metadata={"help": "The question or instruction. Required."})
    image: str | None = field(default=None, metadata={"help": "Image file the prompt is about (omit for text-only)."})


@dataclass
class ChatArguments:
    """What to start the chat with."""

    image: str | None = field(default=None, metadata={"help": "Image file to talk about (or load one with /image)."})


@dataclass
class ServeArguments:
    """Where to listen, how to batch, and the safety limits."""

    host: str = field(default="127.0.0.1", metadata={"help": "Interface to listen on (0.0.0.0 for all)."})
    port: int = field(default=8000, metadata={"help": "TCP port (0 picks a free one; the address is printed)."})
    served_model_name: str | None = field(
        default=None, metadata={"help": "Model id clients send and /v1/models lists (default: --model as given)."}
    )
    max_batch_size: int = field(default=8, metadata={"help": "Most requests per generate call (1 = one at a time)."})
    batch_wait_ms: float = field(
        default=10.0, metadata={"help": "How long the first request of a batch waits for others to join, in ms."}
    )
    max_concurrent_requests: int = field(
        default=64, metadata={"help": "Requests in flight (queued or generating) before new ones get 429."}
    )
    max_request_bytes: int = field(default=20 * 2**20, metadata={"help": "Largest request body accepted, in bytes."})
    max_image_bytes: int = field(default=10 * 2**20, metadata={"help": "Largest encoded image accepted, in bytes."})
    max_image_pixels: int = field(
        default=4096 * 4096, metadata={"help": "Largest image accepted, in pixels (width x height)."}
    )
    max_images_per_request: int = field(default=4, metadata={"help": "Most images in one request."})
    max_prompt_tokens: int = field(
        default=4096, metadata={"help": "Longest prompt accepted, in tokens (image tokens included)."}
    )
    max_output_tokens: int = field(default=1024, metadata={"help": "Largest max_tokens a request may ask for."})
    default_max_tokens: int | None = field(
        default=None,
        metadata={
            "help": "max_tokens for requests that do not set it (default: 256, or --max_output_tokens if lower)."
        },
    )
    request_timeout: float = field(
        default=120.0, metadata={"help": "Seconds a request may take end to end before it gets 408."}
    )
    allowed_image_hosts: list[str] = field(
        default_factory=list,
        metadata={"help": "Hosts whose http(s) image URLs may be fetched. Empty (default): remote URLs are refused."},
    )
    api_key_env: str | None = field(
        default=None, metadata={"help": "Environment variable holding the API key clients must send (default: none)."}
    )

    def __post_init__(self):
        if self.default_max_tokens is None:
            self.default_max_tokens = min(256, self.max_output_tokens)
        for name in (
            "max_batch_size",
            "max_concurrent_requests",
            "max_request_bytes",
            "max_image_bytes",
            "max_image_pixels",
            "max_prompt_tokens",
            "max_output_tokens",
            "default_max_tokens",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}.")
        if self.max_images_per_request < 0 or self.request_timeout <= 0 or self.batch_wait_ms < 0:
            raise ValueError("--max_images_per_request and --batch_wait_ms must be >= 0, --request_timeout > 0.")
        if self.default_max_tokens > self.max_output_tokens:
            raise ValueError(
                f"--default_max_tokens {self.default_max_tokens} exceeds --max_output_tokens {self.max_output_tokens}."
            )
        if self.api_key_env and not os.environ.get(self.api_key_env):
            raise ValueError(f"--api_key_env {self.api_key_env}: the environment variable is unset or empty.")

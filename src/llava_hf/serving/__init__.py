"""Inference front ends: one-shot `generate`, terminal `chat`, and the OpenAI-compatible `serve` (with a web page).

`inference.py` holds what all three share: loading a checkpoint (folder or Hub repo id) with a dtype, a device and
optional bitsandbytes quantization, turning a conversation into model inputs, and the sampling settings.

- `arguments.py`         the flags of generate, chat and serve
- `inference.py`         load a checkpoint for inference, encode a conversation, sampling
- `generate_command.py`  `llava-hf generate`: one image + one prompt -> the answer
- `chat_command.py`      `llava-hf chat`: multi-turn terminal chat, streamed answers
- `batching.py`          dynamic batching: a worker thread, left-padded shared generate calls, per-row limits/stop/cancel
- `serve_command.py`     `llava-hf serve`: the flags, then `server.py` (--help works without the `serve` extra)
- `server.py`            the FastAPI + uvicorn server: /v1/chat/completions (SSE + JSON), /v1/models, /health, limits
- `protocol.py`          pydantic request models, validation against the limits, reply bodies
- `images.py`            image_url fetching (data: URLs, allowed hosts, no redirects) and decoding within bounds
- `static`               the web chat page served at /
"""

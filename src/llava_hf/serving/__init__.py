"""Inference front ends: one-shot `generate`, terminal `chat`, and the OpenAI-compatible `serve` (with a web page).

`loading.py` holds what all three share: loading a checkpoint (folder or Hub repo id) with a dtype, a device and
optional bitsandbytes quantization, turning a conversation into model inputs, and the sampling settings.
"""

"""Test helpers shared across test folders: the local OpenAI-compatible server, datagen fixtures, subprocesses. The tiny
model is `llava_hf.testing` (shared with the benchmarks and examples). `tests/` is on sys.path (pytest puts the rootdir
conftest's folder there), so tests import them as `from helpers.openai_server import OpenAIServer, Reply`."""

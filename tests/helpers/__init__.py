"""Test helpers shared across test folders. `tests/` is on sys.path (pytest puts the rootdir conftest's folder there),
so tests import them as `from helpers.openai_server import OpenAIServer, Reply`."""

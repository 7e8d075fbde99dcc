"""Test helpers shared across test folders: datagen fixtures, subprocesses waited for and killed with their process
group, code run where llava_hf cannot be imported (`without_llava_hf.py`). The tiny model and the local
OpenAI-compatible server are `llava_hf.testing` (shared with the benchmarks and examples). `tests/` is on sys.path (pytest puts the rootdir conftest's folder there), so tests import these as
`from helpers.processes import run_to_exit`."""

"""Test helpers shared across test folders, imported as `from helpers.<module> import ...` (`tests/` is on sys.path:
pytest puts the rootdir conftest's folder there). The tiny model, images and the local OpenAI-compatible server are
`llava_hf.testing` (shared with the benchmarks and examples).

- `paths.py`            where the committed assets live (`ASSETS`, `REAL_SHAPED`)
- `processes.py`        subprocesses waited for and killed with their process group
- `without_llava_hf.py` code run where llava_hf cannot be imported
- `consumers.py`        checkpoints written for, and clients run in, the consumer environment
- `datagen_teacher.py`  the released COCO symbolic images for the datagen tests
- `evaluation_data.py`  paths of the evaluation fixtures, Hub-layout parquet built from them
- `hub_cache.py`        a local Hugging Face cache populated with tiny repos
- `serving.py`          the tiny checkpoint, server start/stop and request helpers of the serving tests
"""

"""Write a saved folder into the Hugging Face cache layout so `from_pretrained("org/name")` works with no network.

    $HF_HUB_CACHE/models--org--name/{blobs/<sha256>, refs/main, snapshots/<commit>/<file> -> ../../blobs/<sha256>}

huggingface_hub reads HF_HUB_CACHE and HF_HUB_OFFLINE at import time, so tests that load by repo id do it in a
subprocess whose environment sets both.
"""

import hashlib
import os
import shutil
from pathlib import Path


def populate_hf_cache(source_dir: Path, repo_id: str, cache_dir: Path, commit: str | None = None) -> Path:
    commit = commit or hashlib.sha1(repo_id.encode()).hexdigest()
    repo_dir = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    blobs, snapshot = repo_dir / "blobs", repo_dir / "snapshots" / commit
    blobs.mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs").mkdir(exist_ok=True)
    for source in Path(source_dir).rglob("*"):
        if not source.is_file():
            continue
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        shutil.copyfile(source, blobs / digest)
        target = snapshot / source.relative_to(source_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.exists():
            target.unlink()
        target.symlink_to(os.path.relpath(blobs / digest, target.parent))
    (repo_dir / "refs" / "main").write_text(commit)
    return snapshot

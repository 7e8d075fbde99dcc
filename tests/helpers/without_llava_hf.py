"""Run code the way a user without llava_hf would: a fresh python in which `import llava_hf` fails.

The child's PYTHONPATH is only a folder holding a `sitecustomize.py`, which Python imports at start-up, before any
code of the child runs; it puts a finder first on `sys.meta_path` that refuses `llava_hf` and its submodules. That
beats every way the package could otherwise be found (the venv's editable install, a `.pth` entry, PYTHONPATH, the
working directory), and every run checks it: `import llava_hf` raises, and `llava_hf` is not in `sys.modules` at the
end (nothing the code loaded pulled it in). The Hub is offline; HF_HOME is a fresh folder unless `env` names one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from helpers.processes import run_to_exit

SITECUSTOMIZE = """
import sys


class NoLlavaHf:
    def find_spec(self, name, path=None, target=None):
        if name == "llava_hf" or name.startswith("llava_hf."):
            raise ImportError("llava_hf is not installed here")


sys.meta_path.insert(0, NoLlavaHf())
"""
CHECK_BLOCKED = "try:\n    import llava_hf\nexcept ImportError:\n    print('llava_hf: not importable')\n"
CHECK_UNUSED = "import sys\nprint('llava_hf imported:', 'llava_hf' in sys.modules)\n"


def run_without_llava_hf(code: str, folder: Path, *args: str, env: dict | None = None) -> str:
    """Run `code` as a script in `folder` (its working directory) without llava_hf; returns stdout after asserting a
    clean exit and that llava_hf stayed out."""
    shadow = folder / "no_llava_hf"
    shadow.mkdir(exist_ok=True)
    (shadow / "sitecustomize.py").write_text(SITECUSTOMIZE)
    script = folder / "consumer.py"
    script.write_text(CHECK_BLOCKED + code + "\n" + CHECK_UNUSED)
    child_env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    child_env.update(PYTHONPATH=str(shadow), HF_HUB_OFFLINE="1", HF_HOME=str(folder / "hf_home"), **(env or {}))
    result = run_to_exit([sys.executable, str(script), *args], env=child_env, cwd=folder)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "llava_hf: not importable" in result.stdout and "llava_hf imported: False" in result.stdout
    return result.stdout

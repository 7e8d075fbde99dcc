"""The map of the code lives in the package docstrings: each package's `__init__` names every module, subpackage and
data folder it holds (the README points there instead of keeping a file tree by hand)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "src" / "llava_hf"
PACKAGES = [PACKAGE, *sorted(path.parent for path in PACKAGE.glob("*/__init__.py"))]


def members(package: Path) -> list[str]:
    """Module files (`name.py`), subpackages and data folders of `package`, as the docstring must name them."""
    names = []
    for path in sorted(package.iterdir()):
        if path.name.startswith(("_", ".")) or path.name.endswith(".egg-info"):
            continue
        if path.suffix == ".py":
            names.append(path.name)
        elif path.is_dir() and any(path.iterdir()):
            names.append(path.name)
    return names


@pytest.mark.parametrize("package", PACKAGES, ids=lambda path: path.name)
def test_package_docstring_names_every_file(package):
    docstring = ast.get_docstring(ast.parse((package / "__init__.py").read_text())) or ""
    missing = [name for name in members(package) if f"`{name}`" not in docstring]
    assert not missing, f"{package.name}/__init__.py's docstring does not name {missing}: add one line for each"

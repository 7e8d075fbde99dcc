"""The import graph of src/llava_hf (every `import`/`from` statement, at any depth, read with `ast`): no cycles, and the
dependency direction of the README's map: `modeling` and `processing` import nothing else from llava_hf, `utils`
imports no capability, `datagen` imports no model code, nothing imports `cli`, and no module imports another module's
private (`_name`) helper, not even a sibling's."""

import ast
from pathlib import Path

import llava_hf

PACKAGE = Path(llava_hf.__file__).parent
CAPABILITIES = {"conversion", "training", "datagen", "evaluation", "serving", "demo", "cli"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[tuple[str, list[str]]]:
    """(imported llava_hf module, imported names) for every import statement in `path`."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names if alias.name.split(".")[0] == "llava_hf"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "llava_hf":
                continue
            names = [alias.name for alias in node.names]
            submodules = [
                f"{target}.{n}"
                for n in names
                if (PACKAGE.parent / f"{target}.{n}".replace(".", "/")).exists()
                or (PACKAGE.parent / (f"{target}.{n}".replace(".", "/") + ".py")).exists()
            ]
            found += [(sub, []) for sub in submodules] or [(target, names)]
    return found


def graph() -> dict[str, list[tuple[str, list[str]]]]:
    return {module_name(path): imports_of(path) for path in sorted(PACKAGE.rglob("*.py"))}


def subpackage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_import_cycles_between_modules():
    edges = {
        module: {target for target, _ in targets if target != module and target != "llava_hf"}
        for module, targets in graph().items()
    }
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(module, path):
        state[module] = 1
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(target) :] + [target]))
            if target in edges and state.get(target) is None:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(edges):
        if state.get(module) is None:
            visit(module, [module])


def test_dependency_direction():
    problems = []
    for module, targets in graph().items():
        source = subpackage(module)
        for target, names in targets:
            private = [name for name in names if name.startswith("_") and not name.startswith("__")]
            if private and target != module:
                problems.append(f"{module} imports private {private} from {target}")
            destination = subpackage(target)
            if destination == source or target == "llava_hf":
                continue
            if source in ("modeling", "processing"):
                problems.append(f"{module} imports {target} (modeling/processing import nothing else from llava_hf)")
            if source == "utils" and destination in CAPABILITIES:
                problems.append(f"{module} (utils) imports the capability {target}")
            if source == "datagen" and destination in ("modeling", "processing", "training", "serving"):
                problems.append(f"{module} (datagen needs no model) imports {target}")
            if target == "llava_hf.cli":
                problems.append(f"{module} imports the command table {target}")
    assert not problems, "\n".join(problems)

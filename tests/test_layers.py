"""The import graph reads one way: a module imports only from its own layer or those below it
(the README's table), and image and video never import each other."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[1] / "engine"
# Top to bottom, as in the README's "How it works".
LAYERS = [
    ["cli", "api", "__init__", "__main__", "demo"],
    ["publish"],
    ["plan", "job", "history", "quiet", "schedule"],
    ["rules", "checks", "footprint"],
    ["image", "video"],
    ["store", "manifest", "catalog", "masters", "scratch"],
    ["rows", "spec", "formats", "geometry", "limits", "errors"],
]
LEVEL = {name: i for i, names in enumerate(LAYERS) for name in names}


def unit(module: str) -> str:
    """engine.image.ops -> image; engine.plan -> plan."""
    return module.split(".")[1] if module.count(".") else "__init__"


def imports(path: Path) -> set[str]:
    module = "engine." + ".".join(path.relative_to(ENGINE).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            target = f"{base}.{node.module}" if node.module else base
            names = [target] if node.module else [f"{base}.{a.name}" for a in node.names]
            found.update(n for n in names if n.count("."))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("engine."):
            found.add(node.module)
    return found


def test_no_module_imports_a_layer_above_its_own():
    wrong = []
    files = sorted(ENGINE.rglob("*.py"))
    assert len(files) > 30
    for path in files:
        me = unit("engine." + ".".join(path.relative_to(ENGINE).with_suffix("").parts))
        for target in imports(path):
            other = unit(target)
            if other in LEVEL and LEVEL[other] < LEVEL[me]:
                wrong.append(f"{path.relative_to(ENGINE)} imports {target}")
            if {me, other} == {"image", "video"}:
                wrong.append(f"{path.relative_to(ENGINE)} imports {target} (image <-> video)")
    assert not wrong, "\n".join(wrong)


def test_every_engine_module_has_a_layer():
    units = {unit("engine." + ".".join(p.relative_to(ENGINE).with_suffix("").parts))
             for p in ENGINE.rglob("*.py")}
    assert units - set(LEVEL) == set()

"""The package's shape: layers import one way, no module imports itself in a circle, and
`import s2t_hf` (for `S2T`) loads inference only."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "s2t_hf"
# each layer may import only itself and the layers before it
LAYERS = ["text", "audio", "speech", "models", "decoding", "inference", "serving", "evaluation", "training", "cli"]
BOTTOM = {"text", "audio"}  # one level: neither imports the other


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """s2t_hf modules a file imports (at any depth of the file: lazy imports count too)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("s2t_hf"):
                found.add(target)
                found.update(f"{target}.{alias.name}" for alias in node.names)  # `from . import module`
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("s2t_hf"))
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py") if "drug_accuracy" not in path.parts}
    return {name: {target for target in imports_of(path) if target in modules and target != name} for name, path in modules.items()}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_layers_import_one_way():
    wrong = []
    for module, targets in graph().items():
        source = layer_of(module)
        if source is None:
            continue  # s2t_hf/__init__.py re-exports
        for target in targets:
            destination = layer_of(target)
            if destination is None or destination == source:
                continue
            allowed = LAYERS.index(destination) < LAYERS.index(source) and not (source in BOTTOM and destination in BOTTOM)
            if not allowed:
                wrong.append(f"{module} imports {target}")
    assert not wrong, "imports against the layer order " + " -> ".join(LAYERS) + ":\n" + "\n".join(sorted(wrong))


def test_no_import_cycle():
    edges = graph()  # imports inside functions count: a lazy import only hides a cycle
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        stack.append(module)
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[module] = 2
        return None

    for module in sorted(edges):
        if module not in state:
            cycle = visit(module)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_layer_check_sees_a_wrong_import(tmp_path, monkeypatch):
    """The check itself can fail: a decoding module importing training is reported."""
    fake = tmp_path / "s2t_hf"
    (fake / "decoding").mkdir(parents=True)
    (fake / "training").mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "decoding" / "__init__.py").write_text("")
    (fake / "training" / "__init__.py").write_text("")
    (fake / "training" / "trainers.py").write_text("X = 1\n")
    (fake / "decoding" / "ctc.py").write_text("def f():\n    from ..training.trainers import X\n    return X\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    try:
        test_layers_import_one_way()
    except AssertionError as error:
        assert "s2t_hf.decoding.ctc imports s2t_hf.training.trainers" in str(error)
    else:
        raise AssertionError("the layer check missed decoding -> training")


def test_import_s2t_hf_loads_inference_only():
    heavy = ["transformers.trainer", "datasets", "evaluate", "jiwer", "audiomentations", "matplotlib", "pyarrow", "s2t_hf.training", "s2t_hf.evaluation", "s2t_hf.speech"]
    code = "import sys, s2t_hf; s2t_hf.S2T; print(' '.join(m for m in %r if m in sys.modules))" % (heavy,)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [], f"`import s2t_hf` loaded {result.stdout.split()}"

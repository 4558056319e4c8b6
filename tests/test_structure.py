"""The house rules: imports point upstream only, network code lives in download, no framework at run time."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "minigpt2"
# each module, and the modules of ours it may import (the data flow, upstream only)
ALLOWED = {
    "config": set(),
    "files": set(),
    "bundled": set(),
    "version": set(),
    "machine": set(),
    "fast": set(),
    "blas": set(),
    "distributed": set(),
    "ops": {"fast"},
    "vocab": set(),
    "tf_checkpoint": set(),
    "safetensors": set(),
    "download": {"config"},
    "bpe_train": set(),
    "tokenizer": {"bpe_train", "bundled", "files", "vocab", "download", "safetensors"},
    "params": {"config"},
    "model": {"config", "fast", "ops", "params"},
    "backward": {"config", "fast", "model", "ops", "params"},
    "save": {"config", "files", "params", "safetensors"},
    "load": {"bundled", "files", "tf_checkpoint", "config", "download", "params", "safetensors", "save"},
    "sample": {"config", "ops"},
    "generation": {"config", "machine", "model", "sample"},
    "gpt2": {"backward", "config", "generation", "load", "model", "params", "save", "vocab"},
    "optim": {"fast", "params"},
    "tasks": {"config", "files", "model", "params", "tokenizer", "vocab"},
    "evaluate": {"config", "files", "generation", "model", "ops", "tasks", "tokenizer", "vocab"},
    "export": {"cli"},
    "generate": {"cli"},
    "train": {"distributed", "backward", "machine", "version", "blas", "config", "download", "files", "gpt2", "load", "model", "optim", "params",
              "safetensors", "save", "tasks", "tf_checkpoint", "tokenizer", "vocab"},
    "cli": {"distributed", "config", "download", "evaluate", "files", "version", "generation", "gpt2", "save", "tasks", "tf_checkpoint", "tokenizer",
            "train", "vocab"},
    "__init__": {"config", "fast", "gpt2", "model", "tokenizer", "version"},
    "__main__": {"cli"},
}
RUNTIME_DEPENDENCIES = {"numpy", "regex", "requests", "tqdm"}


def imports(module: str) -> tuple[set[str], set[str]]:
    """(modules of ours, third-party top-level packages) imported anywhere in minigpt2/<module>.py: at the top,
    inside functions and methods, or under a condition (ast.walk visits every node), except under
    `if __name__ == "__main__":`, where a module that is also a command hands over to cli.py."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    tree.body = [node for node in tree.body if not is_main_block(node)]
    ours, theirs = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level and node.module:
            ours.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level:  # from . import backward
            ours.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            theirs.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            theirs.update(a.name.split(".")[0] for a in node.names)
    return ours, theirs


def is_main_block(node) -> bool:
    return isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) and "__name__" in ast.unparse(node.test)


def test_a_main_block_only_hands_over_to_the_command_line():
    for module in ALLOWED:
        tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
        for node in (n for n in tree.body if is_main_block(n)):
            ours = {n.module for n in ast.walk(node) if isinstance(n, ast.ImportFrom) and n.level}
            assert ours <= {"cli"}, f"minigpt2/{module}.py's __main__ block imports {ours}"


def test_every_module_is_listed():
    assert {p.stem for p in PACKAGE.glob("*.py")} == set(ALLOWED)


def test_imports_point_upstream():
    for module, allowed in ALLOWED.items():
        ours, _ = imports(module)
        assert ours <= allowed, f"minigpt2/{module}.py imports {sorted(ours - allowed)}"


def test_only_runtime_dependencies_and_the_standard_library():
    import sys

    for module in ALLOWED:
        _, theirs = imports(module)
        third_party = {m for m in theirs if m not in sys.stdlib_module_names and m != "__future__"}
        optional = {"mpi4py"} if module == "distributed" else set()  # imported only under an MPI launcher
        assert third_party <= RUNTIME_DEPENDENCIES | optional, f"minigpt2/{module}.py imports {sorted(third_party)}"
        if "requests" in theirs:
            assert module == "download", f"network code belongs in download, found in {module}"


def test_the_check_sees_imports_inside_functions(tmp_path, monkeypatch):
    (tmp_path / "probe.py").write_text("def f():\n    from .load import load_model\n    from . import train\n")
    import sys

    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path)
    assert imports("probe")[0] == {"load", "train"}


def test_no_cycles_even_through_lazy_imports():
    """Following ALLOWED from any module never leads back to it: the house has one direction."""
    def reaches(start, seen):
        for m in ALLOWED.get(start, ()):
            if m not in seen:
                seen.add(m)
                reaches(m, seen)
        return seen

    for module in ALLOWED:
        assert module not in reaches(module, set()), f"{module} imports something that imports it back"

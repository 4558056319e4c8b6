"""The house rules: imports point upstream only, network code lives in download, no framework at run time."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "minigpt2"
# each module, and the modules of ours it may import (the data flow, upstream only)
ALLOWED = {
    "checks": set(),
    "config": {"checks"},
    "files": set(),
    "bundled": set(),
    "version": set(),
    "machine": set(),
    "dispatch": set(),
    "blas": {"checks"},
    "distributed": set(),
    "ops": {"dispatch"},
    "vocab": set(),
    "crc32c": set(),
    "tf_checkpoint": {"crc32c"},
    "safetensors": set(),
    "download": {"config"},
    "bpe_train": set(),
    "tokenizer_fast": {"vocab"},
    "explain": {"vocab"},
    "tokenizer": {"bpe_train", "bundled", "explain", "tokenizer_fast", "files", "vocab", "download", "safetensors"},
    "params": {"config"},
    "lora": {"checks", "config", "params"},
    "model": {"checks", "config", "dispatch", "lora", "ops", "params"},
    "backward": {"config", "dispatch", "lora", "model", "ops", "params"},
    "save": {"config", "files", "params", "safetensors"},
    "load": {"bundled", "files", "tf_checkpoint", "config", "download", "params", "safetensors", "save"},
    "sample": {"checks", "config", "ops"},
    "beam": {"model", "ops", "sample"},
    "decoding": {"beam", "checks", "config", "machine", "model", "sample", "vocab"},
    "adapter": {"config", "files", "lora", "params", "safetensors"},
    "explore": {"files", "ops"},  # the page's numbers; page.html, page.css and page.js beside it draw them
    "gpt2": {"adapter", "backward", "config", "decoding", "explore", "load", "lora", "model", "params", "save", "vocab"},
    "optim": {"dispatch", "params"},
    "fast": {"backward", "dispatch", "model", "ops", "optim"},  # the tuned forms import the textbook ones
    "tasks": {"backward", "checks", "config", "files", "model", "params", "tokenizer", "vocab"},
    "evaluate.loglikelihood": {"blas", "checks", "config", "machine", "model", "ops"},
    "evaluate.datasets": {"download", "files"},
    "evaluate.zeroshot": {"checks", "config", "tokenizer", "vocab", "evaluate.datasets", "evaluate.loglikelihood"},
    "evaluate": {"backward", "checks", "config", "decoding", "files", "model", "tasks", "tokenizer", "vocab",
                 "evaluate.loglikelihood", "evaluate.zeroshot"},
    # the training package, one file a job, in the order its data flows
    "train.settings": {"checks", "files", "lora"},
    "train.data": {"download", "files", "tasks", "tokenizer", "vocab", "train.settings"},
    "train.stop": {"distributed"},
    "train.rundir": {"adapter", "blas", "config", "distributed", "files", "optim", "params", "safetensors", "save", "tasks",
                     "tokenizer", "version", "lora", "train.data", "train.settings"},
    "train.step": {"backward", "config", "distributed", "lora", "model", "params", "tasks", "train.data", "train.settings",
                   "train.stop"},
    "train.start": {"adapter", "blas", "config", "distributed", "download", "files", "load", "lora", "machine", "optim",
                    "params", "safetensors", "tokenizer", "train.data", "train.rundir", "train.settings", "train.step"},
    "train.loop": {"blas", "config", "distributed", "gpt2", "lora", "optim", "params", "tokenizer", "train.data",
                   "train.rundir", "train.settings", "train.start", "train.step", "train.stop"},
    "train": {"train.data", "train.loop", "train.rundir", "train.settings", "train.start", "train.step", "train.stop"},
    # the command lines: what they share (cli), then one file a command, then the list of them
    "cli": {"adapter", "config", "distributed", "download", "files", "gpt2", "tokenizer", "version", "vocab"},
    "generate": {"adapter", "cli", "config", "decoding", "download", "tf_checkpoint", "tokenizer", "vocab"},
    "explore.__main__": {"adapter", "cli", "download", "tf_checkpoint"},
    "train.__main__": {"cli", "distributed", "download", "tf_checkpoint", "train"},
    "evaluate.__main__": {"adapter", "cli", "download", "evaluate", "files", "tasks", "tf_checkpoint", "tokenizer",
                          "evaluate.datasets", "evaluate.zeroshot"},
    "export": {"cli", "download", "save", "tf_checkpoint", "tokenizer"},
    "__init__": {"config", "dispatch", "fast", "gpt2", "model", "tokenizer", "version"},
    "__main__": {"evaluate.__main__", "explore.__main__", "export", "generate", "train.__main__", "version"},
}
RUNTIME_DEPENDENCIES = {"numpy", "regex", "requests", "tqdm"}


def path_of(module: str) -> Path:
    """minigpt2/<module>.py, or a package's file ("train.loop" -> minigpt2/train/loop.py, "train" -> its
    __init__.py)."""
    parts = module.split(".")
    if (PACKAGE / Path(*parts)).is_dir():
        return PACKAGE / Path(*parts) / "__init__.py"
    return PACKAGE / Path(*parts[:-1]) / f"{parts[-1]}.py"


def room(dotted: str) -> str:
    """A module of ours by its name under minigpt2 ("train.loop", "config"), a module of a package named as
    such, anything else of the package (e.g. `from minigpt2.train import x`) by its first part."""
    parts = dotted.split(".")
    if len(parts) > 1 and (PACKAGE / parts[0]).is_dir():
        return ".".join(parts[:2])
    return parts[0]


def imports(module: str) -> tuple[set[str], set[str]]:
    """(modules of ours, third-party top-level packages) imported anywhere in the module's file: at the top,
    inside functions and methods, or under a condition (ast.walk visits every node), except under
    `if __name__ == "__main__":`, where a module that is also a command runs its own main. Relative imports
    are resolved from the file's own package (a file of minigpt2/train/ importing `.stop` imports train.stop)."""
    path = path_of(module)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    tree.body = [node for node in tree.body if not is_main_block(node)]
    here = [] if path.parent == PACKAGE else [path.parent.name]  # the package the file is in, below minigpt2
    ours, theirs = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = here[: len(here) - (node.level - 1)] if node.level - 1 <= len(here) else None
            assert base is not None, f"{path}: an import above the package"
            if node.module:
                ours.add(room(".".join(base + [node.module])))
            else:  # from . import backward
                ours.update(room(".".join(base + [a.name])) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            theirs.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            theirs.update(a.name.split(".")[0] for a in node.names)
    ours.discard(module)
    return ours, theirs


def is_main_block(node) -> bool:
    return isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) and "__name__" in ast.unparse(node.test)


def test_a_main_block_only_hands_over_to_the_command_line():
    for module in ALLOWED:
        tree = ast.parse(path_of(module).read_text(encoding="utf-8"))
        for node in (n for n in tree.body if is_main_block(n)):
            ours = {n.module for n in ast.walk(node) if isinstance(n, ast.ImportFrom) and n.level}
            assert ours <= {"cli"}, f"minigpt2/{module}.py's __main__ block imports {ours}"


def all_modules() -> set[str]:
    """Every module file of minigpt2, a package's files named "package.file" and its __init__ by the package."""
    out = set()
    for p in PACKAGE.rglob("*.py"):
        parts = list(p.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out.add(".".join(parts))
    return out


def test_every_module_is_listed():
    assert all_modules() == set(ALLOWED)


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
        assert third_party <= RUNTIME_DEPENDENCIES | optional, f"{path_of(module)} imports {sorted(third_party)}"
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


MAX_LINES = 450


def test_no_module_is_longer_than_one_sitting():
    for module in ALLOWED:
        n = len(path_of(module).read_text(encoding="utf-8").splitlines())
        assert n <= MAX_LINES, f"{path_of(module)} has {n} lines (at most {MAX_LINES}: split it by job)"


def test_one_seam_between_textbook_and_tuned_code():
    """Only the package's __init__ imports fast.py; every function marked @tunable has its tuned form
    registered, and each tuned form replaces a function marked @tunable."""
    importers = {m for m in ALLOWED if "fast" in imports(m)[0]}
    assert importers == {"__init__"}, f"{sorted(importers - {'__init__'})} import fast.py: go through dispatch.py"
    import minigpt2  # noqa: F401  (registers the tuned forms)
    from minigpt2 import backward, dispatch, model, ops, optim

    marked = {f.key for mod in (ops, model, backward, optim) for f in vars(mod).values() if hasattr(f, "textbook")}
    assert marked == set(dispatch._tuned_forms), "a @tunable without a tuned form, or a tuned form of nothing"


def test_every_installed_command_names_a_function_that_exists():
    """pyproject's [project.scripts] (`minigpt2-generate`, ...) point at the commands where they live now."""
    import importlib
    import tomllib

    scripts = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) >= {"minigpt2", "minigpt2-generate", "minigpt2-train", "minigpt2-evaluate", "minigpt2-export"}
    for name, target in scripts.items():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function, None)), f"{name} -> {target}"


MAX_FUNCTION_LINES = 60


def test_no_function_is_longer_than_a_screen():
    for module in ALLOWED:
        tree = ast.parse(path_of(module).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                assert n <= MAX_FUNCTION_LINES, (f"{path_of(module)}: {node.name} has {n} lines (at most "
                                                 f"{MAX_FUNCTION_LINES}: split it)")


def test_the_reading_order_quotes_the_files_as_they_are():
    import sys

    sys.path.insert(0, str(PACKAGE.parent / "scripts"))
    import reading_order

    assert reading_order.main(["--check"]) == 0, "docs/reading.md's line counts are stale: python " \
                                                 "scripts/reading_order.py rewrites them"

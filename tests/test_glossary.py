"""docs/glossary.md points readers of Chinese-language tutorials at code: every name and flag it gives exists."""

import importlib
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GLOSSARY = (REPO / "docs" / "glossary.md").read_text(encoding="utf-8")
MODULES = {p.stem for p in (REPO / "minigpt2").glob("*.py")} | {p.parent.name for p in (REPO / "minigpt2").glob("*/__init__.py")}


def test_every_name_the_glossary_gives_exists():
    names = re.findall(r"`([a-z_0-9]+)\.([A-Za-z_0-9.]+)", GLOSSARY)  # `module.name`, `module.Class.method`
    checked = 0
    for module, path in names:
        if module not in MODULES or path == "py":
            continue
        obj = importlib.import_module(f"minigpt2.{module}")
        for part in path.split("."):
            assert hasattr(obj, part), f"docs/glossary.md names {module}.{path}, which does not exist"
            obj = getattr(obj, part)
        checked += 1
    assert checked >= 30


def test_every_flag_the_glossary_gives_exists():
    flags = set(re.findall(r"`(--[a-z-]+)", GLOSSARY))
    source = "".join(p.read_text(encoding="utf-8") for p in (REPO / "minigpt2").rglob("*.py"))
    defined = set(re.findall(r"add_argument\(\s*\"(--[a-z-]+)\"", source))
    assert flags and flags <= defined, f"flags no command takes: {sorted(flags - defined)}"

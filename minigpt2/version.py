"""minigpt2's version (pyproject.toml reads it from here; `--version` on every command prints it)."""

__version__ = "0.2.0"

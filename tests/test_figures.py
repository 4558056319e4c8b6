"""Figures quoted in the docs come from the committed outputs of the scripts that measured them
(docs/figures/*.json, each naming its CPU and date): every number the JSON holds appears in the page that
quotes it, as the page prints it, with the machine and the date."""

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIGURES = REPO / "docs" / "figures"


def shown(value) -> str:
    """A figure as the docs print it: integers and figures of 1,000 or more with thousands separators, others to
    4 decimals."""
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4f}"


def figures(name: str) -> dict:
    return json.loads((FIGURES / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", ["zeroshot_tiny.json", "bench_zeroshot.json"])
def test_every_output_names_its_machine_and_date(name):
    out = figures(name)
    assert out["machine"] and out["date"]
    assert out["machine"] in (REPO / "docs" / "results.md").read_text(encoding="utf-8")
    assert out["date"] in (REPO / "docs" / "results.md").read_text(encoding="utf-8")


def test_results_md_quotes_tiny_s_scores_as_measured():
    page = (REPO / "docs" / "results.md").read_text(encoding="utf-8")
    for task, result in figures("zeroshot_tiny.json")["results"].items():
        for key, value in result.items():
            if key in ("file", "seconds", "truncated"):
                continue
            row = next((line for line in page.splitlines() if line.startswith(f"| `{task}` |")), "")
            assert f"{key} {shown(value)}" in row, f"docs/results.md's {task} row does not quote {key} {shown(value)}"


def test_results_md_quotes_the_speed_as_measured():
    page = (REPO / "docs" / "results.md").read_text(encoding="utf-8")
    out = figures("bench_zeroshot.json")
    c = out["comparison"]
    for quote in (f"{c['ratio']:.2f}x", f"{c['minigpt2_passages_per_s']:.2f}", f"{c['harness_passages_per_s']:.2f}",
                  f"{c['passages']:,} passages"):
        assert quote in page, f"docs/results.md does not quote {quote} from docs/figures/bench_zeroshot.json"
    if "full" in out:
        assert f"{out['full']['minutes']:.1f} minutes" in page

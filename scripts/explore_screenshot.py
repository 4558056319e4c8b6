"""Draw docs/explore.png, the README's picture of the explorer page: the bundled model on a sentence of the kind
it was trained on, opened in the same headless Chromium the tests use (tests/browser.py), network off.

    python scripts/explore_screenshot.py [--out docs/explore.png]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from minigpt2 import GPT2, Tokenizer  # noqa: E402
from tests.browser import open_chromium  # noqa: E402

TEXT = "The for statement iterates over the items of any sequence, in the order that they appear in the sequence."


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(REPO / "docs" / "explore.png"))
    args = p.parse_args()
    model, tok = GPT2.from_pretrained("tiny"), Tokenizer.from_pretrained("tiny")
    page = model.explore(TEXT, tok, name="tiny, minigpt2's bundled model")
    driver = open_chromium(1280, 1000)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            driver.get(page.save(Path(tmp) / "page.html").as_uri())
            position = page.tokens.index(" sequence")  # the first " sequence": what comes after it?
            driver.execute_script("explorer.select(arguments[0], arguments[1], arguments[2])", 2, 1, position)
            driver.save_screenshot(args.out)
    finally:
        driver.quit()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

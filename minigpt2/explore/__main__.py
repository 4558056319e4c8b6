"""`python -m minigpt2.explore "text" --out page.html`: write the explorer page for a text (the library is this
package: `model.explore(text, tok)`)."""

from __future__ import annotations

import os
import sys

from ..adapter import adapter_base
from ..cli import Parser, command, fail, model_tokenizer, parse_in_one_process, read_prompt, some_model
from ..download import DownloadError
from ..tf_checkpoint import CheckpointError

PROG = "minigpt2-explore"


@command
def explore_main(argv: list[str] | None = None) -> int:
    """`python -m minigpt2.explore "text" [--model M] [--adapter DIR] --out page.html`."""
    p = Parser(prog=PROG, description="Write one HTML page that shows what the model does with a text: attention "
               "(head view, model view), the logit lens, the next token under temperature / top-k / top-p, and the "
               "surprise of each token. The page needs no server and no network.")
    p.add_argument("text", help="the text to look at; '-' reads it from standard input")
    p.add_argument("--model", default=None, help="124M, ..., tiny (bundled), or a model directory (default 124M, or "
                   "tiny, saying so, when 124M is neither cached nor downloadable)")
    p.add_argument("--adapter", default=None, metavar="DIR", help="a LoRA adapter on --model (default: the base its "
                   "adapter_config.json names)")
    p.add_argument("--out", default="explore.html", metavar="FILE", help="the page to write (default explore.html)")
    p.add_argument("--title", default=None, help="the page's title (default: the text's first line)")
    args = parse_in_one_process(p, argv)
    try:
        if os.path.isdir(args.out):
            raise IsADirectoryError(f"--out {args.out} is a directory; name the page's file, e.g. {args.out}/page.html")
        text = read_prompt(args.text)
        if not text:
            raise ValueError("the text is empty: there is nothing to look at")
        model, name = some_model(PROG, adapter_base(args.model, args.adapter), args.adapter)
        tok = model_tokenizer(PROG, name, model.config.n_vocab)
        page = model.explore(text, tok, title=args.title, name=f"{name}{f' + {args.adapter}' if args.adapter else ''} "
                             f"({model.config.n_layer} layers x {model.config.n_head} heads)", progress=True)
        path = page.save(args.out)
    except (OSError, ValueError, CheckpointError, DownloadError) as e:
        return fail(PROG, e)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {len(page.tokens)} tokens): open it in a browser")
    return 0


if __name__ == "__main__":
    sys.exit(explore_main())

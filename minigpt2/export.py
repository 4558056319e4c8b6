"""a model directory -> Hugging Face's layout, from the command line: `python -m minigpt2.export MODEL DEST`.

    python -m minigpt2.export my-run my-run-hf     # then GPT2LMHeadModel.from_pretrained("my-run-hf")

MODEL is anything `GPT2.from_pretrained` reads; DEST receives config.json, model.safetensors, vocab.json and
merges.txt (GPT2.save with format="huggingface" is the same from Python).
"""

from __future__ import annotations

import os
import sys

from .cli import Parser, adapted_model, command, parse_in_one_process
from .download import DownloadError
from .save import OverwriteRefused
from .tf_checkpoint import CheckpointError
from .tokenizer import Tokenizer


@command
def export_main(argv: list[str] | None = None) -> int:
    """`python -m minigpt2.export MODEL DEST`: write a model in Hugging Face's layout."""
    p = Parser(prog="minigpt2-export", description="Write a model in Hugging Face's GPT-2 layout.")
    p.add_argument("model", help="124M, ..., or a model directory (OpenAI, Hugging Face, minigpt2)")
    p.add_argument("dest", help="the directory to write config.json, model.safetensors, vocab.json, merges.txt into")
    p.add_argument("--adapter", default=None, metavar="DIR", help="a LoRA adapter on MODEL (needs --merge)")
    p.add_argument("--merge", action="store_true", help="fold the LoRA adapter (--adapter, or MODEL itself when it "
                   "is an adapter or a LoRA run) into the weights, W + (alpha / r) B A, and write a plain model")
    p.add_argument("--overwrite", action="store_true", help="write even where another model is: other formats' "
                   "files stay beside ours; a Hugging Face model minigpt2 did not export is replaced")
    args = parse_in_one_process(p, argv)
    try:
        model = adapted_model(args.model, args.adapter, "--adapter" if args.adapter else "MODEL")
        if model.adapter is not None and not args.merge:
            raise ValueError("MODEL carries a LoRA adapter: pass --merge to fold it into the weights (the adapter "
                             "itself is already in PEFT's layout)")
        if args.merge and model.adapter is None:
            raise ValueError("--merge: there is no LoRA adapter to merge (give --adapter DIR, or an adapter as MODEL)")
        name = model.base_name if args.adapter is None and model.adapter is not None else args.model
        if model.adapter is not None:
            model.merge_adapter()
        try:
            tok = Tokenizer.from_pretrained(name)
        except FileNotFoundError:
            tok = False  # a model saved without its vocabulary: the weights alone, said below
            print(f"minigpt2-export: {args.model} holds no vocabulary; writing the weights alone", file=sys.stderr)
        try:
            model.save(args.dest, tok, format="huggingface", overwrite=args.overwrite)
        except OSError as e:
            if not e.strerror:
                raise
            elsewhere = e.filename and os.path.abspath(e.filename) != os.path.abspath(args.dest)
            where = f" ({e.filename})" if elsewhere else ""
            raise OSError(f"DEST {args.dest}: cannot write the model there{where}: {e.strerror}") from None
    except OverwriteRefused as e:
        print(f"minigpt2-export: error: {e.reason}. Export into another directory, or pass --overwrite to "
              f"{e.overwrite_does}", file=sys.stderr)
        return 2
    except (OSError, ValueError, CheckpointError, DownloadError) as e:
        print(f"minigpt2-export: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.dest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(export_main())

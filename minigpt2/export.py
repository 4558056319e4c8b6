"""a model directory -> Hugging Face's layout, from the command line: `python -m minigpt2.export MODEL DEST`.

    python -m minigpt2.export my-run my-run-hf     # then GPT2LMHeadModel.from_pretrained("my-run-hf")

MODEL is anything `GPT2.from_pretrained` reads; DEST receives config.json, model.safetensors, vocab.json and
merges.txt (GPT2.save with format="huggingface" is the same from Python). The command is cli.export_main.
"""

import sys

from .cli import export_main

if __name__ == "__main__":
    sys.exit(export_main())

"""text -> batches -> steps -> checkpoints: pre-training and fine-tuning GPT-2 (`python -m minigpt2.train`: __main__.py).

One job a file, in the order the data flows:

    settings.py   flags -> TrainConfig; the checks, the errors, what a resumed run may change
    data.py       files -> token ids or task examples -> the batches of a step
    stop.py       Ctrl-C / SIGTERM -> a clean stop, agreed between MPI ranks
    rundir.py     the run's directory: checkpoints, log.jsonl, the lock, settings.json, best/, the summary
    step.py       batches -> one step's loss and gradient; the validation loss; divergence
    start.py      settings -> a Run (the model, the optimizer, the data): a new run, or a resumed one
    loop.py       a Run -> steps -> checkpoints: `train`


    python -m minigpt2.train --data book.txt --out my-gpt2                     # fine-tune GPT-2 124M
    python -m minigpt2.train --data texts/ --out my-small --init scratch --n-layer 2 --n-head 4 --n-embd 128

The objective is GPT-2's own: maximise the likelihood of the text, one next token at a time, i.e. minimise
the mean cross-entropy (backward.py). Each step draws `batch_size` random windows of `block_size + 1` tokens
(inputs and the same shifted by one as targets) per micro-batch, averages the gradients of `grad_accum`
micro-batches, clips their global norm, and takes an AdamW step with the scheduled learning rate
(optim.py: linear warmup, then cosine decay).

A .jsonl task file instead (tasks.py) trains on prompt/completion pairs, maximising sum log P(completion |
prompt): each epoch visits every example once in a seeded order, `batch_size` examples right-padded per
micro-batch, the loss the mean over every scored token of the step (the completion and <|endoftext|>).
`dropout` > 0 drops where GPT-2 does, with masks from a generator of its own (saved with the checkpoint).

The output directory holds, at every instant, a complete model (`GPT2.from_pretrained(DIR)`,
`Tokenizer.from_pretrained(DIR)`, `python -m minigpt2.generate --model DIR`) and the state to continue it:

    minigpt2.safetensors (+ encoder.json, vocab.bpe)   the model at the last checkpoint, with its step
    optimizer-<step>.safetensors                         AdamW's moments, the step, the batch RNG, the settings
    log.jsonl                                            one JSON line per step and per evaluation

A checkpoint writes the optimizer state under a new name, then the model (renamed last: the commit point,
naming its step), then removes the older optimizer state; a kill at any instant leaves the last complete
checkpoint. `resume=True` continues from it and ends with exactly the weights and per-step losses of a run
that was never interrupted.
"""

from .data import TaskData, TextData, load_tokens, tokenize, trim_token_cache
from .loop import run_steps, train
from .rundir import BEST_DIR, LOG_FILE, SETTINGS_FILE, read_log_records, run_state, save_checkpoint
from .settings import OtherRankFailed, TrainConfig, TrainingDiverged, TrainingError
from .start import Run, prepare_run
from .step import step_gradient, validator
from .stop import StepAbandoned, TrainingInterrupted

__all__ = ["BEST_DIR", "LOG_FILE", "SETTINGS_FILE", "OtherRankFailed", "Run", "StepAbandoned", "TaskData", "TextData",
           "TrainConfig", "TrainingDiverged", "TrainingError", "TrainingInterrupted", "load_tokens", "prepare_run",
           "read_log_records", "run_state", "run_steps", "save_checkpoint", "step_gradient", "tokenize", "train",
           "trim_token_cache", "validator"]

"""lm-evaluation-harness offline: its own task files (YAML, Python, metrics) pointed at local JSON lines, its
`hf` backend loading a model directory minigpt2 exported. The reference of tests/test_zeroshot.py and of
scripts/bench_zeroshot.py."""

from __future__ import annotations

import os

TASK_FILES = {"lambada_openai": "lambada/lambada_openai.yaml", "wikitext": "wikitext/wikitext.yaml",
              "hellaswag": "hellaswag/hellaswag.yaml"}


def harness_task(task: str, data_file, split: str):
    """The harness's task `task` built from its own YAML, its data read from `data_file` for every split the task
    names (only `split` is scored)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import lm_eval.tasks
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    config = load_yaml(os.path.join(os.path.dirname(lm_eval.tasks.__file__), TASK_FILES[task]))
    splits = {config[k] for k in ("training_split", "validation_split", "test_split") if config.get(k)}
    assert split in splits, f"{task} scores its {splits} splits, not {split}"
    config.update(dataset_path="json", dataset_name=None,
                  dataset_kwargs={"data_files": {s: str(data_file) for s in splits}})
    return ConfigurableTask(config=config)


def harness_model(model_dir, batch_size: int = 8):
    """The harness's `hf` backend on a Hugging Face model directory: float32 on the CPU."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=str(model_dir), batch_size=batch_size, device="cpu", dtype="float32")


def harness_evaluate(lm, task: str, built) -> tuple[dict, list[dict]]:
    """Run a built task: (figures {"acc": ...}, its samples in document order)."""
    from lm_eval.evaluator import evaluate

    out = evaluate(lm=lm, task_dict={task: built}, log_samples=True, bootstrap_iters=0)
    figures = {k.split(",")[0]: v for k, v in out["results"][task].items() if k.endswith(",none")}
    return figures, sorted(out["samples"][task], key=lambda s: s["doc_id"])


def run_harness(model_dir, task: str, data_file, split: str) -> tuple[dict, list[dict]]:
    """lm-evaluation-harness's task `task` on `data_file`, scored by its `hf` backend loading `model_dir` with
    batch size 8, float32: (figures, samples by doc_id)."""
    return harness_evaluate(harness_model(model_dir), task, harness_task(task, data_file, split))

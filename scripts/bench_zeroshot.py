"""LAMBADA at GPT-2 124M's shape: minigpt2's zero_shot against lm-evaluation-harness's `hf` backend on the same
passages and the same weights, batch size 8 both, measured in one run on this machine; then (with --full) all
5,153 passages with minigpt2 alone.

    python scripts/bench_zeroshot.py [--passages 400] [--reps 3] [--full] [--threads 2] [--out docs/figures/bench_zeroshot.json]

Targets (issue "GPT-2's own results"): minigpt2 >= 1.2x the harness's passages per second; the whole set in
under 20 minutes on two cores. The weights are random (the speed does not depend on them); the two sides'
log-likelihoods are checked equal (1e-4 relative) on the passages both scored, so that the race is fair.
Needs the test and reference extras and lm-eval (pip install -e ".[test,reference]"), and OpenAI's vocabulary
(../shared/data, or the cache).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAMBADA = REPO.parent / "shared" / "data" / "eval" / "lambada_test.jsonl"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--passages", type=int, default=400, help="passages both sides score (default 400)")
    p.add_argument("--reps", type=int, default=3, help="alternating repetitions of the comparison (default 3)")
    p.add_argument("--full", action="store_true", help="also time minigpt2 on all 5,153 passages")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for NumPy's BLAS and torch")
    p.add_argument("--lambada", default=str(LAMBADA), help="LAMBADA's file (default ../shared/data/eval's)")
    p.add_argument("--out", default=None, help="write the results as JSON here too")
    return p.parse_args(argv)


def machine() -> str:
    import platform

    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    return platform.processor()


def measure(args) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import numpy as np
    import torch

    sys.path.insert(0, str(REPO))
    from minigpt2 import GPT2, GPT2Config, Tokenizer
    from minigpt2.evaluate.zeroshot import zero_shot
    from tests.harness import harness_evaluate, harness_model, harness_task

    torch.set_num_threads(args.threads)
    vocab = REPO.parent / "shared" / "data"
    tok = Tokenizer.from_dir(vocab) if (vocab / "encoder.json").is_file() else Tokenizer.from_pretrained("124M")
    model = GPT2.init(GPT2Config.from_name("124M"), seed=0)
    out: dict = {"machine": machine(), "date": date.today().isoformat(), "threads": args.threads,
                 "shape": "124M, random weights, float32", "batch_size": 8}
    with tempfile.TemporaryDirectory() as tmp:
        model.save(Path(tmp) / "hf", tok, format="huggingface")
        lines = Path(args.lambada).read_text(encoding="utf-8").splitlines()
        sample = Path(tmp) / "lambada.jsonl"
        sample.write_text("\n".join(lines[: args.passages]) + "\n", encoding="utf-8")
        lm = harness_model(Path(tmp) / "hf", batch_size=8)  # loading is not timed, on either side
        task = harness_task("lambada_openai", sample, "test")
        times: dict[str, list[float]] = {"minigpt2": [], "harness": []}
        for _ in range(args.reps):  # alternating, A B A B ..., medians: a shared host drifts
            t0 = time.perf_counter()
            mine = zero_shot(model, tok, "lambada", sample, batch_size=8)
            t1 = time.perf_counter()
            theirs, samples = harness_evaluate(lm, "lambada_openai", task)
            t2 = time.perf_counter()
            times["minigpt2"].append(t1 - t0)
            times["harness"].append(t2 - t1)
        ours_ll = [s["continuations"][0]["loglikelihood"] for s in mine.samples]
        np.testing.assert_allclose(ours_ll, [s["resps"][0][0][0] for s in samples], rtol=1e-4)
        n = mine.figures["n"]
        a, b = statistics.median(times["minigpt2"]), statistics.median(times["harness"])
        out["comparison"] = {"passages": n, "reps": args.reps, "minigpt2_seconds": times["minigpt2"],
                             "harness_seconds": times["harness"], "minigpt2_passages_per_s": n / a,
                             "harness_passages_per_s": n / b, "ratio": b / a, "target_ratio": 1.2}
        if args.full:
            t0 = time.perf_counter()
            full = zero_shot(model, tok, "lambada", args.lambada, batch_size=8)
            seconds = time.perf_counter() - t0
            out["full"] = {"passages": full.figures["n"], "seconds": seconds, "minutes": seconds / 60,
                           "target_minutes": 20}
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # before NumPy loads its BLAS
        os.environ[var] = str(args.threads)
    results = measure(args)
    c = results["comparison"]
    print(f"machine: {results['machine']}, {results['threads']} threads; {results['shape']}; batch size 8")
    print(f"LAMBADA, {c['passages']} passages, medians of {c['reps']}: minigpt2 {c['minigpt2_passages_per_s']:.2f} passages/s, "
          f"lm-evaluation-harness (hf) {c['harness_passages_per_s']:.2f} -> {c['ratio']:.2f}x (target >= 1.2x)")
    if "full" in results:
        f = results["full"]
        print(f"all {f['passages']} passages with minigpt2: {f['minutes']:.1f} minutes (target < 20)")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

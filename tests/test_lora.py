"""LoRA: the adapted forward and the gradients of A and B equal PEFT on transformers under PyTorch autograd in
float64; adapters written by either side load in the other with equal logits; merged equals unmerged; bad
adapters and settings are named."""

import json

import numpy as np
import pytest

from minigpt2 import GPT2, GPT2Config
from minigpt2.adapter import AdapterError, read_adapter, write_adapter
from minigpt2.config import ArgumentError
from minigpt2.lora import LoraConfig, init_adapter, lora_delta, lora_delta_backward
from minigpt2.params import flatten

from .test_backward import check_against_finite_differences


def require(name):
    return pytest.importorskip(name, reason=f"{name} is the reference here: pip install -e '.[reference]'")


# PEFT 0.21 reads a property transformers 5 has deprecated; a warning from the references, not from minigpt2
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")

CONFIG = GPT2Config(n_vocab=97, n_ctx=32, n_embd=48, n_head=4, n_layer=2)
EVERY = ("c_attn", "c_proj", "c_fc")


def adapted(targets=("c_attn",), r=4, alpha=8.0, seed=0, std=0.2):
    """A random model with an adapter whose B is not zero (a fresh B is, and would hide half the math)."""
    model = GPT2.init(CONFIG, seed=seed, std=std)
    model.add_adapter(LoraConfig(r=r, alpha=alpha, targets=targets), seed=seed)
    rng = np.random.default_rng(seed + 1)
    for block in model.adapter["blocks"]:
        for layers in block.values():
            for ab in layers.values():
                ab["lora_B"][...] = rng.standard_normal(ab["lora_B"].shape) * 0.3
    return model


def peft_twin(model, dtype="float32"):
    """transformers' GPT2LMHeadModel with the same base weights, wrapped by PEFT with the same adapter."""
    torch = require("torch")
    peft = require("peft")
    from .reference import hf_model

    hf = hf_model(GPT2(model.config, model.base_params))
    cfg = peft.LoraConfig(r=model.lora.r, lora_alpha=model.lora.alpha, lora_dropout=0.0,
                          target_modules=list(model.lora.targets), fan_in_fan_out=True, bias="none",
                          task_type="CAUSAL_LM")
    twin = peft.get_peft_model(hf, cfg).to(getattr(torch, dtype))
    state = {}
    for i, block in enumerate(model.adapter["blocks"]):
        for group, layers in block.items():
            for layer, ab in layers.items():
                for which in "AB":
                    state[f"base_model.model.transformer.h.{i}.{group}.{layer}.lora_{which}.default.weight"] = \
                        torch.from_numpy(np.array(ab[f"lora_{which}"], dtype=np.float64))
    missing, unexpected = twin.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    assert not [m for m in missing if "lora_" in m], "every LoRA matrix set"
    twin.eval()
    return twin


def test_a_fresh_adapter_is_peft_initialised_and_changes_nothing():
    model = GPT2.init(CONFIG, seed=1, std=0.2)
    ids = np.arange(10)
    before = model(ids)
    model.add_adapter(LoraConfig(r=8, targets=EVERY), seed=0)
    np.testing.assert_array_equal(model(ids), before)  # B = 0
    a = model.adapter["blocks"][0]["mlp"]["c_proj"]["lora_A"]  # [r, in = 4C]
    assert a.shape == (8, 4 * 48) and np.abs(a).max() <= 1 / np.sqrt(4 * 48)
    assert np.abs(a).max() > 0.9 / np.sqrt(4 * 48), "uniform over the whole kaiming bound"
    assert set(model.adapter["blocks"][0]) == {"attn", "mlp"}
    assert set(model.adapter["blocks"][0]["attn"]) == {"c_attn", "c_proj"}, "c_proj names both projections"


def test_the_low_rank_term_and_its_backward_against_finite_differences():
    rng = np.random.default_rng(0)
    x, a, b = rng.standard_normal((2, 5, 6)), rng.standard_normal((3, 6)), rng.standard_normal((7, 3))
    w = rng.standard_normal((2, 5, 7))
    dx, da, db = lora_delta_backward(w, x, a, b, 1.5)
    check_against_finite_differences(lambda: (w * lora_delta(x, a, b, 1.5)).sum(),
                                     {"x": x, "a": a, "b": b}, {"x": dx, "a": da, "b": db})


@pytest.mark.reference
@pytest.mark.parametrize("targets", [("c_attn",), EVERY])
def test_lora_forward_and_gradients_equal_peft_under_autograd(targets):
    """float64 on both sides: logits to 1e-10, the loss and every dA, dB to 2e-4 of its scale (as the full
    backward); the base receives no gradient."""
    torch = require("torch")
    from minigpt2.lora import attach
    from minigpt2.params import unflatten

    model = adapted(targets)

    base64 = unflatten({k: v.astype(np.float64) for k, v in flatten(model.base_params).items()})
    adapter64 = unflatten({k: v.astype(np.float64) for k, v in flatten(model.adapter).items()})
    params64 = attach(base64, adapter64, model.lora.scaling)
    twin = peft_twin(model, "float64")
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 97, (2, 12))
    targets = np.where(rng.random((2, 12)) < 0.2, -1, rng.integers(0, 97, (2, 12)))
    from minigpt2 import backward, reference_mode
    from minigpt2.model import gpt2

    with reference_mode():
        logits = gpt2(ids, params64, model.config)
        loss, grads = backward.loss_and_grads(ids, targets, params64, model.config)
    out = twin(torch.from_numpy(ids)).logits
    np.testing.assert_allclose(logits, out.detach().numpy(), rtol=0, atol=1e-10)
    ref_loss = torch.nn.functional.cross_entropy(out.reshape(-1, 97), torch.from_numpy(targets).reshape(-1),
                                                 ignore_index=-1)
    ref_loss.backward()
    assert loss == pytest.approx(ref_loss.item(), rel=1e-10)
    named = dict(twin.named_parameters())
    flat = flatten(grads)
    assert set(flat) == set(flatten(model.adapter)), "the grads are the adapter's, nothing of the base"
    for name, g in flat.items():
        i, group, layer, which = name.split(".")[1], *name.split(".")[2:4], name.split(".")[-1]
        ref = named[f"base_model.model.transformer.h.{i}.{group}.{layer}.{which}.default.weight"].grad.numpy()
        np.testing.assert_allclose(g, ref, rtol=0, atol=2e-4 * np.abs(ref).max(), err_msg=name)
    assert all(p.grad is None for n, p in named.items() if "lora_" not in n), "PEFT freezes the base too"


def test_tuned_and_textbook_lora_gradients_agree():
    from minigpt2 import reference_mode

    model = adapted(EVERY)
    rng = np.random.default_rng(4)
    ids, targets = rng.integers(0, 97, (2, 20)), rng.integers(0, 97, (2, 20))
    with reference_mode():
        ref_loss, ref = model.loss_and_grads(ids, targets)
    loss, grads = model.loss_and_grads(ids, targets)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    for k, g in flatten(ref).items():
        np.testing.assert_allclose(flatten(grads)[k], g, rtol=0, atol=1e-4 * np.abs(g).max(), err_msg=k)


def test_merged_equals_unmerged():
    model = adapted(EVERY)
    ids = np.arange(16)
    unmerged = model(ids)
    model.merge_adapter()
    assert model.adapter is None
    np.testing.assert_allclose(model(ids), unmerged, rtol=0, atol=2e-5 * np.abs(unmerged).max())


@pytest.mark.reference
def test_an_adapter_written_by_minigpt2_loads_in_peft(tmp_path):
    torch = require("torch")
    peft = require("peft")
    from .reference import hf_model

    model = adapted(EVERY)
    model.save_adapter(tmp_path / "adapter", base="random-test-base")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["fan_in_fan_out"] is True and config["base_model_name_or_path"]
    hf = hf_model(GPT2(model.config, model.base_params))
    loaded = peft.PeftModel.from_pretrained(hf, tmp_path / "adapter").eval()
    ids = np.arange(20)
    with torch.no_grad():
        theirs = loaded(torch.from_numpy(ids[None])).logits[0].numpy()
    np.testing.assert_allclose(model(ids), theirs, rtol=0, atol=1e-4)


@pytest.mark.reference
def test_an_adapter_written_by_peft_loads_in_minigpt2(tmp_path):
    torch = require("torch")
    model = adapted(("c_attn", "c_fc"), r=6, alpha=12.0)
    twin = peft_twin(model)
    twin.save_pretrained(tmp_path / "peft-adapter")
    adapter, lora, _ = read_adapter(tmp_path / "peft-adapter", model.config)
    assert (lora.r, lora.alpha, lora.targets) == (6, 12.0, ("c_attn", "c_fc"))
    ours = GPT2(model.config, model.base_params).attach_adapter(adapter, lora)
    ids = np.arange(20)
    with torch.no_grad():
        theirs = twin(torch.from_numpy(ids[None])).logits[0].numpy()
    np.testing.assert_allclose(ours(ids), theirs, rtol=0, atol=1e-4)


def test_an_adapter_directory_finds_its_base(tmp_path):
    base = GPT2.init(CONFIG, seed=5, std=0.2)
    base.save(tmp_path / "base")
    model = GPT2.from_pretrained(tmp_path / "base").add_adapter(LoraConfig(r=2), seed=1)
    model.adapter["blocks"][1]["attn"]["c_attn"]["lora_B"][...] = 0.5
    model.save_adapter(tmp_path / "adapter", base=str(tmp_path / "base"))
    again = GPT2.from_pretrained(tmp_path / "adapter")
    np.testing.assert_array_equal(again(np.arange(9)), model(np.arange(9)))
    also = GPT2.from_pretrained(tmp_path / "base", adapter=tmp_path / "adapter")
    np.testing.assert_array_equal(also(np.arange(9)), model(np.arange(9)))
    with pytest.raises(ValueError, match="save_adapter"):
        model.save(tmp_path / "plain")


@pytest.mark.parametrize("lora, name", [
    (LoraConfig(r=0), "lora_rank"),
    (LoraConfig(r=49), "lora_rank"),
    (LoraConfig(alpha=-1.0), "lora_alpha"),
    (LoraConfig(dropout=1.0), "lora_dropout"),
    (LoraConfig(targets=("q_proj",)), "lora_targets"),
])
def test_bad_lora_settings_are_named(lora, name):
    with pytest.raises(ArgumentError) as e:
        GPT2.init(CONFIG).add_adapter(lora)
    assert e.value.name == name


def test_an_adapter_for_another_base_or_of_another_kind_is_refused(tmp_path):
    model = adapted(EVERY)
    write_adapter(tmp_path / "a", model.adapter, model.lora, "base")
    with pytest.raises(AdapterError, match="made for another base"):
        read_adapter(tmp_path / "a", GPT2Config(n_vocab=97, n_ctx=32, n_embd=64, n_head=4, n_layer=2))
    with pytest.raises(AdapterError, match="missing"):
        read_adapter(tmp_path / "a", GPT2Config(n_vocab=97, n_ctx=32, n_embd=48, n_head=4, n_layer=3))
    with pytest.raises(AdapterError, match="belongs to no layer"):
        read_adapter(tmp_path / "a", GPT2Config(n_vocab=97, n_ctx=32, n_embd=48, n_head=4, n_layer=1))
    cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    for change, message in (({"peft_type": "IA3"}, "IA3 adapter"), ({"use_dora": True}, "use_dora"),
                            ({"target_modules": ["q_proj"]}, "q_proj")):
        (tmp_path / "a" / "adapter_config.json").write_text(json.dumps({**cfg, **change}))
        with pytest.raises(AdapterError, match=message):
            read_adapter(tmp_path / "a", CONFIG)


def test_init_is_reproducible_and_depends_on_the_seed():
    lora = LoraConfig(r=4, targets=EVERY)
    a, b, c = (flatten(init_adapter(CONFIG, lora, s)) for s in (0, 0, 1))
    assert all(np.array_equal(a[k], b[k]) for k in a) and not np.array_equal(a["blocks.0.attn.c_attn.lora_A"],
                                                                              c["blocks.0.attn.c_attn.lora_A"])


# --- the command lines ----------------------------------------------------------------------------------


def run_cli(command, *args):
    import subprocess
    import sys
    from pathlib import Path

    return subprocess.run([sys.executable, "-m", f"minigpt2.{command}", *args], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=120,
                          env={"MINIGPT2_BASE_URL": "http://127.0.0.1:9/", "PATH": ""})


@pytest.fixture(scope="module")
def tiny_adapter(tmp_path_factory):
    """An adapter on the bundled model, with a B large enough to change its text."""
    d = tmp_path_factory.mktemp("lora-cli")
    model = GPT2.from_pretrained("tiny").add_adapter(LoraConfig(r=4, targets=("c_attn", "c_fc")), seed=0)
    rng = np.random.default_rng(0)
    for block in model.adapter["blocks"]:
        for layers in block.values():
            for ab in layers.values():
                ab["lora_B"][...] = rng.standard_normal(ab["lora_B"].shape) * 0.3
    model.save_adapter(d / "adapter", base="tiny")
    return model, d


def test_generate_evaluate_and_export_take_an_adapter(tiny_adapter):
    from minigpt2 import Tokenizer

    model, d = tiny_adapter
    tok = Tokenizer.from_pretrained("tiny")
    prompt = "The return value of the function is"
    expected = tok.decode(model.generate(tok.encode(prompt), 16, temperature=0))
    r = run_cli("generate", prompt, "--adapter", str(d / "adapter"), "--temperature", "0", "--max-new-tokens", "16")
    assert r.returncode == 0, r.stderr
    assert r.stdout == expected + "\n"
    assert expected != tok.decode(GPT2.from_pretrained("tiny").generate(tok.encode(prompt), 16, temperature=0))
    r = run_cli("export", str(d / "adapter"), str(d / "merged"))
    assert r.returncode == 2 and "--merge" in r.stderr
    r = run_cli("export", str(d / "adapter"), str(d / "merged"), "--merge")
    assert r.returncode == 0, r.stderr
    merged = GPT2.from_pretrained(d / "merged")
    assert merged.adapter is None
    ids = np.array(tok.encode(prompt))
    np.testing.assert_allclose(merged(ids), model(ids), rtol=0, atol=1e-4)
    (d / "text.txt").write_text(prompt + " called with the arguments given.\n")
    adapted = run_cli("evaluate", str(d / "text.txt"), "--adapter", str(d / "adapter"), "--json")
    plain = run_cli("evaluate", str(d / "text.txt"), "--model", str(d / "merged"), "--json")
    assert adapted.returncode == plain.returncode == 0, adapted.stderr + plain.stderr
    assert json.loads(adapted.stdout)["nll"] == pytest.approx(json.loads(plain.stdout)["nll"], rel=1e-5)


@pytest.mark.parametrize("command", ["generate", "evaluate", "export"])
def test_a_bad_adapter_is_one_line_naming_the_flag(tiny_adapter, command, tmp_path):
    _, d = tiny_adapter
    (tmp_path / "x.txt").write_text("hello")
    first = {"generate": ["hi"], "evaluate": [str(tmp_path / "x.txt")], "export": ["tiny", str(tmp_path / "out")]}
    r = run_cli(command, *first[command], "--adapter", str(tmp_path / "nothing"), "--model" if command != "export"
                else "--merge", *(["tiny"] if command != "export" else []))
    assert r.returncode == 2
    lines = [x for x in r.stderr.splitlines() if x.strip() and "%|" not in x]
    assert len(lines) == 1 and "--adapter" in lines[0] and "adapter_config.json" in lines[0], r.stderr


# --- training an adapter ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lora_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("lora-train")
    (d / "t.txt").write_text("The owl of the library is named Minerva. Every night Minerva counts the books. " * 80)
    rows = [{"prompt": f"{a} + {b} =", "completion": f" {a + b}"} for a in range(10) for b in range(10)]
    (d / "task.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def train_args(d, out, data="t.txt", steps=8, *more):
    return ["--data", str(d / data), "--out", str(out), "--init", "tiny", "--lora-rank", "4", "--lora-targets",
            "c_attn,c_fc", "--steps", str(steps), "--batch-size", "4", "--block-size", "32", "--eval-every", "4",
            "--eval-batches", "2", "--save-every", "4", "--lr", "3e-3", "--min-lr", "3e-3", "--warmup-steps", "0",
            *more]  # a constant learning rate: a run extended from 4 to 8 steps is the run of 8


def adapter_arrays(out):
    from minigpt2.safetensors import read_safetensors

    return {k: np.array(v) for k, v in read_safetensors(out / "adapter_model.safetensors")[0].items()}


def test_a_lora_run_trains_the_adapter_alone_and_resumes_bit_exact(lora_data, tmp_path):
    from minigpt2.train.__main__ import train_main

    assert train_main(train_args(lora_data, tmp_path / "straight", steps=8)) == 0
    assert train_main(train_args(lora_data, tmp_path / "halves", steps=4)) == 0
    assert train_main(["--out", str(tmp_path / "halves"), "--resume", "--steps", "8"]) == 0
    a, b = adapter_arrays(tmp_path / "straight"), adapter_arrays(tmp_path / "halves")
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a), "resumed bit for bit"
    assert not (tmp_path / "straight" / "minigpt2.safetensors").exists(), "the base is not copied into the run"
    from minigpt2.safetensors import read_safetensors

    state = read_safetensors(tmp_path / "straight" / "optimizer-8.safetensors")[0]
    assert {k.split(".", 1)[1] for k in state} == {k for k in flatten(GPT2.from_pretrained(tmp_path / "straight").adapter)}
    log = [json.loads(x) for x in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()]
    losses = [r["val_loss"] for r in log if "val_loss" in r]
    assert losses[-1] < losses[0], "the adapter learns"
    trained = GPT2.from_pretrained(tmp_path / "straight")  # the run directory is an adapter on its base
    assert trained.lora.r == 4 and trained.lora.targets == ("c_attn", "c_fc")
    best = GPT2.from_pretrained(tmp_path / "straight" / "best")
    assert best.adapter is not None


def test_a_lora_run_on_a_task_file_and_from_an_adapter(lora_data, tmp_path):
    from minigpt2.train.__main__ import train_main

    assert train_main(train_args(lora_data, tmp_path / "task", "task.jsonl", 4)) == 0
    more = ["--data", str(lora_data / "t.txt"), "--out", str(tmp_path / "more"), "--init", "tiny", "--steps", "2",
            "--batch-size", "2", "--block-size", "32", "--init-adapter", str(tmp_path / "task")]
    assert train_main(more) == 0
    assert GPT2.from_pretrained(tmp_path / "more").lora == GPT2.from_pretrained(tmp_path / "task").lora


@pytest.mark.parametrize("flags, named", [
    (["--lora-rank", "0"], "--lora-rank"),
    (["--lora-rank", "500"], "--lora-rank"),
    (["--lora-rank", "4", "--lora-targets", "q_proj"], "--lora-targets"),
    (["--lora-rank", "4", "--lora-alpha", "-2"], "--lora-alpha"),
    (["--lora-alpha", "16"], "--lora-alpha"),
    (["--lora-rank", "4", "--lora-dropout", "1.5"], "--lora-dropout"),
    (["--lora-dropout", "0.1"], "--lora-dropout"),
    (["--lora-rank", "4", "--init", "scratch", "--tokenizer", "tiny"], "--init scratch"),
    (["--init-adapter", "/nonexistent/adapter"], "--init-adapter"),
])
def test_bad_lora_flags_get_one_line(lora_data, tmp_path, flags, named):
    base = ["--data", str(lora_data / "t.txt"), "--out", str(tmp_path / "bad"), "--steps", "2", "--block-size", "32"]
    r = run_cli("train", *base, *(["--init", "tiny"] if "--init" not in flags else []), *flags)
    assert r.returncode == 2, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip() and "%|" not in x]
    assert len(lines) == 1 and named in lines[0], r.stderr


def test_init_adapter_flags_that_disagree_are_refused(lora_data, tmp_path):
    from minigpt2.train.__main__ import train_main

    assert train_main(train_args(lora_data, tmp_path / "first", steps=2)) == 0
    r = run_cli("train", "--data", str(lora_data / "t.txt"), "--out", str(tmp_path / "second"), "--init", "tiny",
                "--init-adapter", str(tmp_path / "first"), "--lora-rank", "8", "--steps", "2")
    assert r.returncode == 2 and "--lora-rank 8 disagrees" in r.stderr, r.stderr


@pytest.mark.slow
def test_a_lora_run_over_two_mpi_ranks_equals_one_process(lora_data, tmp_path):
    """Under MPI the adapters' gradients are what the ranks exchange (and their AdamW moments are split)."""
    import subprocess

    from .test_distributed import REPO, train_cmd

    for n, name in ((1, "one"), (2, "two")):
        r = subprocess.run(train_cmd(n, *train_args(lora_data, tmp_path / name, steps=6)), capture_output=True,
                           cwd=REPO, timeout=300)
        assert r.returncode == 0, r.stderr.decode()[-2000:]
    a, b = adapter_arrays(tmp_path / "one"), adapter_arrays(tmp_path / "two")
    for k in a:  # float32 sums in another order, then a few AdamW steps
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=2e-4, err_msg=k)


# --- recomputing activations ------------------------------------------------------------------------------


@pytest.mark.parametrize("lora", [False, True])
def test_recomputed_activations_give_the_same_gradients(lora):
    """Full and LoRA, with dropout (the recomputed blocks reuse the masks), 100 tokens (blocked attention): the
    recomputed forward makes the very same arrays, so the gradients are equal bit for bit."""
    from minigpt2.backward import loss_and_grads
    from minigpt2.model import Dropout

    model = adapted(EVERY) if lora else GPT2.init(GPT2Config(n_vocab=97, n_ctx=128, n_embd=48, n_head=4, n_layer=3),
                                                    seed=2, std=0.2)
    rng = np.random.default_rng(5)
    T = min(100, model.config.n_ctx)
    ids, targets = rng.integers(0, 97, (2, T)), rng.integers(-1, 97, (2, T))
    results = [loss_and_grads(ids, targets, model.params, model.config, Dropout(0.1, np.random.default_rng(0)),
                              recompute=r) for r in (False, True)]
    assert results[0][0] == results[1][0]
    plain, again = flatten(results[0][1]), flatten(results[1][1])
    assert set(plain) == set(again)
    for k in plain:
        np.testing.assert_array_equal(again[k], plain[k], err_msg=k)


def test_a_run_with_recomputed_activations_is_the_same_run(lora_data, tmp_path):
    from minigpt2.train.__main__ import train_main

    assert train_main(train_args(lora_data, tmp_path / "plain", steps=4)) == 0
    assert train_main(train_args(lora_data, tmp_path / "again", "t.txt", 4, "--recompute-activations")) == 0
    a, b = adapter_arrays(tmp_path / "plain"), adapter_arrays(tmp_path / "again")
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_the_adapters_dropout_gradient_against_finite_differences():
    """With lora_dropout, the adapter reads its input through a mask (training only); the gradient is exact for
    the masks drawn (replayed for the finite differences), and evaluation drops nothing."""
    from minigpt2 import backward, reference_mode
    from minigpt2.lora import attach
    from minigpt2.model import Dropout
    from minigpt2.params import unflatten

    model = adapted(EVERY)
    base = unflatten({k: v.astype(np.float64) for k, v in flatten(model.base_params).items()})
    adapter = unflatten({k: v.astype(np.float64) for k, v in flatten(model.adapter).items()})
    params = attach(base, adapter, model.lora.scaling, dropout=0.3)
    rng = np.random.default_rng(7)
    ids, targets = rng.integers(0, 97, (1, 6)), rng.integers(0, 97, (1, 6))
    drop = Dropout(0.0, np.random.default_rng(1))  # GPT-2's own places drop nothing; the adapters drop 0.3
    with reference_mode():
        _, grads = backward.loss_and_grads(ids, targets, params, model.config, drop)
        assert any(k.endswith(".lora") and not m.all() for k, m in drop.keep.items()), "some inputs were dropped"
        drop.replay = True
        flat = flatten(adapter)
        picked = {k: flat[k] for k in ("blocks.0.attn.c_attn.lora_A", "blocks.1.mlp.c_fc.lora_B")}
        from minigpt2.model import transformer

        def loss():  # the forward alone, with the masks replayed
            h = transformer(ids, params, model.config, dropout=drop)
            return backward.lm_head_and_loss(h, params["wte"], targets, with_grads=False)[0]

        check_against_finite_differences(loss, picked, {k: flatten(grads)[k] for k in picked})
    plain = attach(base, adapter, model.lora.scaling)
    from minigpt2.model import gpt2

    np.testing.assert_array_equal(gpt2(ids, params, model.config), gpt2(ids, plain, model.config))


def test_a_run_with_adapter_dropout_resumes_bit_exact(lora_data, tmp_path):
    from minigpt2.train.__main__ import train_main

    drop = ["--lora-dropout", "0.2"]
    assert train_main(train_args(lora_data, tmp_path / "straight", "t.txt", 8, *drop)) == 0
    assert train_main(train_args(lora_data, tmp_path / "halves", "t.txt", 4, *drop)) == 0
    assert train_main(["--out", str(tmp_path / "halves"), "--resume", "--steps", "8"]) == 0
    a, b = adapter_arrays(tmp_path / "straight"), adapter_arrays(tmp_path / "halves")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "straight" / "adapter_config.json").read_text())["lora_dropout"] == 0.2

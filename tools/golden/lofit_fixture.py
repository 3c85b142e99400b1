"""Run LoFiT's reference code (fc2869/lo-fit ebd344a, unmodified) on a tiny random LLaMA and store what it computes:
tests/golden/lofit_reference.pt, read by tests/test_lofit_golden.py.

    mkdir -p /tmp/lofit-src && git --git-dir=<lo-fit mirror> archive ebd344a lofit_trainer.py models utils \\
        | tar -x -C /tmp/lofit-src
    OMP_NUM_THREADS=1 /work/wt/golden-ref-venv/bin/python tools/golden/lofit_fixture.py --src /tmp/lofit-src

tools/golden/make_fixtures.sh runs it too (the commit of refs.txt). Runs in the reference environment
(tools/golden/requirements-ref.txt: torch 2.13 CPU, transformers 4.46.3, accelerate 1.1.1 for its Trainer), never in
the project's. What of the reference runs:
- `models/modeling_llama.py` (its LLaMA with per-head `attn_A` / `attn_v`: z_h <- (1 + A_h) * z_h + v_h on the o_proj
  input), loaded through its own `LlamaForCausalLM.custom_from_pretrained` from a saved tiny random checkpoint;
- `utils/trainers.py` `CustomSFTTrainer.compute_loss` (task loss + l1_lambda * sum |p| over trainable parameters);
- the head-selection block of `lofit_trainer.py` (`if args.lofit_component=='A': ### Save the top heads ...`, the
  source text sliced from the file and exec'd as is, with `args` and `trainer` given; it writes its .npy of
  (layer, head) in a temporary cwd, which is read back).
Thin glue, nothing of the reference re-expressed:
- utils/trainers.py imports datasets, pandas, trl, wandb and utils.evaluate (lm-eval-like code) at module level:
  empty stand-ins, except trl.SFTTrainer/DPOTrainer = transformers.Trainer (compute_loss, the only method used, is
  CustomSFTTrainer's own). Trainer 4.46 calls compute_loss(model, inputs, num_items_in_batch=...); the transformers
  4.39 it was written for called compute_loss(model, inputs): `_Shim` drops that keyword.
- the freezing / unfreezing and `nn.init.normal_(A, 0, 1e-3)` of lofit_trainer.py (module-level script code) are
  repeated here as plain assignments; the TrainingArguments are the script's (lr 5e-3 as its step 1, no eval, no
  saving, no wandb), the data is one fixed batch of token rows with labels (-100 on the "prompt" and padding),
  default_data_collator (the reference's trl completion-only collator is not run).
Cases (fp32, seeded): `forward` (logits for A = v = 0, A only, v on 3 heads only, A and v on all heads), `loss`
(compute_loss value, CE alone and dLoss/dA), `train` (3 Trainer steps of step 1 from A ~ N(0, 1e-3): A after, the
selection block's scores and top heads), `select_*` (synthetic A through the selection block: random, planted exact
ties, and a 32 x 32 layout where numpy's argsort orders ties differently).
"""
from __future__ import annotations

import argparse
import importlib.machinery
import os
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

OUT = Path(__file__).resolve().parents[2] / "tests" / "golden" / "lofit_reference.pt"
REFERENCE = "fc2869/lo-fit ebd344a273d3dab0b63d8bbfd7ecdb5185ae5b7b"
CONFIG = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              vocab_size=64, max_position_embeddings=64, rope_theta=10000.0, rms_norm_eps=1e-6,
              tie_word_embeddings=False, pretraining_tp=1)   # rope_theta: the file's rotary embedding hard-codes 1e4
L1_LAMBDA, LR, STEPS = 5e-4, 5e-3, 3                            # lofit_trainer.py step 1 (scripts: --l1_lambda 5e-4 --lr 5e-3)
SELECT_MARK, SELECT_END = "if args.lofit_component=='A':\n    ### Save the top heads", "\nelse:"


def _stub_imports() -> None:
    import transformers                                           # before the stand-ins (it probes optional packages)
    for name in ("datasets", "pandas", "trl", "wandb", "utils.evaluate"):
        mod = types.ModuleType(name)
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
        sys.modules[name] = mod
    sys.modules["datasets"].Dataset = sys.modules["datasets"].DatasetDict = sys.modules["datasets"].load_dataset = None
    sys.modules["trl"].SFTTrainer = sys.modules["trl"].DPOTrainer = transformers.Trainer
    sys.modules["trl"].DataCollatorForCompletionOnlyLM = None
    for f in ("evaluate_mquake", "evaluate_clutrr", "evaluate_tqa"):
        setattr(sys.modules["utils.evaluate"], f, None)


def _weights(model: nn.Module, g: torch.Generator) -> dict:
    """Seeded base weights (attn_A / attn_v excluded), fp16-representable so the fixture can store them as fp16."""
    out = {}
    for name, p in model.state_dict().items():
        if ".attn_A." in name or ".attn_v." in name:
            continue
        if name.endswith("norm.weight"):
            w = 1 + 0.1 * torch.randn(p.shape, generator=g)
        elif "embed_tokens" in name:
            w = torch.randn(p.shape, generator=g)
        else:
            w = torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5
        out[name] = w.half()
    return out


def _set(model, key: str, values: torch.Tensor) -> None:
    """values: (L, H, d) into the model's attn_A or attn_v ParameterLists."""
    for i, layer in enumerate(model.model.layers):
        for j, p in enumerate(getattr(layer.self_attn, key)):
            p.data.copy_(values[i, j])


def _batch(g: torch.Generator):
    ids = torch.randint(3, 64, (4, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, -3:] = 0                                              # right padding (the reference trains right-padded)
    mask[3, -5:] = 0
    ids[mask == 0] = 0
    labels = ids.clone()
    labels[:, :4] = -100                                          # the "prompt": completion-only loss
    labels[mask == 0] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _select_block(src: Path) -> types.CodeType:
    text = (src / "lofit_trainer.py").read_text()
    start = text.index(SELECT_MARK)
    end = text.index(SELECT_END, start)
    return compile(text[start:end], str(src / "lofit_trainer.py"), "exec")


def _run_select(block, trainer, k) -> dict:
    """Exec the reference's selection block; returns its scores `ahead` and the saved (layer, head) rows."""
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            args = types.SimpleNamespace(lofit_component="A", use_topk_heads=k, base_model_name="tiny", task="golden",
                                         seed=42)
            scope = {"np": np, "os": os, "torch": torch, "args": args, "trainer": trainer}
            exec(block, scope)
            saved = [np.load(Path("top_heads") / f) for f in os.listdir("top_heads")]
        finally:
            os.chdir(cwd)
    assert len(saved) == 1
    return {"scores": torch.from_numpy(scope["ahead"]), "top": torch.from_numpy(saved[0].astype(np.int64)), "k": k}


def _fake_trainer(a: torch.Tensor):
    layers = [types.SimpleNamespace(self_attn=types.SimpleNamespace(attn_A=[nn.Parameter(h.clone()) for h in layer]))
              for layer in a]
    cfg = types.SimpleNamespace(num_hidden_layers=a.shape[0], num_attention_heads=a.shape[1])
    return types.SimpleNamespace(model=types.SimpleNamespace(config=cfg, model=types.SimpleNamespace(layers=layers)))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--src", required=True, help="fc2869/lo-fit ebd344a exported (lofit_trainer.py, models/, utils/)")
    p.add_argument("--out", default=str(OUT))
    cli = p.parse_args()
    src = Path(cli.src).resolve()
    _stub_imports()
    sys.path.insert(0, str(src))
    import transformers
    from transformers import LlamaConfig, TrainingArguments, default_data_collator
    from models.modeling_llama import LlamaForCausalLM         # the reference's modelling file
    from utils.trainers import CustomSFTTrainer                 # the reference's L1 trainer
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    config = LlamaConfig(**CONFIG)
    weights = _weights(LlamaForCausalLM(config), g)
    with tempfile.TemporaryDirectory() as tmp:
        base = LlamaForCausalLM(config)
        base.load_state_dict({k: v.float() for k, v in weights.items()}, strict=False)
        base.save_pretrained(tmp)
        model = LlamaForCausalLM.custom_from_pretrained(tmp, cache_dir=None, applied_module="attention",
                                                        applied_layers=None, torch_dtype=torch.float32)
    model.eval()
    nl, nh = CONFIG["num_hidden_layers"], CONFIG["num_attention_heads"]
    d = CONFIG["hidden_size"] // nh
    batch = _batch(g)
    out = {"reference": REFERENCE, "files": ["models/modeling_llama.py", "utils/trainers.py", "lofit_trainer.py"],
           "versions": {"torch": str(torch.__version__), "transformers": transformers.__version__,
                        "numpy": np.__version__, "accelerate": __import__("accelerate").__version__},
           "config": CONFIG, "weights": weights, "batch": batch}

    # 1. forward with given A / v
    zeros = torch.zeros(nl, nh, d)
    heads = [(0, 1), (1, 0), (1, 3)]
    v_sel = zeros.clone()
    for i, j in heads:
        v_sel[i, j] = 0.3 * torch.randn(d, generator=g)
    cases = {"base": (zeros, zeros), "A": (0.3 * torch.randn(nl, nh, d, generator=g), zeros), "v_selected": (zeros, v_sel),
             "A_and_v": (0.3 * torch.randn(nl, nh, d, generator=g), 0.3 * torch.randn(nl, nh, d, generator=g))}
    out["forward"] = {"v_heads": heads}
    with torch.no_grad():
        for name, (a, v) in cases.items():
            _set(model, "attn_A", a)
            _set(model, "attn_v", v)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            out["forward"][name] = {"A": a, "v": v, "logits": logits}
            print(f"forward {name}: |logits| {logits.abs().mean():.4f}")

    # 2. step-1 loss (CustomSFTTrainer.compute_loss) and its gradient w.r.t. A
    for prm in model.parameters():                               # lofit_trainer.py: freeze all, unfreeze attn_A
        prm.requires_grad = False
    for layer in model.model.layers:
        for prm in layer.self_attn.attn_A:
            prm.requires_grad = True
    a = 0.05 * torch.randn(nl, nh, d, generator=g)
    _set(model, "attn_A", a)
    _set(model, "attn_v", zeros)
    model.train()
    with torch.no_grad():
        ce = model(**batch).loss
    fake = types.SimpleNamespace(args=types.SimpleNamespace(past_index=-1), l1_lambda=L1_LAMBDA)
    loss = CustomSFTTrainer.compute_loss(fake, model, dict(batch))
    loss.backward()
    grad = torch.stack([torch.stack([prm.grad for prm in layer.self_attn.attn_A]) for layer in model.model.layers])
    out["loss"] = {"A": a, "l1_lambda": L1_LAMBDA, "loss": loss.detach(), "ce": ce, "grad_A": grad}
    print(f"loss: {loss.item():.6f} (CE {ce.item():.6f})")
    model.zero_grad(set_to_none=True)

    # 3. a few Trainer steps of step 1, then the selection block on the learned A
    torch.manual_seed(42)
    for layer in model.model.layers:                             # lofit_trainer.py: nn.init.normal_(A, 0, 1e-3)
        for prm in layer.self_attn.attn_A:
            nn.init.normal_(prm, mean=0, std=1e-3)
    a0 = torch.stack([torch.stack([prm.detach().clone() for prm in layer.self_attn.attn_A])
                      for layer in model.model.layers])

    class _Shim(CustomSFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return CustomSFTTrainer.compute_loss(self, model, inputs, return_outputs)

    rows = [{k: v[r] for k, v in batch.items()} for r in range(batch["input_ids"].shape[0])]
    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(output_dir=tmp, learning_rate=LR, per_device_train_batch_size=len(rows),
                                  num_train_epochs=STEPS, save_strategy="no", logging_strategy="epoch", seed=42,
                                  report_to=[], bf16=False, use_cpu=True, disable_tqdm=True)
        trainer = _Shim(model=model, args=targs, train_dataset=rows, data_collator=default_data_collator)
        trainer.l1_lambda = L1_LAMBDA
        trainer.train()
    a_after = torch.stack([torch.stack([prm.detach().clone() for prm in layer.self_attn.attn_A])
                           for layer in model.model.layers])
    k = 3
    out["train"] = {"A0": a0, "A": a_after, "steps": STEPS, "lr": LR, "l1_lambda": L1_LAMBDA,
                    "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
                    "select": _run_select(_select_block(src), trainer, k)}
    print(f"train: |A - A0| {(a_after - a0).abs().max():.4g}, top {out['train']['select']['top'].tolist()}")

    # 4. the selection block on synthetic A
    block = _select_block(src)
    rnd = torch.randn(6, 8, 4, generator=g)
    ties = torch.randn(6, 8, 4, generator=g)
    ties[2, 5] = ties[0, 3] = ties[4, 1] = ties[1, 2]            # a 4-way tie
    ties[5, 7] = ties[3, 0] = 3 * ties[1, 2]                      # a 2-way tie at the top
    big = torch.randn(32, 32, 2, generator=g)
    big[7, 9] = big[2, 30] = big[20, 4] = 4 * torch.ones(2)
    out["select"] = {"random_default_k": {"A": rnd, **_run_select(block, _fake_trainer(rnd), None)},
                     "random_k10": {"A": rnd, **_run_select(block, _fake_trainer(rnd), 10)},
                     "ties_all": {"A": ties, **_run_select(block, _fake_trainer(ties), 48)},
                     "ties_1024": {"A": big, **_run_select(block, _fake_trainer(big), 6)}}
    for name, c in out["select"].items():
        print(f"select {name}: k={c['k']} top {c['top'][:8].tolist()}")
    torch.save(out, cli.out)
    print(f"-> {cli.out} ({Path(cli.out).stat().st_size} bytes)")


if __name__ == "__main__":
    main()

"""Inference speed: prefill and decode tokens per second, dense vs pruned in the same run.

    python -m repro.run env=offline model=tiny-llama score=wanda eval=speed
    python -m repro.run model=opt-6.7b score=wanda pattern=nm_2_4 sparsity=0.5 model.dtype=float16 \
        model.device=cuda eval=speed                         # 2:4 through torch's semi-structured kernels
    python benchmarks/speed_bench.py                         # dense vs 2:4 on this machine, output recorded

Protocol (Lua-LLM, Tables 4 and 9: batch 8, 32 input tokens, 256 output tokens; their kernel was SpInfer on an
A100, which we do not have): random prompt tokens (seeded), one prefill forward with the KV cache on, then greedy
decoding one token per forward until `output_tokens` new tokens exist (1 from the prefill + `output_tokens - 1`
decode forwards; EOS does not stop it). `warmup` untimed repetitions, then `repeats` timed ones; the median is
reported. CUDA is synchronised around each timed region. On CPU, `cpu_threads` fixes torch's thread count while
measuring (on a loaded shared machine, 2 OpenMP threads ran ~6x slower than 1 here).

    prefill_tok_s  = batch * input_tokens / prefill_s
    decode_tok_s   = batch * (output_tokens - 1) / decode_s
    generate_tok_s = batch * output_tokens / (prefill_s + decode_s)      # end-to-end throughput

Kernels: `dense` runs the (pruned, zero-filled) weights as they are — on a CPU that is what every pruned model
gets here, and no speed-up is expected. `semi_structured` converts every decoder linear whose weight follows 2:4
along the input dimension to `torch.sparse.to_sparse_semi_structured` (CUDA, compute capability >= 8.0,
fp16/bf16), measures, and restores the dense weights afterwards. `auto` picks `semi_structured` when all of that
holds and `dense` otherwise; the protocol records the kernel used, why, and the sparse tensor class (cuSPARSELt
or CUTLASS; `sparse_backend` picks torch's backend — CUTLASS's kernel is Ampere-only, H100 gets cuSPARSELt).
Measured once on an H100 (torch 2.11, LLaMA-2-7B shape, benchmarks/SPEED_RESULTS.md): the path runs, but
cuSPARSELt through torch's tensor subclass was **slower** than dense (prefill 0.14–0.37×, decode 0.12–0.14×);
the tests cannot run it (no GPU in CI).

Deviations: Lua-LLM used SpInfer (unstructured sparse kernels); we have dense and 2:4 only. Speed settings are
not part of the run identity: they never change accuracy numbers.
"""
from __future__ import annotations

import logging
import platform
import statistics
import time
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from repro.config import ConfigError, SpeedConfig
from repro.registry import method_class

log = logging.getLogger(__name__)
SEMI_STRUCTURED_DTYPES = (torch.float16, torch.bfloat16)


def check_speed(cfg: SpeedConfig, run=None) -> None:
    """An explicit `semi_structured` kernel needs CUDA, fp16/bf16 and the 2:4 pattern: fail before pruning."""
    if cfg.kernel != "semi_structured":
        return
    if not torch.cuda.is_available() or (run is not None and not str(run.model.device).startswith(("cuda", "auto"))):
        raise ConfigError("eval.speed.kernel", cfg.kernel, "a kernel this machine runs: auto or dense",
                          "semi_structured needs a CUDA GPU with compute capability >= 8.0 (model.device=cuda).")
    if cfg.sparse_backend == "cutlass" and torch.cuda.get_device_capability()[0] != 8:
        raise ConfigError("eval.speed.sparse_backend", cfg.sparse_backend, "cusparselt on this GPU",
                          "torch's CUTLASS 2:4 kernel runs on compute capability 8.x (Ampere) only.")
    if run is not None:
        if run.model.dtype not in ("float16", "bfloat16"):
            raise ConfigError("model.dtype", run.model.dtype,
                              "float16 or bfloat16 for eval.speed.kernel=semi_structured")
        if method_class("score", run.score.name).prunes and (run.pattern.name, run.pattern.n, run.pattern.m) != ("nm", 2, 4):
            raise ConfigError("pattern", run.pattern.label,
                              "2:4 (pattern=nm_2_4) for eval.speed.kernel=semi_structured")


def follows_n_of_m(weight: torch.Tensor, n: int = 2, m: int = 4) -> bool:
    """True when every group of `m` consecutive input columns of each row holds at least `n` zeros."""
    rows, cols = weight.shape
    if cols % m:
        return False
    zeros = (weight.detach().view(rows, cols // m, m) == 0).sum(dim=-1)
    return bool((zeros >= n).all())


def describe_device(device: torch.device) -> dict:
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return {"type": "cuda", "name": torch.cuda.get_device_name(device), "capability": f"{major}.{minor}",
                "cuda": torch.version.cuda}
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), name)
    except OSError:
        pass
    return {"type": device.type, "name": name, "threads": torch.get_num_threads()}


def choose_kernel(requested: str, linears: dict, device: torch.device, dtype: torch.dtype,
                  backend: str = "cusparselt") -> tuple[str, str]:
    """`(kernel, reason)`: semi_structured only where it can run and every decoder linear is 2:4."""
    if requested == "dense":
        return "dense", "requested"
    problems = []
    if device.type != "cuda":
        problems.append(f"device {device.type} (semi-structured kernels are CUDA only)")
    else:
        major, minor = torch.cuda.get_device_capability(device)
        if major < 8:
            problems.append(f"compute capability {major}.{minor} < 8.0")
        elif backend == "cutlass" and major != 8:     # torch's CUTLASS 2:4 kernel is Ampere-only (H100: refused)
            problems.append(f"sparse_backend=cutlass needs compute capability 8.x, found {major}.{minor} "
                            f"(use cusparselt)")
    if dtype not in SEMI_STRUCTURED_DTYPES:
        problems.append(f"dtype {str(dtype).replace('torch.', '')} (needs float16/bfloat16)")
    not_24 = [name for name, lin in linears.items() if not follows_n_of_m(lin.weight)]
    if not linears or not_24:
        problems.append(f"{len(not_24)}/{len(linears)} decoder linears are not 2:4")
    if not problems:
        return "semi_structured", "every decoder linear is 2:4 on a capable GPU"
    if requested == "semi_structured":
        raise ValueError("eval.speed.kernel=semi_structured cannot run: " + "; ".join(problems))
    return "dense", "auto: " + "; ".join(problems)


def _flat_linear(lin: nn.Linear):
    """`lin`'s forward on a 2-D view of its input. A 3-D input whose size-1 dimension has an odd stride (the
    decode step's [B, 1, d] after attention's transpose/reshape) makes `matmul` broadcast the weight with
    `expand`, which semi-structured tensors do not implement (seen on an H100, torch 2.11)."""
    def forward(x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x.reshape(-1, x.shape[-1]), lin.weight, lin.bias)
        return y.view(*x.shape[:-1], y.shape[-1])
    return forward


@contextmanager
def semi_structured_weights(linears: dict, backend: str = "cusparselt"):
    """Swap the linears' weights for semi-structured sparse tensors; restore the dense ones on exit.

    A linear whose shape the backend rejects (cuSPARSELt: multiples of 16; CUTLASS: 32 x 64 for fp16) stays dense
    and is listed. Yields `{"converted": n, "kept_dense": [names], "tensor_classes": [...]}`.
    """
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

    originals, kept_dense, errors = {}, [], set()
    force_cutlass = SparseSemiStructuredTensor._FORCE_CUTLASS      # a class switch of torch's (prototype API)
    SparseSemiStructuredTensor._FORCE_CUTLASS = backend == "cutlass"
    try:
        for name, lin in linears.items():
            try:
                sparse = to_sparse_semi_structured(lin.weight.detach())
            except RuntimeError as e:
                kept_dense.append(name)
                errors.add(str(e).splitlines()[0])
                continue
            originals[name] = lin.weight
            lin.weight = nn.Parameter(sparse, requires_grad=False)
            lin.forward = _flat_linear(lin)
        if not originals:
            raise RuntimeError("no decoder linear could be converted to a semi-structured sparse tensor: "
                               + "; ".join(sorted(errors)))
        yield {"converted": len(originals), "kept_dense": kept_dense,
               "tensor_classes": sorted({type(linears[n].weight.data).__name__ for n in originals})}
    finally:
        SparseSemiStructuredTensor._FORCE_CUTLASS = force_cutlass
        for name, weight in originals.items():
            linears[name].weight = weight
            del linears[name].forward                   # back to nn.Linear.forward


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def time_generation(model, prompt: torch.Tensor, output_tokens: int) -> tuple[float, float]:
    """`(prefill_s, decode_s)` of greedy generation of `output_tokens` new tokens after `prompt [B, T]`."""
    device = prompt.device
    _sync(device)
    t0 = time.perf_counter()
    out = model(input_ids=prompt, use_cache=True)
    next_token = out.logits[:, -1:].argmax(dim=-1)
    _sync(device)
    t1 = time.perf_counter()
    past = out.past_key_values
    for _ in range(output_tokens - 1):
        out = model(input_ids=next_token, past_key_values=past, use_cache=True)
        past, next_token = out.past_key_values, out.logits[:, -1:].argmax(dim=-1)
    _sync(device)
    return t1 - t0, time.perf_counter() - t1


def random_prompt(cfg: SpeedConfig, vocab_size: int, device: torch.device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(cfg.seed)
    return torch.randint(0, vocab_size, (cfg.batch_size, cfg.input_tokens), generator=gen).to(device)


def measure(model, prompt: torch.Tensor, cfg: SpeedConfig, desc: str = "speed") -> dict:
    runs = [time_generation(model, prompt, cfg.output_tokens)
            for _ in tqdm(range(cfg.warmup + cfg.repeats), desc=desc, unit="run", leave=False)][cfg.warmup:]
    prefill_s = statistics.median(r[0] for r in runs)
    decode_s = statistics.median(r[1] for r in runs)
    b, t, new = cfg.batch_size, cfg.input_tokens, cfg.output_tokens
    return {"prefill_tok_s": b * t / prefill_s, "decode_tok_s": b * (new - 1) / decode_s,
            "generate_tok_s": b * new / (prefill_s + decode_s), "prefill_s": prefill_s, "decode_s": decode_s,
            "latency_s": prefill_s + decode_s}


def evaluate_speed(model, tokenizer, cfg: SpeedConfig) -> tuple[dict, dict]:
    """Return `(metrics, protocol)` for the record: tokens/s and the device / kernel that produced them."""
    from repro.models.adapter import adapter_for

    device = model.get_input_embeddings().weight.device
    dtype = model.get_input_embeddings().weight.dtype
    linears = adapter_for(model).all_linears(model)
    kernel, reason = choose_kernel(cfg.kernel, linears, device, dtype, cfg.sparse_backend)
    vocab = min(model.config.vocab_size, len(tokenizer)) if tokenizer is not None else model.config.vocab_size
    prompt = random_prompt(cfg, vocab, device)
    was_training, threads = model.training, torch.get_num_threads()
    if device.type == "cpu" and cfg.cpu_threads:
        torch.set_num_threads(cfg.cpu_threads)
    model.eval()
    try:
        device_info = describe_device(device)
        if kernel == "semi_structured":
            with semi_structured_weights(linears, cfg.sparse_backend) as conversion:
                metrics = measure(model, prompt, cfg, desc="speed 2:4")
        else:
            conversion = {"converted": 0, "kept_dense": [], "tensor_classes": ["Tensor"]}
            metrics = measure(model, prompt, cfg, desc="speed dense")
    finally:
        model.train(was_training)
        torch.set_num_threads(threads)
    protocol = {"batch_size": cfg.batch_size, "input_tokens": cfg.input_tokens, "output_tokens": cfg.output_tokens,
                "warmup": cfg.warmup, "repeats": cfg.repeats, "statistic": "median", "decoding": "greedy, KV cache",
                "prompt": f"uniform random token ids, seed {cfg.seed}", "device": device_info,
                "dtype": str(dtype).replace("torch.", ""), "kernel_requested": cfg.kernel, "kernel": kernel,
                "kernel_reason": reason, "sparse_backend": cfg.sparse_backend if kernel == "semi_structured" else None,
                "weight_tensor_classes": conversion["tensor_classes"],
                "linears_converted": conversion["converted"], "linears_kept_dense": conversion["kept_dense"],
                "torch": torch.__version__}
    log.info("speed (%s kernel on %s): prefill %.1f tok/s, decode %.1f tok/s", kernel, device,
             metrics["prefill_tok_s"], metrics["decode_tok_s"])
    return metrics, protocol


def speedups(dense: dict, pruned: dict) -> dict:
    """Pruned over dense throughput, measured in the same run (same device, same protocol)."""
    return {f"{key.removesuffix('_tok_s')}_speedup": pruned[key] / dense[key]
            for key in ("prefill_tok_s", "decode_tok_s", "generate_tok_s")}

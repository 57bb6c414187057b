"""The gated cells against PyTorch on the CPU: an LSTM and a GRU language model's training step, tokens per second.

Both sides hold the same weights and compute the same function: `nn.Embedding` (U's columns) →
`nn.LSTM` / `nn.GRU` (the engine's gate rows permuted into PyTorch's order; the GRU is PyTorch's
variant, the reset gate after the hidden product, so `bias_hh` holds only the engine's `bhn`) →
`nn.Linear(bias=False)` holding V → cross-entropy. A training step is exact full BPTT and one SGD
update on both sides. Losses and gradients are checked equal before anything is timed. Beside the
ratio, where the engine's step spends its time, on one thread by CPU time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from benchmarks.common import (
    THREADS,
    contest_summary,
    fixed_threads,
    interleaved,
    training_steps,
    try_import_torch,
    zipf_tokens,
)
from rnnexp.config.schema import ModelConfig
from rnnexp.engine import build_model
from rnnexp.engine.gated import GatedLM
from rnnexp.engine.optim import make_optimizer

LEARNING_RATE = 0.1
TARGET_RATIO = 1.3
N_BATCHES = 4  # cycled through, so neither side trains on one batch alone
CELLS = ("lstm", "gru")


def _torch_order(model: GatedLM, W: np.ndarray) -> np.ndarray:
    """Gate rows from the engine's order (LSTM i, f, o, g) into PyTorch's (i, f, g, o); the GRU's agree."""
    if model.cell == "gru":
        return W
    H = model.H
    return np.concatenate([W[: 2 * H], W[3 * H :], W[2 * H : 3 * H]])


def torch_twin(model: GatedLM):
    """A PyTorch module computing exactly `model`'s function (one layer, untied), with copies of its weights."""
    torch = try_import_torch()
    nn = torch.nn

    def tensor(a: np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(a))

    class TorchGatedLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(model.vocab_size, model.E)
            self.rnn = (nn.LSTM if model.cell == "lstm" else nn.GRU)(model.E, model.H, batch_first=True)
            self.out = nn.Linear(model.H, model.vocab_size, bias=False)
            p, prefix = model.params, model.prefixes[0]
            bias_hh = np.zeros_like(p[f"{prefix}_b"])
            if model.cell == "gru":
                bias_hh[2 * model.H :] = p[f"{prefix}_bhn"]
            with torch.no_grad():
                self.embed.weight.copy_(tensor(p["U"].T))
                self.rnn.weight_ih_l0.copy_(tensor(_torch_order(model, p[f"{prefix}_Wx"])))
                self.rnn.weight_hh_l0.copy_(tensor(_torch_order(model, p[f"{prefix}_Wh"])))
                self.rnn.bias_ih_l0.copy_(tensor(_torch_order(model, p[f"{prefix}_b"])))
                self.rnn.bias_hh_l0.copy_(tensor(_torch_order(model, bias_hh)))
                self.out.weight.copy_(tensor(p["V"]))

        def forward(self, x, y):
            states, _ = self.rnn(self.embed(x))
            return nn.functional.cross_entropy(self.out(states).reshape(-1, model.vocab_size), y.reshape(-1))

    return TorchGatedLM()


def _check_same_function(model: GatedLM, net, x: np.ndarray, y: np.ndarray) -> dict:
    """Loss and gradients of both sides on one batch, before training: they must agree."""
    torch = try_import_torch()
    step = model.backprop(x, y)
    loss = net(torch.from_numpy(x), torch.from_numpy(y))
    net.zero_grad()
    loss.backward()
    prefix, rnn = model.prefixes[0], net.rnn
    pairs = {
        "U": (step.grads["U"].T, net.embed.weight.grad.numpy()),
        "Wx": (_torch_order(model, step.grads[f"{prefix}_Wx"]), rnn.weight_ih_l0.grad.numpy()),
        "Wh": (_torch_order(model, step.grads[f"{prefix}_Wh"]), rnn.weight_hh_l0.grad.numpy()),
        "b": (_torch_order(model, step.grads[f"{prefix}_b"]), rnn.bias_ih_l0.grad.numpy()),
        "V": (step.grads["V"], net.out.weight.grad.numpy()),
    }
    if model.cell == "gru":
        pairs["bhn"] = (step.grads[f"{prefix}_bhn"], rnn.bias_hh_l0.grad.numpy()[2 * model.H :])
    errors = {name: float(np.abs(a - b).max() / np.abs(a).max()) for name, (a, b) in pairs.items()}
    loss_err = abs(step.loss - loss.item()) / step.loss
    if loss_err > 1e-5 or max(errors.values()) > 1e-3:
        raise AssertionError(
            f"PyTorch and the engine disagree for the {model.cell}: loss {loss_err:.1e}, gradients {errors}"
        )
    return {"loss_rel_err": loss_err, "grad_max_rel_err": errors}


def _contest(cell: str, threads: int, batches: list, vocab: int, hidden: int, options: dict) -> dict:
    """Both sides built and timed with `threads` threads (the engine picks its worker count from BLAS's)."""
    with fixed_threads(threads):
        model = build_model(
            ModelConfig(cell=cell, hidden_dim=hidden, bptt_truncate=4, truncation="full", dtype="float32"), vocab, 10
        )
        net = torch_twin(model)
        agreement = _check_same_function(model, net, *batches[0])
        timings = interleaved(training_steps(model, net, batches, LEARNING_RATE), **options)
    return {"agreement": agreement, **contest_summary(timings, batches[0][0].size)}


def _cpu_least(fn: Callable[[], object], repeats: int) -> float:
    """The least CPU time of `repeats` calls (after a warm-up): the work, with the least of others' noise."""
    fn()
    samples = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        samples.append(time.process_time() - start)
    return float(np.min(samples))


def breakdown(cell: str, x: np.ndarray, y: np.ndarray, vocab: int, hidden: int, repeats: int) -> dict:
    """CPU seconds per training step on one thread (the least of `repeats`): the whole step and its parts.

    The output layer is the softmax with its three products; the batched products are the input
    projections of all steps, the weight gradients and the embeddings' gradients; the recurrence
    is the T small (B×H)·(H×kH) products each way; the gates are everything else in the two time
    loops (nonlinearities, elementwise products, the backward pass's coefficients).
    """
    with threadpool_limits(limits=1, user_api="blas"):
        model = build_model(
            ModelConfig(cell=cell, hidden_dim=hidden, bptt_truncate=4, truncation="full", dtype="float32"),
            vocab,
            10,
            threads=1,
        )
        sgd = make_optimizer("sgd")
        B, T = x.shape
        H = model.H
        rng = np.random.default_rng(0)
        layers, top = model._forward(x, None, None, backward=True)
        S = top.reshape(T * B, H)
        ids, weights = y.T.reshape(-1), np.full(T * B, 1.0 / (T * B), model.dtype)
        _, dS, _ = model.output.nll_grads(S, ids, weights, need_grads=True)
        ext = dS.reshape(T, B, H)
        accs = model._backward_full(layers, ext, None)
        layer, p = layers[0], model._layer_params(0)
        k = p["b"].shape[0] // H  # the cell's gate blocks
        X = layer.inputs.reshape(T * B, -1)
        WxT = np.ascontiguousarray(p["Wx"].T)
        h = rng.uniform(-1, 1, (B, H)).astype(model.dtype)
        WhT = np.ascontiguousarray(p["Wh"].T)
        gates, dA = np.empty((B, k * H), model.dtype), rng.uniform(-1, 1, (B, k * H)).astype(model.dtype)
        dh = np.empty((B, H), model.dtype)

        def step() -> None:
            result = model.backprop(x, y, sparse_u=True)
            sgd.step(model.params, result.grads, LEARNING_RATE)

        def batched() -> None:
            np.matmul(X, WxT)
            model._pool.run(model._cell.weight_tasks(layer, accs[0], model.prefixes[0], {}))
            model._input_grad(0, accs[0])

        def recurrence() -> None:
            for _ in range(T):
                np.matmul(h, WhT, out=gates)
                np.matmul(dA, p["Wh"], out=dh)

        parts = {
            "step": _cpu_least(step, repeats),
            "output layer": _cpu_least(lambda: model.output.nll_grads(S, ids, weights, need_grads=True), repeats),
            "forward pass": _cpu_least(lambda: model._forward(x, None, None, backward=True), repeats),
            "backward time loop": _cpu_least(lambda: model._backward_full(layers, ext, None), repeats),
            "batched products": _cpu_least(batched, repeats),
            "recurrence products": _cpu_least(recurrence, repeats),
        }
        projection = _cpu_least(lambda: np.matmul(X, WxT), repeats)
    loops = parts.pop("forward pass") + parts.pop("backward time loop")
    parts["gates"] = max(0.0, loops - projection - parts["recurrence products"])
    parts["rest"] = max(0.0, parts["step"] - sum(v for name, v in parts.items() if name != "step"))
    return parts


def output_gemm_seconds(vocab: int, hidden: int, rows: int, options: dict) -> float:
    """Wall seconds of the output layer's three products (logits, dS, dV) at numpy's own speed on
    THREADS threads: a floor under any exact full-softmax step at these shapes, the engine's or PyTorch's."""
    rng = np.random.default_rng(1)
    S, Vm = rng.standard_normal((rows, hidden), np.float32), rng.standard_normal((vocab, hidden), np.float32)
    L = np.empty((rows, vocab), np.float32)

    def products() -> None:
        np.matmul(S, Vm.T, out=L)
        np.matmul(L, Vm)
        np.matmul(L.T, S)

    with fixed_threads(THREADS):
        return interleaved({"products": products}, **options)["products"].median


def ceilings(cell: dict, tokens: int, gemm_seconds: float) -> dict:
    """Ratios to PyTorch no engine could pass at these shapes: a step that were only the output layer's
    products at numpy's speed; and the engine's own one-thread work split perfectly over THREADS cores."""
    torch_step = tokens / cell["training"]["tokens_per_sec"]["PyTorch"]
    engine_work = tokens / cell["one_thread"]["tokens_per_cpu_sec"]["rnnexp engine"]
    return {
        "products_only": torch_step / gemm_seconds,
        "perfect_split": torch_step / max(gemm_seconds, engine_work / THREADS),
    }


def run(smoke: bool = False) -> dict:
    """Tokens per second of training on both sides, per cell, on 2 threads (the target) and per CPU second
    on one thread; and where the engine's step spends its time."""
    if try_import_torch() is None:
        return {"skipped": "torch is not installed: pip install -e '.[bench]' (torch==2.13.0) to compare"}
    vocab, hidden, batch, length, repeats = (300, 16, 4, 6, 2) if smoke else (10_000, 200, 20, 35, 9)
    rng = np.random.default_rng(0)
    streams = zipf_tokens(rng, vocab, (N_BATCHES, batch, length + 1))
    batches = [(s[:, :-1].copy(), s[:, 1:].copy()) for s in streams]
    options = {"repeats": repeats, "min_seconds": 0.0 if smoke else 0.2}
    cells = {}
    for cell in CELLS:
        two = _contest(cell, THREADS, batches, vocab, hidden, options)
        one = _contest(cell, 1, batches, vocab, hidden, options)
        cells[cell] = {
            "agreement": two.pop("agreement"),
            "training": two,
            "one_thread": {key: one[key] for key in ("tokens_per_cpu_sec", "cpu_ratio")},
            "cpu_seconds_per_step": breakdown(cell, *batches[0], vocab, hidden, repeats),
            "target_met": two["ratio"] >= TARGET_RATIO,
        }
    gemm_seconds = output_gemm_seconds(vocab, hidden, batch * length, options)
    for r in cells.values():
        r["ceiling_ratio"] = ceilings(r, batch * length, gemm_seconds)
    return {
        "setting": {
            "vocab_size": vocab,
            "hidden_dim": hidden,
            "batch": batch,
            "seq_len": length,
            "layers": 1,
            "dtype": "float32",
            "truncation": "full",
            "optimizer": "sgd",
            "repeats": repeats,
        },
        "cells": cells,
        "output_products_seconds": gemm_seconds,
        "target_ratio": TARGET_RATIO,
        "command": "python -m benchmarks.bench_gated",
    }


def markdown(result: dict) -> list[str]:
    """The section of RESULTS.md: the ratios, and where the time goes."""
    title = "## 8. Gated cells (LSTM, GRU) against PyTorch CPU"
    if "skipped" in result:
        return [title, "", f"Skipped: {result['skipped']}", ""]
    s = result["setting"]
    lines = [
        title,
        "",
        f"B={s['batch']} sequences of T={s['seq_len']}, V={s['vocab_size']:,}, H=E={s['hidden_dim']}, one layer, "
        f"float32, exact full BPTT and one SGD step per batch on both sides. PyTorch: `nn.Embedding` → `nn.LSTM` / "
        "`nn.GRU` → `nn.Linear(bias=False)` → cross-entropy, holding the engine's weights. Medians of "
        f"{s['repeats']} interleaved rounds (± half the interquartile range) in one process on {THREADS} threads (the "
        "target, goal ≥ "
        f"{result['target_ratio']}×), then both sides on one thread per CPU second. The machine is shared: the "
        "ratios, taken side by side, are the figures to read, not the absolute rates.",
        "",
        "| cell | rnnexp tokens/s | PyTorch tokens/s | ratio | met | 1 thread: rnnexp tokens/CPU-s | PyTorch | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for cell, r in result["cells"].items():
        rates, one, spread = r["training"]["tokens_per_sec"], r["one_thread"], r["training"]["spread"]
        lines.append(
            f"| {cell} | {rates['rnnexp engine']:,.0f} ±{spread['rnnexp engine'] * 50:.0f}% | "
            f"{rates['PyTorch']:,.0f} ±{spread['PyTorch'] * 50:.0f}% | **{r['training']['ratio']:.2f}×** | "
            f"{'**yes**' if r['target_met'] else '**no**'} | {one['tokens_per_cpu_sec']['rnnexp engine']:,.0f} | "
            f"{one['tokens_per_cpu_sec']['PyTorch']:,.0f} | {one['cpu_ratio']:.2f}× |"
        )
    lines += [
        "",
        "Where the engine's training step spends its time (one thread, CPU ms per step, the least of "
        f"{s['repeats']} repeats). The gates are the two time loops less their products; the rest is the "
        "step less its parts: the embedding lookup, U's sparse columns, the SGD update, and the cache misses "
        "of running the parts one after another rather than each alone:",
        "",
        "| part | " + " | ".join(result["cells"]) + " |",
        "|---|" + "---|" * len(result["cells"]),
    ]
    names = list(next(iter(result["cells"].values()))["cpu_seconds_per_step"])
    for name in names:
        cells = [r["cpu_seconds_per_step"] for r in result["cells"].values()]
        lines.append(
            f"| {name} | " + " | ".join(f"{c[name] * 1e3:.1f} ({c[name] / c['step']:.0%})" for c in cells) + " |"
        )
    agreement = "; ".join(
        f"{cell} loss {r['agreement']['loss_rel_err']:.1e}, gradients ≤ "
        f"{max(r['agreement']['grad_max_rel_err'].values()):.1e}"
        for cell, r in result["cells"].items()
    )
    lines += ["", f"Before timing, PyTorch and the engine agree (relative): {agreement}.", ""]
    return lines


def notes(result: dict) -> list[str]:
    """Where a cell misses the target: where its step's time goes."""
    if "skipped" in result:
        return []
    out = []
    for cell, r in result["cells"].items():
        if r["target_met"]:
            continue
        parts = r["cpu_seconds_per_step"]
        shares = ", ".join(f"{name} {value * 1e3:.1f} ms" for name, value in parts.items() if name != "step")
        out.append(
            f"Gated {cell}: {r['training']['ratio']:.2f}× PyTorch's tokens/s on {THREADS} threads is short of "
            f"{result['target_ratio']}× ({r['one_thread']['cpu_ratio']:.2f}× on one thread by CPU time). The "
            f"engine's step takes {parts['step'] * 1e3:.1f} CPU ms on one thread: {shares}. The output layer "
            "is most of it and the same work on both sides, so its gain from the second core sets the ratio; the "
            "cell's time loops stay in one thread (split, numpy's small per-step calls contend for the GIL). "
            f"Ceilings: a step that were nothing but the output layer's three products at numpy's {THREADS}-thread "
            f"speed ({result['output_products_seconds'] * 1e3:.1f} ms) would run at "
            f"{r['ceiling_ratio']['products_only']:.2f}× PyTorch; the engine's one-thread work split perfectly over "
            f"{THREADS} cores, at {r['ceiling_ratio']['perfect_split']:.2f}×."
        )
    return out


if __name__ == "__main__":
    print("\n".join(markdown(run())))

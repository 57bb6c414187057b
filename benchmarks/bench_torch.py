"""The engine against PyTorch on the CPU: batched float32 training and evaluation, tokens per second.

Both sides hold the same weights and compute the same function: the tutorial's s_t = tanh(U x_t +
W s_{t-1}) is, in PyTorch, an `nn.Embedding` holding U's columns (the same as U times a one-hot
vector, without building it) feeding `nn.RNN(tanh, bias=False)` whose input weight is a frozen
identity, then `nn.Linear(bias=False)` holding V and cross-entropy. Training is exact full BPTT
(the engine's truncation="full") with one SGD step per batch on both sides; evaluation is the
forward pass and the loss. Losses and gradients are checked equal before anything is timed.

PyTorch is timed twice: with its default allocator in this process, and with transparent huge
pages (`THP_MEM_ALLOC_ENABLE=1`, read when torch starts) in a second process that runs the same
contest, the engine beside it there too: `python -m benchmarks.bench_torch --thp` prints it as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from benchmarks.common import (
    REPEATS,
    ROOT,
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
from rnnexp.engine.rnn import RNNLM

LEARNING_RATE = 0.1
TARGET_RATIO = 2.0  # training, against PyTorch's default allocator
TARGET_THP_RATIO = 1.5  # training, against PyTorch with transparent huge pages
TARGET_EVAL_RATIO = 2.0  # evaluation, against PyTorch's no-grad forward (default allocator)
N_BATCHES = 4  # cycled through, so neither side trains on one batch alone


def torch_twin(model: RNNLM):
    """A PyTorch module computing exactly `model`'s function, with copies of its weights."""
    torch = try_import_torch()
    nn = torch.nn

    class TorchRNNLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(model.vocab_size, model.H)
            self.rnn = nn.RNN(model.H, model.H, nonlinearity="tanh", bias=False, batch_first=True)
            self.out = nn.Linear(model.H, model.vocab_size, bias=False)
            with torch.no_grad():
                self.embed.weight.copy_(torch.from_numpy(np.ascontiguousarray(model.params["U"].T)))
                self.rnn.weight_ih_l0.copy_(torch.eye(model.H))
                self.rnn.weight_hh_l0.copy_(torch.from_numpy(model.params["W"]))
                self.out.weight.copy_(torch.from_numpy(model.params["V"]))
            self.rnn.weight_ih_l0.requires_grad_(False)

        def forward(self, x, y):
            states, _ = self.rnn(self.embed(x))
            logits = self.out(states)
            return nn.functional.cross_entropy(logits.reshape(-1, model.vocab_size), y.reshape(-1))

    return TorchRNNLM()


def _check_same_function(model: RNNLM, net, x: np.ndarray, y: np.ndarray) -> dict:
    """Loss and gradients of both sides on one batch, before training: they must agree."""
    torch = try_import_torch()
    step = model.backprop(x, y)
    loss = net(torch.from_numpy(x), torch.from_numpy(y))
    net.zero_grad()
    loss.backward()
    pairs = {
        "U": (step.grads["U"].T, net.embed.weight.grad),
        "W": (step.grads["W"], net.rnn.weight_hh_l0.grad),
        "V": (step.grads["V"], net.out.weight.grad),
    }
    errors = {name: float(np.abs(a - b.numpy()).max() / np.abs(a).max()) for name, (a, b) in pairs.items()}
    loss_err = abs(step.loss - loss.item()) / step.loss
    if loss_err > 1e-5 or max(errors.values()) > 1e-3:
        raise AssertionError(f"PyTorch and the engine disagree: loss {loss_err:.1e}, gradients {errors}")
    return {"loss_rel_err": loss_err, "grad_max_rel_err": errors}


def _contest(threads: int, batches: list, vocab: int, hidden: int, options: dict) -> dict:
    """Both sides built and timed with `threads` threads (the engine picks its worker count from BLAS's)."""
    torch = try_import_torch()
    tokens = batches[0][0].size
    with fixed_threads(threads):
        model = build_model(
            ModelConfig(hidden_dim=hidden, bptt_truncate=4, truncation="full", dtype="float32"), vocab, 10
        )
        net = torch_twin(model)
        agreement = _check_same_function(model, net, *batches[0])
        torch_batches = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in batches]
        turn = {"engine_eval": 0, "torch_eval": 0}

        def next_batch(side: str, pool: list):
            turn[side] += 1
            return pool[turn[side] % N_BATCHES]

        def engine_eval():
            x, y = next_batch("engine_eval", batches)
            model.token_nll(x, y)

        def torch_eval():
            x, y = next_batch("torch_eval", torch_batches)
            with torch.inference_mode():
                net(x, y)

        timings = {
            "training": interleaved(training_steps(model, net, batches, LEARNING_RATE), **options),
            "evaluation": interleaved({"rnnexp engine": engine_eval, "PyTorch": torch_eval}, **options),
        }

    return {"agreement": agreement, **{part: contest_summary(t, tokens) for part, t in timings.items()}}


def _shapes(smoke: bool) -> tuple[int, int, int, int, int]:
    return (300, 16, 4, 6, 2) if smoke else (8000, 100, 32, 35, REPEATS)


def _batches(vocab: int, batch: int, length: int) -> list:
    streams = zipf_tokens(np.random.default_rng(0), vocab, (N_BATCHES, batch, length + 1))
    return [(s[:, :-1].copy(), s[:, 1:].copy()) for s in streams]


def _thp_contest(smoke: bool) -> dict:
    """The 2-thread contest in a process where PyTorch allocates with transparent huge pages."""
    env = {
        **os.environ,
        "THP_MEM_ALLOC_ENABLE": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, "-m", "benchmarks.bench_torch", "--thp", *(["--smoke"] if smoke else [])]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800, check=True)
    return json.loads(done.stdout)


def run(smoke: bool = False) -> dict:
    """Tokens per second of training and evaluation on both sides and the engine's ratio, on 2 threads
    (the target; again with PyTorch on huge pages) and on one thread, where CPU time measures each
    side's work whatever the machine's load."""
    if try_import_torch() is None:
        return {"skipped": "torch is not installed: pip install -e '.[bench]' (torch==2.13.0) to compare"}
    vocab, hidden, batch, length, repeats = _shapes(smoke)
    batches = _batches(vocab, batch, length)
    options = {"repeats": repeats, "min_seconds": 0.0 if smoke else 0.2}
    two = _contest(THREADS, batches, vocab, hidden, options)
    thp = _thp_contest(smoke)
    one = _contest(1, batches, vocab, hidden, options)
    return {
        "setting": {
            "vocab_size": vocab,
            "hidden_dim": hidden,
            "batch": batch,
            "seq_len": length,
            "dtype": "float32",
            "truncation": "full",
            "optimizer": "sgd",
            "repeats": repeats,
        },
        "agreement": two.pop("agreement"),
        **two,
        "one_thread": {part: one[part] for part in ("training", "evaluation")},
        "thp": {part: thp[part] for part in ("training", "evaluation")},
        "target_ratio": TARGET_RATIO,
        "target_met": two["training"]["ratio"] >= TARGET_RATIO,
        "target_thp_ratio": TARGET_THP_RATIO,
        "target_thp_met": thp["training"]["ratio"] >= TARGET_THP_RATIO,
        "target_eval_ratio": TARGET_EVAL_RATIO,
        "target_eval_met": two["evaluation"]["ratio"] >= TARGET_EVAL_RATIO,
    }


if __name__ == "__main__":
    if "--thp" not in sys.argv:
        raise SystemExit("usage: THP_MEM_ALLOC_ENABLE=1 python -m benchmarks.bench_torch --thp [--smoke]")
    is_smoke = "--smoke" in sys.argv
    v, h, b, t, r = _shapes(is_smoke)
    contest = _contest(THREADS, _batches(v, b, t), v, h, {"repeats": r, "min_seconds": 0.0 if is_smoke else 0.2})
    print(json.dumps(contest))

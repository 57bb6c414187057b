"""Parity with PyTorch on the word-LM recipe: the same tanh RNN, the same init, the same data order.

rnnexp's own trainer (`rnnexp.training.loop.fit`, experiment=ptb_word_lm at a constant rate of 2)
beside a PyTorch twin (`bench_torch.torch_twin`: nn.Embedding + nn.RNN(tanh, no bias) + Linear),
trained like PyTorch's word_language_model: 20 streams cut as `batchify` cuts them, 35-step
chunks with the hidden state carried and detached, clip_grad_norm_(0.25), SGD. Both are scored
after every epoch by the same stateful protocol: the validation split as one stream, the state
carried throughout, every token predicted once. Both sides compute in float64: in float32 the two
trajectories part like any chaotic system's after a few hundred updates (rounding differs), so the
float64 pair shows what the implementations compute, not how their rounding drifts. The
perplexities must agree within 3%.

    python -m benchmarks.bench_ptb_parity
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_torch import torch_twin
from benchmarks.common import ROOT, fixed_threads, try_import_torch
from rnnexp.config import RunConfig, compose_run, resolve
from rnnexp.data import Corpus, load_corpus
from rnnexp.engine import build_model
from rnnexp.engine.optim import clip_global_norm, make_optimizer
from rnnexp.training import batches
from rnnexp.training.loop import fit

TOLERANCE = 0.03
PTB_VALID = ROOT.parent / "shared" / "data" / "ptb.valid.txt"


class Metrics:
    """The recorder `fit` logs into, keeping only the validation curve."""

    def __init__(self) -> None:
        self.val_loss: list[float] = []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if "val_loss" in metrics:
            self.val_loss.append(metrics["val_loss"])

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        pass

    def log_text(self, text: str, artifact_file: str) -> None:
        pass

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        pass

    def pending(self) -> list[tuple[str, float, int]]:
        return []


def recipe(epochs: int, overrides: tuple[str, ...] = ()) -> RunConfig:
    return resolve(
        compose_run(
            [
                "experiment=ptb_word_lm",
                "schedule=constant",
                f"train.epochs={epochs}",
                f"dataset.fallback_path={PTB_VALID}",
                "diagnostics.enabled=false",
                "baseline.enabled=false",
                "train.samples=0",
                "model.dtype=float64",
                *overrides,
            ]
        )
    )


def torch_stateful_nll(torch: Any, net: Any, stream: np.ndarray, segment: int = 4096) -> float:
    """The same stateful protocol on the PyTorch side: one stream, the hidden state carried throughout."""
    total, hidden = 0.0, None
    with torch.no_grad():
        for start in range(0, len(stream) - 1, segment):
            x = torch.from_numpy(stream[None, start : min(start + segment, len(stream) - 1)].astype(np.int64))
            y = torch.from_numpy(stream[None, start + 1 : start + 1 + x.shape[1]].astype(np.int64))
            states, hidden = net.rnn(net.embed(x), hidden)
            logits = net.out(states)
            total += float(torch.nn.functional.cross_entropy(logits[0], y[0], reduction="sum"))
    return total / (len(stream) - 1)


def train_torch(cfg: RunConfig, corpus: Corpus) -> list[float]:
    """word_language_model's loop on the twin of rnnexp's initial model; the validation loss per epoch."""
    torch = try_import_torch()
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64 if cfg.model.dtype == "float64" else torch.float32)
    try:
        net = torch_twin(build_model(cfg.model, len(corpus.vocab), cfg.seed))
    finally:
        torch.set_default_dtype(default)
    chunks = batches.StreamChunks(corpus.splits["train"].stream(), cfg.train.batch_size, cfg.model.bptt_truncate)
    trainable = [p for p in net.parameters() if p.requires_grad]
    sgd = torch.optim.SGD(trainable, lr=cfg.optim.lr)
    valid = corpus.splits["valid"].stream()
    curve = [torch_stateful_nll(torch, net, valid)]
    for _ in range(cfg.train.epochs):
        hidden = None
        for index in range(len(chunks)):
            x, y = (torch.from_numpy(a.astype(np.int64)) for a in chunks[index])
            states, hidden = net.rnn(net.embed(x), hidden)
            hidden = hidden.detach()
            loss = torch.nn.functional.cross_entropy(net.out(states).reshape(-1, len(corpus.vocab)), y.reshape(-1))
            sgd.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, cfg.optim.clip_norm)
            sgd.step()
        curve.append(torch_stateful_nll(torch, net, valid))
    return curve


def lockstep_difference(cfg: RunConfig, corpus: Corpus, steps: int = 20) -> float:
    """The largest relative parameter difference after `steps` identical updates: same algorithm, step by step."""
    torch = try_import_torch()
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        model = build_model(cfg.model, len(corpus.vocab), cfg.seed)
        net = torch_twin(model)
    finally:
        torch.set_default_dtype(default)
    chunks = batches.StreamChunks(corpus.splits["train"].stream(), cfg.train.batch_size, cfg.model.bptt_truncate)
    trainable = [p for p in net.parameters() if p.requires_grad]
    sgd, torch_sgd, hidden, torch_hidden = (
        make_optimizer(cfg.optim),
        torch.optim.SGD(trainable, lr=cfg.optim.lr),
        None,
        None,
    )
    for index in range(steps):
        x, y = chunks[index]
        step = model.backprop(x, y, h0=hidden, sparse_u=True)
        clip_global_norm(step.grads, cfg.optim.clip_norm)
        sgd.step(model.params, step.grads, cfg.optim.lr)
        hidden = step.h_last
        states, torch_hidden = net.rnn(net.embed(torch.from_numpy(x.astype(np.int64))), torch_hidden)
        torch_hidden = torch_hidden.detach()
        logits = net.out(states).reshape(-1, len(corpus.vocab))
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y.astype(np.int64)).reshape(-1))
        torch_sgd.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, cfg.optim.clip_norm)
        torch_sgd.step()
    pairs = [
        (model.params["U"].T, net.embed.weight),
        (model.params["W"], net.rnn.weight_hh_l0),
        (model.params["V"], net.out.weight),
    ]
    return max(float(np.abs(a - b.detach().numpy()).max() / np.abs(a).max()) for a, b in pairs)


def run(epochs: int = 8, overrides: tuple[str, ...] = ()) -> dict:
    """Both sides' validation perplexity after each epoch, and whether the last ones agree within 3%."""
    if try_import_torch() is None:
        return {"skipped": "torch is not installed: pip install -e '.[bench]'"}
    cfg = recipe(epochs, overrides)
    corpus = load_corpus(cfg.dataset, seed=cfg.seed)
    with fixed_threads(1):
        ours = Metrics()
        with tempfile.TemporaryDirectory() as tmp:
            fit(cfg, corpus, ours, Path(tmp), "parity")
        theirs = train_torch(cfg, corpus)
        lockstep = lockstep_difference(cfg, corpus)
    rnnexp_ppl = [math.exp(v) for v in ours.val_loss]
    torch_ppl = [math.exp(v) for v in theirs]
    ratio = rnnexp_ppl[-1] / torch_ppl[-1]
    return {
        "epochs": epochs,
        "hidden_dim": cfg.model.hidden_dim,
        "lr": cfg.optim.lr,
        "dtype": cfg.model.dtype,
        "train_targets": corpus.splits["train"].n_targets,
        "rnnexp_val_ppl": rnnexp_ppl,
        "torch_val_ppl": torch_ppl,
        "ratio": ratio,
        "within_tolerance": abs(ratio - 1) <= TOLERANCE,
        "lockstep_steps": 20,
        "lockstep_max_rel_diff": lockstep,
    }


def main() -> None:
    result = run()
    if "skipped" in result:
        print(result["skipped"])
        return
    for epoch, (ours, theirs) in enumerate(zip(result["rnnexp_val_ppl"], result["torch_val_ppl"])):
        print(f"epoch {epoch}: rnnexp {ours:8.2f}   PyTorch {theirs:8.2f}   ratio {ours / theirs:.4f}")
    print(
        f"final ratio {result['ratio']:.4f}: {'within' if result['within_tolerance'] else 'OUTSIDE'} ±3%; after "
        f"{result['lockstep_steps']} lockstep updates the parameters differ by {result['lockstep_max_rel_diff']:.1e}"
    )


if __name__ == "__main__":
    main()

"""The truncation study: its reading of the cells, and a tiny sweep end to end through MLflow."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from experiments.truncation import figures, report
from experiments.truncation.measure import Cell
from rnnexp.tracking import trained
from rnnexp.training import batches
from rnnexp.data import load_corpus
from rnnexp.config.dataset import DatasetConfig, SyntheticConfig
from rnnexp.engine.rnn import RNNLM

ROOT = Path(__file__).resolve().parents[1]


def cell(distance: int, truncation: str, k: int, excess: float, full: bool = False) -> Cell:
    """A scored job: echo accuracy 1 when learnt, else 0.5 at d = 5 and chance (0.25) elsewhere; k minutes."""
    accuracy = 1.0 if excess < report.LEARNT_EXCESS else 0.5 if distance == 5 else 0.25
    return Cell(distance, truncation, k, full, f"run-{distance}-{truncation}-{k}", "FINISHED",
                dependent_excess=excess, echo_accuracy=accuracy, other_excess=0.1,
                decay=tuple(0.5 ** k for k in range(25)),
                tokens_per_sec=1000.0, minutes=float(k))


def test_window_mode_reaching_past_every_sentence_is_exactly_full_bptt() -> None:
    """What lets the study's `window 64` column stand for full BPTT."""
    corpus = load_corpus(DatasetConfig(vocab_size=64, synthetic=SyntheticConfig(n_sentences=200, distance=5, max_words=24)))
    x, y, mask = batches.pad(corpus.splits["train"].sentences[:16])
    assert x.shape[1] <= 24 + 1
    window, full = (RNNLM(64, 16, bptt_truncate=24, truncation=mode, seed=1) for mode in ("window", "full"))
    window_grads, full_grads = window.backprop(x, y, mask).grads, full.backprop(x, y, mask).grads
    for name in ("U", "W", "V"):
        np.testing.assert_array_equal(window_grads[name], full_grads[name])
    shorter = RNNLM(64, 16, bptt_truncate=4, truncation="window", seed=1).backprop(x, y, mask).grads
    assert not np.array_equal(shorter["W"], full_grads["W"])


def test_the_gradient_reaches_the_key_when_the_truncation_spans_the_distance() -> None:
    assert figures.gradient_can_reach(cell(5, "window", 4, 0.0))  # echo output back to the key: 4 steps
    assert not figures.gradient_can_reach(cell(5, "window", 2, 0.0))
    assert figures.gradient_can_reach(cell(20, "window", 64, 0.0, full=True))
    assert figures.gradient_can_reach(cell(5, "chunk", 8, 0.0))  # key and echo in one chunk of 5+ steps
    assert not figures.gradient_can_reach(cell(5, "chunk", 4, 0.0))


def test_cells_are_laid_out_by_distance_and_by_window_full_chunk_settings() -> None:
    cells = [cell(d, mode, k, 0.01 * d + k) for d in (5, 2) for mode, k in (("chunk", 8), ("window", 4), ("window", 1))]
    cells += [cell(d, "window", 64, 0.5, full=True) for d in (2, 5)]
    distances, settings, table = figures.grid(cells, "dependent_excess")
    assert distances == [2, 5] and settings == ["window 1", "window 4", "full", "chunk 8"]
    np.testing.assert_allclose(table, [[1.02, 4.02, 0.5, 8.02], [1.05, 4.05, 0.5, 8.05]])
    assert math.isnan(figures.grid(cells[:-1], "dependent_excess")[2][1, 2])  # a missing job stays empty
    assert figures.grid(cells, "gradient_reach")[2][1, 0] == 0.5 ** 4  # d = 5: the decay 4 steps back


def test_the_answer_names_what_full_bptt_learns_and_what_truncation_loses() -> None:
    cells = [cell(2, "window", 64, 0.02, full=True), cell(5, "window", 64, 0.05, full=True),
             cell(10, "window", 64, 1.39, full=True), cell(2, "window", 1, 0.03), cell(5, "window", 1, 1.2),
             cell(5, "window", 4, 0.3), cell(2, "chunk", 4, 0.04), cell(5, "chunk", 4, 0.09), cell(10, "chunk", 16, 0.08)]
    text = report.answer(cells, n_keys=4, vocab_size=64)
    assert "learns the dependency at d = 2, 5 and not at d = 10" in text
    assert "the excess is 1.39 (echo accuracy 0.25) at d = 10, against ln 4 = 1.39 and accuracy 1/4" in text
    assert ("Window truncation** loses 2 of the 3 cells that full BPTT learns. With a gradient path to the key it "
            "learns 1 of 2, without one 0 of 1. Lost: window 1 at d = 5 (1.20), window 4 at d = 5 (0.30).") in text
    assert ("Chunk truncation** loses 0 of the 2 cells that full BPTT learns. With a gradient path to the key it learns "
            "1 of 1, without one 1 of 1; learnt where full BPTT fails: chunk 16 at d = 10.") in text
    assert "above chance (1/4): best 1.00 (chunk 4) at d = 5." in text  # window 1 and chunk 4 reach no key at d = 5
    assert ("full-BPTT jobs trained in 192.0 minutes in all, window settings 2.0 to 4.0, chunk settings 8.0 to 16.0 "
            "(wall-clock") in text
    wobbly = report.answer([replace(cells[1], val_excess=(4.2, 9.0, 0.04, 0.8))], 4, 64)
    assert ("**Learnt, not held**: d = 5 (best checkpoint 0.05 on test; validation by epoch 4.2 9.0 0.0 0.8; "
            "W's spectral radius —). The skill comes and goes between epochs, the loss on the echo spiking above "
            "ln V = 4.16") in wobbly
    assert "trained in 64.0 minutes in all (wall-clock" in wobbly
    slow_window = [replace(cell(2, "window", 64, 0.0, full=True), minutes=1.0), cell(2, "window", 2, 0.0)]
    assert "in 1.0 minutes in all, window settings 2.0 to 2.0 (none faster) (wall-clock" in report.answer(slow_window, 4, 64)
    rows = {row[0]: row[1:3] for row in report.longest_learnt(cells)}
    assert rows == {"window 1": ["2", "2"], "window 4": ["none", "—"], "full": ["2, 5", "5"], "chunk 4": ["2, 5", "5"],
                    "chunk 16": ["10", "10"]}


@pytest.mark.slow
def test_a_tiny_study_runs_as_one_sweep_and_reports_its_measured_cells(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tiny = ["vocab_size=30", "hidden_dim=8", "epochs=1", "dataset.synthetic.n_sentences=200",
            "dataset.synthetic.max_words=10", "dataset.synthetic.distance=2,3", "truncation=window,chunk",
            "bptt_truncate=1,10", f"tracking_uri={uri}", f"train.checkpoint_dir={tmp_path}/checkpoints"]
    sweep = subprocess.run([sys.executable, "-m", "rnnexp.run", "experiment=truncation_study", *tiny,
                            f"hydra.sweep.dir={tmp_path}/sweep", "-m"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    written = subprocess.run([sys.executable, "-m", "experiments.truncation.report", f"tracking_uri={uri}",
                              f"checkpoint_dir={tmp_path}/checkpoints", f"report_dir={tmp_path}/report"],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert written.returncode == 0, written.stderr[-2000:]

    client = MlflowClient(uri)
    parent = report.find_sweep(client, "truncation_study", None)
    jobs = report.children(client, parent)
    assert len(jobs) == 8 and {job.info.status for job in jobs} == {"FINISHED"}
    text = (tmp_path / "report" / "REPORT.md").read_text()
    assert "| distance | window 1 | full | chunk 1 | chunk 10 |" in text  # window 10 >= max_words: full
    assert text.count("| d = 2 |") == 3 and text.count("| d = 3 |") == 3  # one row in each of the three grids
    assert (tmp_path / "report" / report.HEATMAP).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    logged = {artifact.path for artifact in client.list_artifacts(parent.info.run_id, "truncation_study")}
    assert logged == {f"truncation_study/{name}" for name in ("REPORT.md", report.HEATMAP, report.DECAY)}

    job = next(j for j in jobs if (j.data.params["dataset.synthetic.distance"], j.data.params["model.truncation"]) == ("3", "chunk"))
    loaded = trained.load(client, job.info.run_id, "best", tmp_path / "checkpoints")
    test = load_corpus(loaded.config.dataset, seed=loaded.config.seed).splits["test"]
    echoes = [loaded.model.token_nll(s[:-1], s[1:])[0][0, 3] for s in test.sentences]  # whole sentences, one by one
    scored = client.get_run(job.info.run_id).data.metrics
    assert scored["test_dependent_excess_loss"] == pytest.approx(np.mean(echoes), rel=1e-5)  # the oracle's is 0
    assert 0.0 < scored["test_dependent_excess_loss"] < math.log(30) + 1.0
    hits = [loaded.model.predict(s[:-1])[3] == s[4] for s in test.sentences]  # the echo is token 4, target 3
    assert scored["test_echo_accuracy"] == pytest.approx(np.mean(hits))
    assert {"grad_decay_k0", "dependent_excess_loss", "w_spectral_radius"} <= set(scored)  # the jobs' own diagnostics
    assert f"| {scored['test_dependent_excess_loss']:.2f} |" in text

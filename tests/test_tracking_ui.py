"""What the MLflow UI shows of runs and sweeps: names, params, the parent's summary, the experiment's
kind, the figures and the logged model's predictions (the store itself: test_mlflow_ui.py, slow)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric, Param, Run, RunData, RunInfo, RunTag
from mlflow.pyfunc import PythonModelContext
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE
from mlflow.utils.validation import MAX_TAG_VAL_LENGTH
from runner_setup import compose_run

from rnnexp.config import as_tree, resolve
from rnnexp.config.schema import DatasetConfig, ModelConfig
from rnnexp.data import load_corpus
from rnnexp.engine import RNNLM, build_model
from rnnexp.tracking import comparison
from rnnexp.tracking.describe import description, readable_name, run_params
from rnnexp.tracking.experiment import EXPERIMENT_DESCRIPTION, experiment_tags
from rnnexp.tracking.pyfunc_model import RNNLanguageModel, example_text, tokens
from rnnexp.training import checkpoint, evaluation
from rnnexp.training.diagnostics import plot_gradient_decay
from rnnexp.training.plots import learning_curves


def test_a_run_is_named_after_the_overrides_that_change_its_result() -> None:
    assert readable_name(["model.cell=lstm", "model.hidden_dim=200", "optim.lr=20"], None) == "lstm h200 lr20"
    bookkeeping = ["tracking_uri=sqlite:///x.db", "train.checkpoint_dir=/tmp/c", "blas_threads=2", "hydra.run.dir=o"]
    assert (
        readable_name(["dataset=ptb", *bookkeeping, "model.truncation=chunk", "model.bptt_truncate=35"], None)
        == "ptb chunk bptt35"
    )
    assert readable_name([*bookkeeping, "~seed"], None) == "default"
    assert (
        readable_name(["dataset.synthetic.distance=6", "model.tie_weights=true", "optim.lr=choice(1,2)"], None)
        == "distance=6 tie_weights lr=choice(1,2)"
    )
    assert (
        readable_name(["model.hidden_dim=32,64", "train.epochs=3", "hydra/launcher=joblib"], None) == "h32,64 ep3"
    )  # a sweep
    cfg = resolve(compose_run(Path("/tmp"), "model.hidden_dim=12"))
    assert readable_name(None, cfg) == "rnn h12 lr2"  # from Python: no overrides known, the model spelt out


def test_params_hold_each_knob_once_and_leave_out_unset_values_and_bookkeeping(tmp_path: Path) -> None:
    cfg = resolve(compose_run(tmp_path, "model.hidden_dim=32"))
    corpus = load_corpus(cfg.dataset, seed=cfg.seed)
    params = run_params(cfg, corpus)

    assert params["model.hidden_dim"] == "32" and params["optim.lr"] == "2.0"
    assert not {"hidden_dim", "lr", "epochs", "tracking_uri", "experiment_name", "run_name", "resume"} & set(params)
    assert "None" not in params.values() and "model.classes" not in params and "dataset.path" not in params
    flat = {f"dataset.{key}": value for key, value in as_tree(cfg)["dataset"].items() if not isinstance(value, dict)}
    assert {key for key, value in flat.items() if value is not None} <= set(params)  # nothing else left out
    text = description(cfg, corpus, "python -m rnnexp.run model.hidden_dim=32")
    assert text.startswith("```\npython -m rnnexp.run model.hidden_dim=32\n```")
    assert f"digest `{corpus.digest[:12]}`" in text and f"{len(corpus.vocab)} words" in text
    assert f"{math.exp(corpus.splits['valid'].oracle_nll):.2f}" in text and "32 hidden units" in text


def run(
    run_id: str,
    job: int,
    status: str,
    best: float | None,
    overrides: str,
    params: dict[str, str],
    failure: str | None = None,
) -> Run:
    metrics = (
        [
            Metric("best_val_ppl", best, 0, 40),
            Metric("test_ppl", best * 0.97, 0, 40),
            Metric("tokens_per_sec_mean", 5000.0 + job, 0, 40),
        ]
        if best is not None
        else []
    )
    tags = [RunTag(comparison.JOB_TAG, str(job)), RunTag("overrides", overrides)]
    tags += [RunTag("failure_reason", failure)] if failure else []
    info = RunInfo(run_id, "7", "user", status, 0, 1, "active", run_name=overrides.split()[0])
    return Run(info, RunData(metrics=metrics, params=[Param(k, v) for k, v in params.items()], tags=tags))


CHILDREN = [
    run(
        "a" * 32, 0, "FINISHED", 40.0, "model.hidden_dim=8 train.epochs=1", {"model.hidden_dim": "8", "optim.lr": "2.0"}
    ),
    run(
        "b" * 32,
        1,
        "FAILED",
        None,
        "model.hidden_dim=16 train.epochs=1",
        {"model.hidden_dim": "16", "optim.lr": "2.0"},
        failure="diverged at step 2",
    ),
    run(
        "c" * 32,
        2,
        "FINISHED",
        31.5,
        "model.hidden_dim=32 train.epochs=1",
        {"model.hidden_dim": "32", "optim.lr": "2.0"},
    ),
]


def test_a_sweep_parent_ranks_its_children_best_first_and_takes_their_shared_config() -> None:
    assert [r.info.run_id[0] for r in comparison.ranked(CHILDREN, {})] == ["c", "a", "b"]  # failed last
    assert comparison.best(CHILDREN).info.run_id == "c" * 32
    assert comparison.best(CHILDREN[1:2]) is None
    assert comparison.swept_values(CHILDREN)[0] == ["model.hidden_dim"]  # `hidden_dim` is the alias's knob
    assert comparison.sweep_params(CHILDREN) == {"optim.lr": "2.0", "model.hidden_dim": "8, 16, 32"}
    assert comparison.axis_values([str(v) for v in range(20)]) == "0 to 19 (20 values)"
    header, rows = comparison.comparison(CHILDREN, {})
    assert header == [
        "job",
        "run",
        "model.hidden_dim",
        "status",
        "best val ppl",
        "test ppl",
        "tokens/s",
        "run id",
        "failure",
    ]
    assert rows[0][:7] == ["2", "model.hidden_dim=32", "32", "FINISHED", "31.500", f"{31.5 * 0.97:.3f}", "5002"]
    assert rows[2][-1] == "diverged at step 2"


def test_a_sweep_parent_description_links_every_child_best_first_within_mlflows_limit() -> None:
    parent = Run(
        RunInfo("p" * 32, "7", "user", "FINISHED", 0, 1, "active", run_name="sweep h8,16,32"),
        RunData(tags=[RunTag("overrides", "model.hidden_dim=8,16,32 train.epochs=1")]),
    )
    text = comparison.description(parent, CHILDREN, {})
    assert text.startswith(
        "**Sweep** `python -m rnnexp.run model.hidden_dim=8,16,32 train.epochs=1 -m`: 3 runs, 2 finished."
    )
    links = [
        f"[{c.info.run_name}](#/experiments/7/runs/{c.info.run_id})" for c in (CHILDREN[2], CHILDREN[0], CHILDREN[1])
    ]
    assert f"Best: {links[0]}, validation perplexity 31.500" in text
    rows = [line for line in text.splitlines() if line.startswith("| [")]
    assert [row.split(" | ")[0][2:] for row in rows] == links and rows[2].endswith("| diverged at step 2 |")
    many = [run(f"{i:032x}", i, "FINISHED", 30.0 + i, f"optim.lr={i} x={'y' * 60}", {}) for i in range(150)]
    long = comparison.description(parent, many, {})
    assert len(long) <= MAX_TAG_VAL_LENGTH and "more runs in `comparison.md`" in long
    assert f"(#/experiments/7/runs/{0:032x})" in long  # the best rows are the ones kept


def test_experiments_are_marked_as_model_training_without_overwriting_what_a_user_chose() -> None:
    assert experiment_tags({}) == {
        "mlflow.experimentKind": "custom_model_development",
        MLFLOW_RUN_NOTE: EXPERIMENT_DESCRIPTION,
    }
    guessed = {"mlflow.experimentKind": "genai_development_inferred", MLFLOW_RUN_NOTE: "mine"}
    assert experiment_tags(guessed) == {"mlflow.experimentKind": "custom_model_development"}
    assert experiment_tags({"mlflow.experimentKind": "custom_model_development", MLFLOW_RUN_NOTE: "x"}) == {}


def test_curves_are_drawn_against_the_step_with_the_legend_beside_the_axes() -> None:
    history = [
        {"epoch": e, "step": 25 * e, "val_loss": 4.0 - 0.3 * e, "train_loss_epoch": None if e == 0 else 4.1 - 0.3 * e}
        for e in range(4)
    ]
    figure = learning_curves(history, 3.0)
    loss, ppl = figure.axes[:2]
    assert list(loss.lines[1].get_xdata()) == [0, 25, 50, 75] and list(loss.lines[0].get_xdata()) == [25, 50, 75]
    assert np.allclose(ppl.lines[0].get_ydata(), np.exp([4.0, 3.7, 3.4, 3.1]))
    assert loss.get_xlabel() == "training step" and loss.get_legend() is None and len(figure.legends) == 1
    assert [t.get_text() for t in figure.legends[0].get_texts()] == [
        "training (mean over the epoch)",
        "validation",
        "oracle (the generator)",
    ]
    few = plot_gradient_decay({e: np.exp(-np.arange(6.0)) for e in range(3)}, truncate=4)
    assert few.axes[0].get_legend() is None and len(few.legends) == 1
    many = plot_gradient_decay({e: np.exp(-np.arange(6.0)) for e in range(15)}, truncate=4)
    assert len(many.axes) == 2 and many.axes[1].get_ylabel() == "epoch"  # a colour bar, not 15 legend rows


def test_sampling_after_a_prefix_continues_from_the_state_the_prefix_leaves() -> None:
    model = build_model(ModelConfig(hidden_dim=6, bptt_truncate=4, truncation="window", dtype="float64"), 30, 3)
    prefix = [5, 9, 12]
    greedy = model.sample(np.random.default_rng(0), start_id=0, end_id=None, max_len=4, top_k=1, prefix=prefix)
    sequence = [0, *prefix]
    for word in greedy:  # top-1 sampling is the model's argmax after everything read so far
        logits = model.params["V"] @ model.hidden_states(np.array([sequence]))[0, -1]  # (B, T, H)
        logits[0] = -np.inf  # the start token is never sampled
        assert word == int(np.argmax(logits))
        sequence.append(word)


@pytest.fixture
def logged_model(tmp_path: Path) -> tuple[RNNLanguageModel, RNNLM, object]:
    """The pyfunc model as MLflow loads it, from a checkpoint and a vocabulary on disk."""
    cfg = resolve(compose_run(tmp_path))
    corpus = load_corpus(cfg.dataset, seed=cfg.seed)
    model = build_model(cfg.model, len(corpus.vocab), cfg.seed)
    checkpoint.save(tmp_path / "best.npz", checkpoint.Checkpoint(model.params, {}, {"config": as_tree(cfg)}))
    corpus.vocab.save(tmp_path / "vocab.json")
    loaded = RNNLanguageModel()
    loaded.load_context(
        PythonModelContext({"checkpoint": str(tmp_path / "best.npz"), "vocab": str(tmp_path / "vocab.json")}, None)
    )
    return loaded, model, corpus


def test_the_logged_model_scores_text_as_the_sentence_protocol_does(logged_model) -> None:
    loaded, model, corpus = logged_model
    sentence = next(s for s in corpus.splits["valid"].sentences if len(s) > 5)
    text = corpus.vocab.separator.join(corpus.vocab.decode(sentence[1:-1]))
    (scored,) = loaded.predict(None, pd.DataFrame({"text": [text]})).to_dict("records")

    oracle = evaluation.token_nll(model, type(corpus.splits["valid"])([sentence]), "sentence", 8, 64)
    assert scored["targets"] == len(sentence) - 1 and scored["unknown"] == 0
    assert np.allclose(scored["token_nll"], oracle, atol=1e-5)
    assert scored["nll"] == pytest.approx(math.log(len(corpus.vocab)), abs=0.05)  # untrained: near uniform
    assert scored["ppl"] == pytest.approx(math.exp(scored["nll"]))
    assert example_text(corpus) == corpus.vocab.separator.join(
        corpus.vocab.decode(corpus.splits["train"].sentences[0][1:-1])
    )


def test_the_logged_model_continues_text_and_refuses_words_it_never_saw(logged_model) -> None:
    loaded, _, corpus = logged_model
    words = corpus.vocab.words[3:6]
    out = loaded.predict(None, {"text": [" ".join(words), ""]}, params={"task": "generate", "max_len": 7, "seed": 1})
    again = loaded.predict(None, {"text": [" ".join(words), ""]}, params={"task": "generate", "max_len": 7, "seed": 1})
    assert out.equals(again) and list(out["text"]) == [" ".join(words), ""]
    assert all(0 < len(c.split()) <= 7 and set(c.split()) <= set(corpus.vocab.words) for c in out["continuation"])
    with pytest.raises(Exception, match="'zzqx' is not in the model's vocabulary"):
        loaded.predict(None, {"text": ["zzqx"]})
    with pytest.raises(Exception, match="task must be one of score, generate"):
        loaded.predict(None, {"text": ["x"]}, params={"task": "translate"})


def test_text_is_tokenised_the_way_each_dataset_tokenises() -> None:
    assert tokens("The cat, sat.", DatasetConfig(name="text", level="word")) == ["The", "cat", ",", "sat", "."]
    assert tokens("Ab c", DatasetConfig(name="text", level="char", lowercase=True)) == ["a", "b", " ", "c"]
    assert tokens("a  b <unk>", DatasetConfig(name="ptb")) == ["a", "b", "<unk>"]
    assert tokens("Don't stop", DatasetConfig(name="reddit", lowercase=True)) == ["do", "n't", "stop"]

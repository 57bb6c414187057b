"""A run's best checkpoint as an MLflow model, listed on the experiment's Models tab.

    model = mlflow.pyfunc.load_model("runs:/<run id>/model")
    model.predict(pd.DataFrame({"text": ["some words"]}))                      # per-token NLL, perplexity
    model.predict(pd.DataFrame({"text": ["some"]}), params={"task": "generate", "temperature": 0.8})

The model is logged from code (MLflow's "models from code"): its code is `RNNLanguageModel` here,
imported from the installed rnnexp package by a two-line script, so nothing is pickled. Its
artifacts are the checkpoint (`.npz`, read with allow_pickle=False; it holds the run's config) and
the vocabulary (JSON). Each text is one sentence, tokenised as the run's dataset tokenises, scored
from a zero state between its boundary tokens, the way the sentence protocol scores.
"""

from __future__ import annotations

import math
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import LoggedModel, LoggedModelOutput, LoggedModelStatus
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.pyfunc import PythonModel, PythonModelContext, save_model
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from rnnexp.config import DatasetConfig
from rnnexp.data import Corpus
from rnnexp.tracking import trained
from rnnexp.training import checkpoint

MODEL_NAME = "model"  # runs:/<run id>/model
ENTRY_POINT = """\
from mlflow.models import set_model

from rnnexp.tracking.pyfunc_model import RNNLanguageModel

set_model(RNNLanguageModel())
"""
TASKS = ("score", "generate")
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "text")]),
    params=ParamSchema(
        [
            ParamSpec("task", "string", "score"),  # score | generate
            ParamSpec("max_len", "long", 30),  # generate: words (or characters) at most
            ParamSpec("temperature", "double", 1.0),
            ParamSpec("top_k", "long", 0),  # 0: sample from the whole vocabulary
            ParamSpec("seed", "long", 0),
        ]
    ),
)
# What the model needs besides rnnexp itself (installed from its checkout: not on PyPI), pinned as trained.
REQUIREMENTS = ("mlflow", "numpy", "scipy", "hydra-core", "nltk", "pandas")


class RNNLanguageModel(PythonModel):
    """Scores text (per-token negative log-likelihood and perplexity) or continues it."""

    def load_context(self, context: PythonModelContext) -> None:
        loaded = trained.from_files(Path(context.artifacts["checkpoint"]), Path(context.artifacts["vocab"]))
        self.model, self.vocab, self.dataset = loaded.model, loaded.vocab, loaded.config.dataset

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        params = {**{spec.name: spec.default for spec in SIGNATURE.params.params}, **(params or {})}
        # MLflow makes {"text": ["a", "b"]} one row holding the list: each of its texts is scored too
        texts = [
            str(text)
            for cell in model_input["text"]
            for text in (cell if isinstance(cell, (list, tuple, np.ndarray)) else [cell])
        ]
        if params["task"] == "score":
            return pd.DataFrame([self.score(text) for text in texts])
        if params["task"] == "generate":
            rng = np.random.default_rng(int(params["seed"]))
            top_k = int(params["top_k"]) or None
            return pd.DataFrame(
                [
                    {
                        "text": text,
                        "continuation": self.continue_text(
                            text, rng, int(params["max_len"]), float(params["temperature"]), top_k
                        ),
                    }
                    for text in texts
                ]
            )
        raise MlflowException.invalid_parameter_value(
            f"task must be one of {', '.join(TASKS)}, got {params['task']!r}."
        )

    def encode(self, text: str) -> tuple[list[int], int]:
        """The start token and the text's token ids, and how many of its tokens were unknown."""
        if self.vocab.start_id is None:
            raise MlflowException.invalid_parameter_value(
                "this model's vocabulary has no sentence-start token: it scores and continues sentence data only."
            )
        words = tokens(text, self.dataset)
        unknown = [word for word in words if word not in self.vocab]
        if unknown and self.vocab.unknown_id is None:
            raise MlflowException.invalid_parameter_value(
                f"{unknown[0]!r} is not in the model's vocabulary, which has no unknown token: "
                "give text made of the words it was trained on."
            )
        return [self.vocab.start_id, *(int(i) for i in self.vocab.encode(words))], len(unknown)

    def score(self, text: str) -> dict[str, Any]:
        """The NLL of every token after the start token, the end token included, from a zero state."""
        ids, unknown = self.encode(text)
        if self.vocab.end_id is not None:
            ids.append(self.vocab.end_id)
        if len(ids) < 2:
            raise MlflowException.invalid_parameter_value(f"{text!r} has no token to score.")
        nll, _ = self.model.token_nll(np.array([ids[:-1]]), np.array([ids[1:]]))
        token_nll = [float(v) for v in nll[0]]
        mean = float(np.mean(token_nll))
        return {
            "text": text,
            "targets": len(token_nll),
            "unknown": unknown,
            "nll": mean,
            "ppl": math.exp(mean),
            "token_nll": token_nll,
        }

    def continue_text(
        self, text: str, rng: np.random.Generator, max_len: int, temperature: float, top_k: int | None
    ) -> str:
        """The words the model samples after `text`, until the end token or `max_len`."""
        ids, _ = self.encode(text)
        words = self.model.sample(
            rng,
            self.vocab.start_id,
            self.vocab.end_id,
            self.vocab.unknown_id,
            max_len,
            temperature,
            top_k,
            prefix=ids[1:],
        )
        return self.vocab.separator.join(self.vocab.decode(words))


def tokens(text: str, dataset: DatasetConfig) -> list[str]:
    """One sentence's tokens, the way the run's dataset tokenises (boundary tokens left out)."""
    if dataset.lowercase:
        text = text.lower()
    if dataset.name == "text" and dataset.level == "char":
        return list(text.replace("\n", " "))
    if dataset.name == "text":
        from nltk.tokenize import wordpunct_tokenize

        return wordpunct_tokenize(text)
    if dataset.name == "reddit":
        from nltk.tokenize import NLTKWordTokenizer

        return NLTKWordTokenizer().tokenize(text)
    return text.split()  # synthetic, ptb


def log_model(client: MlflowClient, run_id: str, checkpoint_path: Path, corpus: Corpus) -> LoggedModel:
    """Log `checkpoint_path` (the run's best) as the run's MLflow model `model`, linked to the step it was saved at."""
    run = client.get_run(run_id)
    logged = client.create_logged_model(
        run.info.experiment_id,
        name=MODEL_NAME,
        source_run_id=run_id,
        params=dict(run.data.params),
        model_type="rnnexp language model",
    )
    with tempfile.TemporaryDirectory() as tmp:
        entry, vocab_path, saved = Path(tmp, "rnnexp_model.py"), Path(tmp, trained.VOCAB_ARTIFACT), Path(tmp, "model")
        entry.write_text(ENTRY_POINT)
        corpus.vocab.save(vocab_path)
        description = Model(
            artifact_path=logged.artifact_location, run_id=run_id, model_id=logged.model_id, model_uuid=logged.model_id
        )
        save_model(
            saved,
            python_model=str(entry),
            mlflow_model=description,
            signature=SIGNATURE,
            artifacts={"checkpoint": str(checkpoint_path), "vocab": str(vocab_path)},
            input_example=pd.DataFrame({"text": [example_text(corpus)]}),
            pip_requirements=[f"{name}=={version(name)}" for name in REQUIREMENTS],
        )
        client.log_model_artifacts(logged.model_id, str(saved))
    step = checkpoint.load(checkpoint_path).meta["progress"]["step"]
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step)])
    return client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)


def example_text(corpus: Corpus) -> str:
    """The first training sentence as text, boundary tokens left out: the model's input example."""
    vocab = corpus.vocab
    sentence = next(s for s in corpus.splits["train"].sentences if len(s) >= 2)
    return vocab.separator.join(vocab.decode(i for i in sentence if i not in (vocab.start_id, vocab.end_id)))

"""`python -m rnnexp.ui`: the address `make ui` prints, where a fresh browser lands on the experiment's runs.

    python -m rnnexp.ui [tracking_uri=sqlite:///mlflow.db] [url=http://127.0.0.1:5000]

Prints the URL of the runs table under "Model training", sorted by best_val_ppl with the metric and
param columns (through a saved view it stores on the experiment: tracking.ui), or the UI's home page
and "no runs yet" when the store or the experiment does not exist; it never creates a store.
"""

from __future__ import annotations

import hydra

from rnnexp import cli, config
from rnnexp.tracking.store import resolve_tracking_uri
from rnnexp.tracking.ui import ui_url


@hydra.main(version_base="1.3", config_path="../conf", config_name="ui")
@cli.reports_user_errors
def main(cfg: config.UiConfig) -> None:
    url, note = ui_url(resolve_tracking_uri(cfg.tracking_uri), cfg.experiment_name, cfg.url)
    print(url)
    if note:
        print(note)


if __name__ == "__main__":
    cli.guard(main)

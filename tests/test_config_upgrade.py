"""Configs saved before a knob's rename still load: older runs evaluate, generate and resume with today's code."""

from __future__ import annotations

from rnnexp.config import compose_run
from rnnexp.config.resolve import as_tree, resolve


def saved_before_the_renames(schedule: dict) -> dict:
    """Today's default config, written back with the names a run saved before `schedule.factor` and
    `dataset.segment_length` were renamed."""
    tree = as_tree(resolve(compose_run(["dataset=ptb"])))
    tree["schedule"] = schedule
    tree["dataset"]["segment_length"] = tree["dataset"].pop("stream_sequence_length") + 5
    return tree


def test_a_plateau_run_saved_with_factor_decays_by_it_under_the_new_name():
    old = saved_before_the_renames({"name": "plateau", "factor": 0.25, "gamma": 0.5, "step_epochs": 10})
    run = resolve(old)
    assert run.schedule.name == "plateau" and run.schedule.gamma == 0.25
    assert run.dataset.stream_sequence_length == 40


def test_a_step_run_saved_with_an_unused_factor_keeps_its_gamma():
    run = resolve(saved_before_the_renames({"name": "step", "factor": 0.25, "gamma": 0.7, "step_epochs": 3}))
    assert (run.schedule.gamma, run.schedule.step_epochs) == (0.7, 3)


def test_a_config_saved_by_todays_code_is_read_unchanged():
    tree = as_tree(resolve(compose_run(["dataset=ptb", "schedule=plateau"])))
    assert as_tree(resolve(tree)) == tree

"""Every claim of the "RNN from scratch" tutorial (and the WildML post it follows), measured here.

    python -m experiments.tutorial.reproduce              # make reproduce: quick, < 15 min on 2 cores
    python -m experiments.tutorial.reproduce mode=full    # make reproduce-full: trains the full model

writes experiments/tutorial/REPORT.md and its figures, and logs each claim as an MLflow run in the
experiment `tutorial`.
"""

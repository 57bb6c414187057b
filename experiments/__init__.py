"""Reproductions and studies built on rnnexp: each folder holds what it runs, its report and figures."""

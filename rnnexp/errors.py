"""The one exception type for mistakes a user can fix (bad data, bad config, bad input)."""


class UserError(Exception):
    """A problem the user can fix; its message is one sentence saying what and how.

    Entry points print the message alone (no traceback), exit with status 2, and mark any MLflow
    run that had started as FAILED with the message as the reason.
    """


class DivergedError(UserError):
    """Training diverged: the loss or the gradient became non-finite, or far worse than guessing."""

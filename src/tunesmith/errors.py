"""Errors a user can fix. The CLI prints them as one line and exits with code 2.

Anything else that escapes is a bug in tunesmith and gets a traceback (with --debug)
or a short pointer to --debug.
"""


class UserError(Exception):
    """Bad input: a file, row, column, flag or config key the user can correct.

    The message must name the offending thing and say what to do about it.
    """

    exit_code = 2


class TrainingDiverged(Exception):
    """The loss became NaN or infinite. The last good checkpoint is kept."""

    exit_code = 3


class Interrupted(Exception):
    """Ctrl-C during training; the run folder holds the last checkpoint."""

    exit_code = 130

    def __init__(self, run_path, to_continue: str | None = None):
        super().__init__("interrupted; " + (to_continue or f"the last checkpoint is kept: tunesmith train --resume {run_path}"))

"""User-facing errors: one line that names the problem and the fix (the CLI exits with status 2)."""


class UsageError(ValueError):
    """A problem with the user's input (names, paths, files, configs); the message says how to fix it."""


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the last good checkpoint is kept."""

"""The one error type of the preprocessing tool: what went wrong with which file, and how to fix it."""


class DataError(ValueError):
    """Bad input. `path` names the file, `why` says what is wrong with it, `fix` what the user can do."""

    def __init__(self, path, why: str, fix: str):
        self.path = str(path)
        self.why = why
        self.fix = fix
        super().__init__(f"{self.path}: {why} (fix: {fix})")

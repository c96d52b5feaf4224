"""DataError: the project's one error for bad input (a file or folder that cannot be used as it is)."""


class DataError(ValueError):
    """Bad input data. `path` names the file or folder, `why` what is wrong with it, `fix` what to do."""

    def __init__(self, path, why: str, fix: str):
        self.path = str(path)
        self.why = why
        self.fix = fix
        super().__init__(f"{self.path}: {why} (fix: {fix})")

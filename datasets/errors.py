"""DataError: the project's one error for bad input (a file or folder that cannot be used as it is)."""
from typing import Optional


class DataError(ValueError):
    """Bad input data. `path` names the file or folder, `why` what is wrong with it, `fix` what to do.

    DataLoader workers send an exception to the main process as its type and traceback text only, and
    torch re-raises it as `type(text)` (torch._utils.ExceptionWrapper.reraise; a type that cannot be built
    from one string becomes a RuntimeError). So `DataError(text)` is accepted too: it takes path, why and fix
    back from the traceback's last line, and the main process gets the same DataError (same message, same
    exit code) as a run without workers.
    """

    def __init__(self, path, why: Optional[str] = None, fix: Optional[str] = None):
        if why is None and fix is None:
            path, why, fix = _fields_from_traceback(str(path))
        self.path = str(path)
        self.why = why
        self.fix = fix
        super().__init__(f"{self.path}: {why} (fix: {fix})")

    def __reduce__(self):  # pickled with its three fields (the default would call DataError(message))
        return type(self), (self.path, self.why, self.fix)


def _fields_from_traceback(text: str) -> tuple:
    """(path, why, fix) from a formatted traceback (or a bare message) ending in a DataError's message."""
    marker = f"{DataError.__module__}.{DataError.__qualname__}: "
    message = text[text.rindex(marker) + len(marker):] if marker in text else text
    message = message.rstrip("\n")
    body, sep, fix = message.rpartition(" (fix: ")
    if not sep or not fix.endswith(")"):
        return "<unknown>", message, "see the message above"
    path, sep, why = body.partition(": ")
    return (path, why, fix[:-1]) if sep else ("<unknown>", body, fix[:-1])

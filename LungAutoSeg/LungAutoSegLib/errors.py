"""The one error type users see: it names the file and the problem, never a traceback."""


class InputError(Exception):
    """Bad input (a file, a folder, a setting) that the user can fix.

    Command-line tools print ``str(error)`` and exit non-zero; nothing is written.
    """

    def __init__(self, message: str, path=None):
        self.path = str(path) if path is not None else None
        super().__init__(f"{self.path}: {message}" if self.path else message)

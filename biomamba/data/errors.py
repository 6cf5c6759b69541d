"""The one exception the data pipeline raises for bad inputs: a one-line message naming the file.

`biomamba prepare` catches it, prints `error: <message>` and exits 1 without a traceback.
"""


class DataError(Exception):
    """A data input or output is unusable; str(err) is one line that names the file."""

    def __init__(self, path, message: str):
        super().__init__(str(path), " ".join(str(message).split()))  # one line, whatever lxml/gzip said
        self.path, self.message = self.args

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"

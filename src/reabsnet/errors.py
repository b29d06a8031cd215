"""The one exception a user can cause; the CLI prints it as a single line and exits non-zero."""


class ReabsnetError(Exception):
    """A problem with the user's input or environment (bad file, unknown name, missing data).

    Internal invariants are asserts; anything a user can trigger raises this with a message that says
    what went wrong and what to do about it. The message is kept to one line: text quoted from another library's
    error (a parser's, say) may hold line breaks, which become spaces.
    """

    def __init__(self, message: object = ""):
        super().__init__(" ".join(str(message).split()))

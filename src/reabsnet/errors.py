"""The one exception a user can cause; the CLI prints it as a single line and exits non-zero."""


class ReabsnetError(Exception):
    """A problem with the user's input or environment (bad file, unknown name, missing data).

    Internal invariants are asserts; anything a user can trigger raises this with a message that says
    what went wrong and what to do about it.
    """

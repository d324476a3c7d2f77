"""The one exception a user can cause and fix: bad input, a missing stage, a bad option.

The CLI prints a UserError as one line and exits 2; anything else is a bug and keeps its traceback.
It is a ValueError, so library callers that catch ValueError for bad input keep working."""


class UserError(ValueError):
    pass

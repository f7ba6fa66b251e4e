"""The base of every error a user can act on, in the three tools.

`UserError`: the command line prints such an error as one line, and anything else as a
bug with its traceback (`tfrecords_tools.base.cli`).  Each package subclasses it for its
own errors; each message names the file, member, class or argument at fault.
"""


class UserError(Exception):
    """Something the user can put right (a path, an argument, a file's contents)."""


class ArgumentError(UserError, ValueError):
    """An argument a tool cannot use; the message names it and the valid range."""

"""The one user-error type: what a config, an input file or a server can get wrong, reported as one line.

Every module's own error (``BudgetError``, ``DatasetError``, ``RunError``...) derives from :class:`UserError`,
so the entry points (``stages/entry.py``) tell a user's mistake (message, exit status 2) from a bug
(traceback) with one ``except``.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix: the message says what and, where it can, how."""

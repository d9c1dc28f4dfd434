"""The one exception type for mistakes a user can make (bad path, bad config, unknown model...).

The CLI turns it into a single line on stderr and exit code 2; anything else is a bug and may raise.
"""


class UserError(Exception):
    """A problem the user caused and can fix; the message must say how."""

"""The one error type every codec raises."""


class DecodeError(ValueError):
    """A message that cannot become spans. ``str(error)`` is the reason, recorded in the dead-letter topic."""

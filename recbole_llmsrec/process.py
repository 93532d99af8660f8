"""Whether a process still runs: the test both the converter's and the checkpoints' clean-up of what
a killed process left behind rely on (standard library only)."""

import os


def process_exists(pid):
    """True while process ``pid`` exists on this machine (also when another user owns it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True

"""Process checks for tests and the demo."""


def running(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting for a reaper (containers whose init
    does not reap leave those behind)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return pid > 0 and f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False

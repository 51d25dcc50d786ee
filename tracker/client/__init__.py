"""The client: Tracker, composed by concept, and Run, the handle whose log_* never wait."""

from tracker.client.handle import LockedRun, Run, exit_status
from tracker.client.tracker import Tracker

__all__ = ["LockedRun", "Run", "Tracker", "exit_status"]

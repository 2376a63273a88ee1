"""Cloud sync: outbox drain, summaries, retraining data, disk budget (docs/sync.md)."""

from agent.sync.stage import SyncStage

__all__ = ["SyncStage"]

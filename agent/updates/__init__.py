"""The agent's side of signed model updates: poll, probation verdicts, rollback.

See :mod:`agent.updates.lifecycle` and docs/updates.md.
"""

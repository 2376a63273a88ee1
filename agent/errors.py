"""The one exception tree of edgewatch.

Every failure a user can cause or meet (bad config, broker down, bad model bundle,
corrupt payload, full disk) is an :class:`EdgewatchError`. Its ``str()`` is the one
line the CLI shows: what went wrong and what to do. ``hint`` carries the "what to
do" part so that callers can render it separately.
"""

from __future__ import annotations


class EdgewatchError(Exception):
    """Root of all errors edgewatch raises on purpose."""

    #: Process exit code the CLI uses when this error ends a command.
    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class ConfigError(EdgewatchError):
    """The configuration (file, environment or flags) is invalid.

    ``problems`` holds one line per invalid key, e.g.
    ``mqtt.port: 70000 is not a port (1-65535)``.
    """

    def __init__(self, problems: list[str], *, source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        where = f" ({source})" if source else ""
        head = f"invalid configuration{where}: " + "; ".join(self.problems)
        super().__init__(head, hint="fix it; `edgewatch config check` lists every problem")


class StorageError(EdgewatchError):
    """The local database cannot be opened, migrated or written."""


class SchemaTooNewError(StorageError):
    """The database was migrated by a newer edgewatch than this one."""


class DiskFullError(StorageError):
    """The disk under the data directory is full or the disk budget is exhausted."""


class BrokerError(EdgewatchError):
    """The MQTT broker cannot be reached or refused us."""


class PayloadError(EdgewatchError):
    """An incoming message is not a valid reading.

    ``reason`` is the stable reason code stored in ``dead_letters.reason``.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class ModelError(EdgewatchError):
    """A model could not be trained, evaluated or run."""


class BundleError(ModelError):
    """A model bundle failed verification and was refused."""


class DatasetError(EdgewatchError):
    """An input data file (training, replay, evaluation) is missing or malformed."""


class SyncError(EdgewatchError):
    """The cloud target could not be reached or refused an upload."""


class UpdateError(ModelError):
    """A signed model update could not be published, fetched or verified."""


class UpdateRefusedError(UpdateError):
    """A model update failed a security check (signature, expiry, rollback, hash) and
    was refused; the live bundle was not touched."""

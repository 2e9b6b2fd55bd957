"""The exceptions heartwire raises on purpose.

Every error an operator can cause derives from :class:`HeartwireError`; the CLI
catches that base class once and prints its message as one line::

    HeartwireError
    ├── ConfigError      a config file is unreadable or invalid (file, key path, message)
    ├── UsageError       the command line asks for something that cannot be done
    ├── EditError        a command-line config edit that cannot be done safely (file, line)
    ├── ReloadError      the config was written but the running daemon could not be told
    ├── AlreadyRunning   another daemon holds the pid file of this state directory
    ├── SigningKeyError  a signing key, public key or shared secret is malformed
    ├── SecretFileError  a key/secret file is unreadable or readable by group/others
    ├── SignatureError   a received message's signature does not verify
    ├── OutboxFullError  the outbox could not store messages (full disk): counted as dropped
    └── DeliveryError    a message did not reach a destination
        ├── RetryableDeliveryError   try again later (network, 5xx, 408, 429, ...)
        └── PermanentDeliveryError   refused for good (other 4xx): skip and count it

Anything else that escapes is a bug and is allowed to show its traceback.
"""

from __future__ import annotations


class HeartwireError(Exception):
    """Base class: an error caused by input, reported as one line."""


class ConfigError(HeartwireError):
    """A config file that cannot be used.

    Attributes:
        file: the file the problem is in.
        key: the dotted key path (``checks.db.port``), or None for whole-file problems.
        message: what is wrong, in words an operator can act on.
    """

    def __init__(self, file: str, key: str | None, message: str) -> None:
        self.file = file
        self.key = key
        self.message = message
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {message}")


class UsageError(HeartwireError):
    """The command line asks for something that cannot be done."""


class EditError(HeartwireError):
    """A command-line config edit that cannot be done without risking hand-written text.

    Attributes:
        file: the file the operator should edit instead (or that is busy).
        line: the 1-based line to look at, or None.
        message: what is wrong and what to do.
    """

    def __init__(self, file: str, line: int | None, message: str) -> None:
        self.file, self.line, self.message = file, line, message
        super().__init__(f"{file}:{line}: {message}" if line else f"{file}: {message}")


class ReloadError(HeartwireError):
    """The config change was written, but the running daemon could not be told."""


class AlreadyRunning(HeartwireError):
    """Another daemon already runs with the same pid file (the same state directory)."""


class SigningKeyError(HeartwireError):
    """A signing key (``whsk_``), public key (``whpk_``) or secret (``whsec_``) is malformed."""


class SecretFileError(HeartwireError):
    """A key or secret file cannot be used: missing, unreadable, or open to group/others."""


class SignatureError(HeartwireError):
    """A message's Standard Webhooks signature does not verify.

    Raised by :func:`agent.common.signing.verify` for a missing or malformed header, a
    timestamp outside the tolerance window, or no signature matching a trusted key.
    A receiver answers it with 401 and must not process the message.
    """


class DeliveryError(HeartwireError):
    """A message could not be delivered to a destination."""


class RetryableDeliveryError(DeliveryError):
    """Not delivered this time (network, 5xx, 408, 429, a 2xx that did not record it).

    Attributes:
        retry_after_s: the delay the destination asked for (``Retry-After``), or None.
    """

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PermanentDeliveryError(DeliveryError):
    """The destination refused the message for good (a 4xx other than 408 and 429)."""


class OutboxFullError(HeartwireError):
    """The outbox could not store messages: the disk is full or failing.

    The messages were counted as dropped (reported in the next stored heartbeat);
    the agent keeps checking and stores again once space returns.
    """

"""Every error contextd knows how to explain, one class per stage.

Each error carries the one-line message a user sees and, where there is one, the fix.
`cli` is the only place that turns them into output and exit codes; nothing else prints
or exits. An exception that is not a ContextdError is a bug (exit 70).
"""

from __future__ import annotations

from typing import Optional, Sequence

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_CONFIG = 2
EXIT_APPLY_FAILED = 3
EXIT_INTERNAL = 70


class ContextdError(Exception):
    """Base: a failure with a message for humans and an exit code."""

    exit_code = EXIT_REJECTED
    stage = "run"

    def __init__(self, message: str, hint: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = self.message
        if self.hint:
            text = "%s (%s)" % (text, self.hint)
        # One line, whatever a hostile input smuggled into the message, and no secret a run
        # registered (a plugin's message may quote a malformed token: it is still a secret).
        from contextd.logs import redact

        return " ".join(redact(text).split())


class UsageError(ContextdError):
    """Bad command-line use."""

    exit_code = EXIT_CONFIG
    stage = "usage"


class PolicyError(ContextdError):
    """The site policy file is missing, unsafe or invalid."""

    exit_code = EXIT_CONFIG
    stage = "policy"


class SourceError(ContextdError):
    """The context could not be found or read (CD-ROM, file, metadata)."""

    stage = "fetch"


class BundleError(ContextdError):
    """The signed bundle's armour is malformed."""

    stage = "fetch"


class SignatureError(ContextdError):
    """No acceptable signature: tampered, unknown key, wrong namespace, ..."""

    stage = "verify"


class PayloadError(ContextdError):
    """The signed payload is not a valid contextd payload/v1 document."""

    stage = "parse"


class SigningError(ContextdError):
    """The VO side: a key or payload that cannot be signed or packed."""

    stage = "sign"


class PolicyViolation(ContextdError):
    """The payload is signed but the site policy refuses some of it.

    Carries every violation at once so the VO fixes them in one round.
    """

    stage = "authorize"

    def __init__(self, violations: Sequence[str]):
        self.violations = list(violations)
        count = len(self.violations)
        head = "payload rejected by site policy (%d violation%s): " % (
            count,
            "" if count == 1 else "s",
        )
        super().__init__(head + "; ".join(self.violations))


class StateError(ContextdError):
    """contextd's own state (what this instance applied) is not what contextd writes.

    State is input like any carrier: refused, never obeyed, never a crash. Refused rather
    than ignored: treating it as "no history" would let a replayed older payload through.
    Nothing is applied (exit 1) until the file is removed.
    """

    stage = "state"


class JournalError(StateError):
    """The rollback journal a killed run left cannot be trusted or used (moved aside)."""

    stage = "recover"


class ApplyError(ContextdError):
    """Applying the plan failed; what was written has been rolled back."""

    exit_code = EXIT_APPLY_FAILED
    stage = "apply"

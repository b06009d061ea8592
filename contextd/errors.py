"""Every way a command ends: the one table of outcomes and exit codes, and every error class.

Each error carries the one-line message a user sees and, where there is one, the fix, and
its Outcome (the word a report records, the exit code). `cli` is the only place that turns
them into output and exit codes; nothing here or in the stages prints or exits. An exception
that is not a ContextdError is a bug (Outcome.INTERNAL, exit 70).
"""

from __future__ import annotations

import enum
from typing import Any, Dict, List, Optional, Sequence


class Outcome(enum.Enum):
    """How a run or command ended (DESIGN section 3 and 7): (report word, exit code).

    The first member with a word is that word's usual ending (report.exit_code of an older
    report without an exit code falls back to it)."""

    APPLIED = ("applied", 0)
    UNCHANGED = ("unchanged", 0)
    SKIPPED = ("skipped", 0)            # nothing to do: no context, where the policy allows it
    REJECTED = ("rejected", 1)          # the context, its signature, payload or policy said no
    APPLY_FAILED = ("failed", 3)        # apply failed and was rolled back
    # Bad flags, a path the user named that cannot be used, an unusable setting met mid-run:
    # nothing was judged, so the report says failed (not rejected, which is the context's word).
    USAGE = ("failed", 2)
    POLICY = ("failed", 2)              # no usable site policy (an alias of USAGE: one ending)
    INTERNAL = ("failed", 70)           # a bug: traceback to a file

    def __init__(self, word: str, exit_code: int):
        self.word = word
        self.exit_code = exit_code

    @classmethod
    def usual(cls, word: str) -> Optional[Outcome]:
        """The outcome a report word means when nothing else is said (None: not a word)."""
        return next((o for o in cls if o.word == word), None)


EXIT_OK = Outcome.APPLIED.exit_code
EXIT_REJECTED = Outcome.REJECTED.exit_code
EXIT_CONFIG = Outcome.USAGE.exit_code
EXIT_APPLY_FAILED = Outcome.APPLY_FAILED.exit_code
EXIT_INTERNAL = Outcome.INTERNAL.exit_code
EXIT_CODES = frozenset(o.exit_code for o in Outcome)


class ContextdError(Exception):
    """Base: a failure with a message for humans, the stage it ended and its Outcome."""

    outcome = Outcome.REJECTED
    stage = "run"

    @property
    def exit_code(self) -> int:
        return self.outcome.exit_code

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

    outcome = Outcome.USAGE
    stage = "usage"


class PolicyError(ContextdError):
    """The site policy file is missing, unsafe or invalid."""

    outcome = Outcome.POLICY
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


class DeliveryError(ContextdError):
    """The report spool cannot be used (busy, unreadable)."""

    stage = "report"


class ApplyError(ContextdError):
    """Applying the plan failed; what was written has been rolled back."""

    outcome = Outcome.APPLY_FAILED
    stage = "apply"


class ApplyFailed(ApplyError):
    """Apply stopped at an action and rolled back; carries what each action did."""

    def __init__(self, message: str, results: List[Dict[str, Any]],
                 rolled_back: List[str], not_undone: List[str]):
        super().__init__(message, "nothing was left half-applied; see the report's actions")
        self.results = results
        self.rolled_back = rolled_back
        self.not_undone = not_undone


class ScriptFailed(ApplyError):
    """A pinned HEPiX prolog failed, before anything was applied; carries its result."""

    def __init__(self, message: str, hint: str, results: List[Dict[str, Any]]):
        super().__init__(message, hint)
        self.results = results


class PlanError(ContextdError):
    """A plugin could not read what it merges into (puppet.conf under the root) while
    planning: nothing was applied, so nothing was rolled back."""

    stage = "plan"


class NoService(SourceError):
    """Nothing answered at the metadata address: not an EC2-style cloud, for detection."""


class CollectorConfigError(ContextdError):
    """contextd-collector's configuration (or a file it names) is unusable: exit 2."""

    outcome = Outcome.USAGE
    stage = "collector"

"""Typed reading of untrusted mappings (policy, payload sections, plugin settings).

Every reader names the exact field (`htcondor.attributes.VMType`) and raises the error
class the caller gives, so one set of checks serves the policy (exit 2) and the payload
(exit 1). It never coerces: a string is not an int, a bool is not an int.
"""

from __future__ import annotations

import fnmatch
import re
from typing import (Any, Dict, Iterable, List, Literal, Mapping, Optional, Sequence, Type,
                    overload)

from contextd.errors import ContextdError
from contextd.patterns import Pattern

# RFC 1123 host names, each label 1-63 characters, the whole at most 253.
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
HOSTNAME_RE = Pattern(r"^%s(\.%s)*$" % (_LABEL, _LABEL))


# Reader's methods are named for what they read (str, int, bool), which shadows the builtins
# in the annotations that follow them inside the class: these names say the builtin types.
Text = str
Bool = bool


class Reader:
    """Reads fields of one mapping, reporting errors as `err` with `where` as prefix.

    Patterns must match the whole value (`fullmatch`): a `$` alone would let a trailing
    newline through into a shell-sourced or INI file.
    """

    def __init__(self, data: Any, where: str, err: Type[ContextdError]):
        self.where = where
        self.err = err
        if not isinstance(data, Mapping):
            raise err("%s must be a mapping, not %s" % (where or "document", kind(data)))
        for key in data:
            if not isinstance(key, str):
                raise err("%s: key %r must be a string" % (where or "document", key))
        self.data = data

    def field(self, key: str) -> str:
        return "%s.%s" % (self.where, key) if self.where else key

    def fail(self, key: str, problem: str, hint: Optional[str] = None) -> ContextdError:
        return self.err("%s %s" % (self.field(key), problem), hint)

    def only(self, allowed: Iterable[str]) -> None:
        allowed = list(allowed)
        unknown = sorted(set(self.data) - set(allowed))
        if unknown:
            raise self.err(
                "%s: unknown key%s %s" % (
                    self.where or "document",
                    "" if len(unknown) == 1 else "s",
                    ", ".join(repr(k) for k in unknown),
                ),
                _did_you_mean(unknown, allowed) + "allowed keys: %s" % ", ".join(allowed),
            )

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def _get(self, key: str, required: bool) -> Any:
        if key not in self.data or self.data[key] is None:
            if required:
                raise self.fail(key, "is required")
            return None
        return self.data[key]

    # A required field is never None; mypy learns it from these two signatures.
    @overload
    def str(self, key: Text, required: Literal[True], default: Optional[Text] = None,
            pattern: Optional[Pattern[Text]] = None, what: Text = "") -> Text: ...
    @overload
    def str(self, key: Text, required: Bool = False, default: Optional[Text] = None,
            pattern: Optional[Pattern[Text]] = None, what: Text = "") -> Optional[Text]: ...

    def str(self, key: Text, required: Bool = False, default: Optional[Text] = None,
            pattern: Optional[Pattern[Text]] = None, what: Text = "") -> Optional[Text]:
        value = self._get(key, required)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self.fail(key, "must be a string, not %s" % kind(value))
        if pattern is not None and not pattern.fullmatch(value):
            raise self.fail(key, "%r is not a valid %s" % (value, what or "value"))
        return value

    def secret(self, key: Text, chars: Text, min_len: int, max_len: int,
               what: Text = "token") -> Optional[Text]:
        """A secret string, checked without ever quoting it (malformed, it is still a secret).

        `chars` is the body of a regex character class; the message says how long the value
        is and how many of its characters are outside it, never which.
        """
        value = self._get(key, False)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.fail(key, "must be a string, not %s" % kind(value))
        bad = len(re.findall("[^%s]" % chars, value))
        if bad:
            raise self.fail(key, "is not a valid %s: %d characters, %d of them not in [%s]"
                            % (what, len(value), bad, chars))
        if not min_len <= len(value) <= max_len:
            raise self.fail(key, "is not a valid %s: %d characters, must be %d to %d"
                            % (what, len(value), min_len, max_len))
        return value

    def int(self, key: Text, required: Bool = False, default: Optional[int] = None,
            minimum: Optional[int] = None, maximum: Optional[int] = None) -> Optional[int]:
        value = self._get(key, required)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, "must be an integer, not %s" % kind(value))
        if minimum is not None and value < minimum:
            raise self.fail(key, "must be at least %d, not %d" % (minimum, value))
        if maximum is not None and value > maximum:
            raise self.fail(key, "must be at most %d, not %d" % (maximum, value))
        return value

    def bool(self, key: Text, default: Bool = False) -> Bool:
        value = self._get(key, False)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.fail(key, "must be true or false, not %s" % kind(value))
        return value

    def str_list(self, key: Text, required: Bool = False,
                 pattern: Optional[Pattern[Text]] = None, what: Text = ""
                 ) -> Optional[List[Text]]:
        value = self._get(key, required)
        if value is None:
            return None
        if not isinstance(value, list):
            raise self.fail(key, "must be a list, not %s" % kind(value))
        out = []
        for i, item in enumerate(value):
            name = "%s[%d]" % (key, i)
            if not isinstance(item, str):
                raise self.fail(name, "must be a string, not %s" % kind(item))
            if pattern is not None and not pattern.fullmatch(item):
                raise self.fail(name, "%r is not a valid %s" % (item, what or "value"))
            out.append(item)
        return out

    def mapping(self, key: Text, required: Bool = False) -> Optional[Reader]:
        value = self._get(key, required)
        if value is None:
            return None
        return Reader(value, self.field(key), self.err)


def _did_you_mean(unknown: Sequence[str], allowed: Sequence[str]) -> str:
    """"did you mean 'repositories'? " for a likely typo; only on an error (difflib)."""
    import difflib

    close = [difflib.get_close_matches(k, allowed, 1) for k in unknown]
    guesses = ["%r" % c[0] for c in close if c]
    return "did you mean %s? " % " or ".join(guesses) if guesses else ""


def kind(value: Any) -> str:
    """A user-facing name for a YAML value's type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__


def glob_match(value: str, patterns: Sequence[str]) -> bool:
    """Case-sensitive shell-style match; `*` also matches dots, as the policy documents."""
    return any(glob_one(value, p) for p in patterns)


def path_match(path: str, glob: str) -> bool:
    """Whether absolute `path` matches `glob` as a whole path, component by component:
    `*` and `?` never cross a '/' (fnmatch alone lets `/etc/*.conf` match `/etc/a/b.conf`)."""
    parts, globs = path.split("/"), glob.split("/")
    return len(parts) == len(globs) and all(glob_one(p, g) for p, g in zip(parts, globs))


def glob_one(value: str, pattern: str) -> bool:
    """fnmatchcase, without its regular expression for a pattern that has no wildcard (most
    policy values: a site, a host, a path part): equality is what fnmatch would decide, and a
    boot then compiles no expression for it."""
    if "*" in pattern or "?" in pattern or "[" in pattern:
        return fnmatch.fnmatchcase(value, pattern)
    return value == pattern


def hostname_ok(value: str) -> bool:
    return len(value) <= 253 and bool(HOSTNAME_RE.fullmatch(value))


def plain(data: Dict[str, Any]) -> Dict[str, Any]:
    """Drop None values: what a normalised, printed document shows."""
    return {k: v for k, v in data.items() if v is not None}

"""YAML loading for untrusted and site documents: safe, strict, plain.

Rejects duplicate keys (PyYAML silently keeps the last one), anchors and aliases (no
billion-laughs, no values that change under the reader's eye), and keeps timestamps as
strings so the caller parses them with its own strict rule ('Z' required). It never
constructs anything but str, int, float, bool, None, list and dict: a tag that would make
something else (`!!binary`, `!!timestamp`, `!!set`, ...) is refused before construction.

What it must never do: let an exception other than the caller's error class out (a value
PyYAML cannot construct, `!!int abc` or `!!timestamp 2026-13-45`, is the document's fault,
named by line and column), or spend more than linear time on a number (int() of a long
digit string is quadratic on Python 3.9 and refused over 4300 digits on 3.11+).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Type

from contextd.errors import ContextdError
from contextd.limits import LIMITS

MAX_DEPTH = LIMITS.yaml_depth  # contextd/limits.py says why
MAX_INT_CHARS = LIMITS.yaml_int_chars  # contextd/limits.py says why

_T = "tag:yaml.org,2002:"
# The tags whose constructors make the plain values promised above, by node kind.
_PLAIN_TAGS = {"scalar": {_T + name for name in ("str", "int", "float", "bool", "null")},
               "sequence": {_T + "seq"}, "mapping": {_T + "map"}}
_KIND = {"scalar": "scalar", "sequence": "list", "mapping": "mapping"}
_HINT = "write plain strings, numbers, booleans, null, lists and mappings, without YAML tags"


def load(text: bytes, what: str, err: Type[ContextdError], libyaml: bool = True) -> Any:
    """Parse `text`; any YAML problem becomes `err` naming `what` and the line.
    `libyaml=False` takes PyYAML's own parser (tests hold both to the same rules)."""
    import yaml

    loader_cls = _loader_class(libyaml)
    try:
        loader = loader_cls(text)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except _Refused as exc:
        raise err(exc.message(what), exc.hint) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = " at line %d column %d" % (mark.line + 1, mark.column + 1) if mark else ""
        raise err("%s is not valid YAML%s: %s" % (what, where, exc.problem or exc)) from None
    except yaml.YAMLError as exc:
        raise err("%s is not valid YAML: %s" % (what, exc)) from None
    except RecursionError:
        raise err("%s is nested too deeply" % what) from None


class _Refused(Exception):
    """What the strict rules refuse; with the node's mark when it is about one value."""

    def __init__(self, problem: str, hint: Optional[str] = None, mark: Any = None):
        super().__init__(problem)
        self.problem, self.hint, self.mark = problem, hint, mark

    def message(self, what: str) -> str:
        if self.mark is None:
            return "%s: %s" % (what, self.problem)
        return "%s is not valid YAML at line %d column %d: %s" % (
            what, self.mark.line + 1, self.mark.column + 1, self.problem)


def _short(tag: str) -> str:
    return "!!" + tag[len(_T):] if tag.startswith(_T) else tag


def _check_tag(node: Any) -> None:
    """Refuse, before any constructor runs, a tag that would not make a plain value or does
    not fit its node, and an integer too long to convert in linear time."""
    tag = node.tag
    if tag == _T + "merge":
        raise _Refused("YAML merge key '<<' at line %d is not allowed"
                       % (node.start_mark.line + 1), "write the keys out in full")
    if tag not in _PLAIN_TAGS[node.id]:
        fits = any(tag in tags for tags in _PLAIN_TAGS.values())
        raise _Refused("tag %s %s" % (_short(tag), "does not fit a %s" % _KIND[node.id] if fits
                                      else "is not allowed"), _HINT, node.start_mark)
    if tag == _T + "int" and len(node.value) > MAX_INT_CHARS:
        raise _Refused("an integer of %d characters is too long (at most %d digits are read)"
                       % (len(node.value), MAX_INT_CHARS), "no contextd setting needs more",
                       node.start_mark)


_cache: Dict[bool, Any] = {}


def _refuse_reference(event: Any, yaml: Any) -> None:
    """An alias (`*a`) or an anchor (`&a`) at `event`: refused, whatever it points at."""
    if isinstance(event, yaml.AliasEvent):
        raise _Refused("YAML alias '*%s' at line %d is not allowed" % (
            event.anchor, event.start_mark.line + 1), "write the value out in full")
    if getattr(event, "anchor", None):
        raise _Refused("YAML anchor '&%s' at line %d is not allowed" % (
            event.anchor, event.start_mark.line + 1), "write the value out in full")


def _strict_checks() -> Any:
    """The checks, as a mixin class for a loader (before its composer and constructor)."""
    import yaml
    from yaml.constructor import ConstructorError

    class Strict:
        depth = 0

        def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
            _refuse_reference(self.peek_event(), yaml)
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise _Refused("nesting deeper than %d levels" % MAX_DEPTH)
            try:
                node = super().compose_node(parent, index)
            finally:
                self.depth -= 1
            _check_tag(node)
            return node

        def construct_object(self, node, deep=False):  # type: ignore[no-untyped-def]
            try:
                return super().construct_object(node, deep=deep)
            except (ValueError, TypeError, LookupError, ArithmeticError):
                # Scalar constructors parse with int(), float(), a dict of booleans; what
                # they raise on `!!int abc`, `!!int ''` or `!!bool maybe` is the document's.
                if not isinstance(node, yaml.ScalarNode):
                    raise
                raise _Refused("%r is not a valid %s" % (node.value[:40], _short(node.tag)),
                               _HINT, node.start_mark) from None

        def construct_mapping(self, node, deep=False):  # type: ignore[no-untyped-def]
            seen = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:
                    raise ConstructorError(None, None, "unhashable key",
                                           key_node.start_mark) from None
                if key in seen:
                    raise _Refused("duplicate key %r at line %d (first at line %d)" % (
                        key, key_node.start_mark.line + 1, seen[key]), "each key may appear once")
                seen[key] = key_node.start_mark.line + 1
            return super().construct_mapping(node, deep=deep)

    return Strict


def _loader_class(libyaml: bool = True) -> Any:
    """The strict loader; on libyaml's C parser when PyYAML has it (EL9's does)."""
    if libyaml in _cache:
        return _cache[libyaml]
    import yaml

    Strict = _strict_checks()
    if libyaml and getattr(yaml, "__with_libyaml__", False):
        # libyaml scans and parses (the costly part, in C); the composer and constructor
        # stay Python, so the checks above see every event.
        class StrictLoader(Strict, yaml.composer.Composer, yaml.cyaml.CParser,  # type: ignore
                           yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
            def __init__(self, stream):  # type: ignore[no-untyped-def]
                yaml.cyaml.CParser.__init__(self, stream)
                yaml.composer.Composer.__init__(self)
                yaml.constructor.SafeConstructor.__init__(self)
                yaml.resolver.Resolver.__init__(self)
    else:
        class StrictLoader(Strict, yaml.SafeLoader):  # type: ignore[no-redef,valid-type,misc]
            pass

    # Timestamps stay strings: the payload's own rule (UTC, 'Z') decides, not YAML 1.1's.
    StrictLoader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    _cache[libyaml] = StrictLoader
    return StrictLoader

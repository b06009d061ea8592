"""YAML loading for untrusted and site documents: safe, strict, plain.

Rejects duplicate keys (PyYAML silently keeps the last one), anchors and aliases (no
billion-laughs, no values that change under the reader's eye), and keeps timestamps as
strings so the caller parses them with its own strict rule ('Z' required). It never
constructs anything but str, int, float, bool, None, list and dict.
"""

from __future__ import annotations

from typing import Any, Dict, Type

from contextd.errors import ContextdError

MAX_DEPTH = 64


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
        raise err("%s: %s" % (what, exc.args[0]), exc.args[1] if len(exc.args) > 1 else None)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = " at line %d column %d" % (mark.line + 1, mark.column + 1) if mark else ""
        raise err("%s is not valid YAML%s: %s" % (what, where, exc.problem or exc))
    except yaml.YAMLError as exc:
        raise err("%s is not valid YAML: %s" % (what, exc))
    except RecursionError:
        raise err("%s is nested too deeply" % what)


class _Refused(Exception):
    pass


_cache: Dict[bool, Any] = {}


def _loader_class(libyaml: bool = True) -> Any:
    """The strict loader; on libyaml's C parser when PyYAML has it (EL9's does)."""
    if libyaml in _cache:
        return _cache[libyaml]
    import yaml
    from yaml.constructor import ConstructorError

    class Strict:
        """The checks, mixed into a loader before its composer and constructor."""

        depth = 0

        def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise _Refused(
                    "YAML alias '*%s' at line %d is not allowed" % (
                        event.anchor, event.start_mark.line + 1),
                    "write the value out in full",
                )
            event = self.peek_event()
            if getattr(event, "anchor", None):
                raise _Refused(
                    "YAML anchor '&%s' at line %d is not allowed" % (
                        event.anchor, event.start_mark.line + 1),
                    "write the value out in full",
                )
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise _Refused("nesting deeper than %d levels" % MAX_DEPTH)
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

        def construct_mapping(self, node, deep=False):  # type: ignore[no-untyped-def]
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise _Refused("YAML merge key '<<' at line %d is not allowed"
                                   % (key_node.start_mark.line + 1))
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:
                    raise ConstructorError(None, None, "unhashable key", key_node.start_mark)
                if key in seen:
                    raise _Refused(
                        "duplicate key %r at line %d (first at line %d)" % (
                            key, key_node.start_mark.line + 1, seen[key]),
                        "each key may appear once",
                    )
                seen[key] = key_node.start_mark.line + 1
            return super().construct_mapping(node, deep=deep)

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
        class StrictLoader(Strict, yaml.SafeLoader):  # type: ignore[no-redef]
            pass

    # Timestamps stay strings: the payload's own rule (UTC, 'Z') decides, not YAML 1.1's.
    StrictLoader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    _cache[libyaml] = StrictLoader
    return StrictLoader

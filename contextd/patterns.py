"""Regular expressions compiled where they are first used, not when their module is imported.

Why: the boot-path modules held 64 module-level patterns and a run matches with about half of
them. Each costs 30-180 us to compile, so compiling them all at import was about 1.6 ms of
every boot (3.11; more on 3.9) spent on patterns the run never used (issue 13,
bench/RESULTS.md). `Pattern` keeps the pattern and compiles it at its first match, once per
process; tests/test_lazy_patterns.py keeps the boot path free of compiles at import.

It offers what contextd calls on a compiled pattern (fullmatch, match, search, sub, split,
findall, finditer) with the same arguments and results. It must never change what a pattern
matches: the pattern and flags go to re.compile exactly as given.
"""

from __future__ import annotations

import re
import sys
from typing import Any, AnyStr, Callable, Generic, Iterator, List, Optional, Union


class Pattern(Generic[AnyStr]):
    """`re.compile(pattern, flags)`, done at the first call that needs it."""

    __slots__ = ("_compiled", "flags", "pattern")

    def __init__(self, pattern: AnyStr, flags: int = 0):
        self.pattern: AnyStr = pattern
        self.flags = flags
        self._compiled: Optional[re.Pattern[AnyStr]] = None

    def compiled(self) -> re.Pattern[AnyStr]:
        if self._compiled is None:
            self._compiled = re.compile(self.pattern, self.flags)
        return self._compiled

    def fullmatch(self, string: AnyStr, pos: int = 0,
                  endpos: int = sys.maxsize) -> Optional[re.Match[AnyStr]]:
        return self.compiled().fullmatch(string, pos, endpos)

    def match(self, string: AnyStr, pos: int = 0,
              endpos: int = sys.maxsize) -> Optional[re.Match[AnyStr]]:
        return self.compiled().match(string, pos, endpos)

    def search(self, string: AnyStr, pos: int = 0,
               endpos: int = sys.maxsize) -> Optional[re.Match[AnyStr]]:
        return self.compiled().search(string, pos, endpos)

    def sub(self, repl: Union[AnyStr, Callable[[re.Match[AnyStr]], AnyStr]], string: AnyStr,
            count: int = 0) -> AnyStr:
        return self.compiled().sub(repl, string, count)

    def split(self, string: AnyStr, maxsplit: int = 0) -> List[Union[AnyStr, Any]]:
        return self.compiled().split(string, maxsplit)

    def findall(self, string: AnyStr, pos: int = 0, endpos: int = sys.maxsize) -> List[Any]:
        return self.compiled().findall(string, pos, endpos)

    def finditer(self, string: AnyStr, pos: int = 0,
                 endpos: int = sys.maxsize) -> Iterator[re.Match[AnyStr]]:
        return self.compiled().finditer(string, pos, endpos)

    def __repr__(self) -> str:
        return "Pattern(%r)" % (self.pattern,)

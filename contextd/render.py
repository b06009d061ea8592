"""Renders one Jinja2 template from a payload, sandboxed and bounded in time, memory and size.

The template is the VO's text, and so is every `vars` value in it: it is rendered with
Jinja2's SandboxedEnvironment (no attribute starting with `_`, no unsafe method), with
StrictUndefined (a missing name is an error, not an empty string), with no loader (no
include, import or extends: nothing is read from any filesystem) and only the names it is
given. The sandbox bounds what a template may reach, not what it may cost, so the compile
and the render run in a forked child with an address-space limit and a CPU limit, under a
wall-clock deadline, and the output is cut at its byte limit; `*`, `+` and `**` refuse to
build huge values before they build them.

It must never be imported on the boot path unless a payload has a template (Jinja2 costs
tens of ms), never give a template a loader, a filesystem, a module or a callable other than
Jinja2's own, and never let a render outlive its deadline.
"""

from __future__ import annotations

import os
import select
import signal
import time
from typing import Any, Dict, List, Mapping, Tuple

from contextd.errors import PlanError
from contextd.limits import LIMITS


def render(source: str, names: Mapping[str, Any], max_bytes: int, where: str) -> bytes:
    """The template's output, UTF-8; PlanError naming `where` (`files[0].template`) when
    it is refused, fails, runs out of time or memory, or would exceed `max_bytes`."""
    try:
        import jinja2.sandbox  # noqa: F401  (imported before the fork: the child is fast)
    except ImportError:
        raise PlanError("%s: Jinja2 is not installed, so templates cannot be rendered" % where,
                        "install python3-jinja2 in the image") from None
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:                                        # the child: never returns
        os.close(read_end)
        _child(write_end, source, names, max_bytes)
    os.close(write_end)
    try:
        data, killed = _collect(read_end, pid, max_bytes)
    finally:
        os.close(read_end)
    _, status = os.waitpid(pid, 0)
    if killed:
        raise PlanError("%s: rendering took longer than %ds" % (where, LIMITS.template_seconds),
                        "a template for a configuration file renders in milliseconds")
    if data[:1] == b"+":
        return data[1:]
    if data[:1] == b"-":
        raise PlanError("%s: %s" % (where, data[1:].decode("utf-8", "replace")))
    raise PlanError("%s: the render ended without a result (%s)" % (where, _how(status)))


def _collect(fd: int, pid: int, max_bytes: int) -> Tuple[bytes, bool]:
    """What the child writes, at most max_bytes and a margin; (data, killed at deadline)."""
    deadline = time.monotonic() + LIMITS.template_seconds
    chunks: List[bytes] = []
    size = 0
    while size <= max_bytes + 4096:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            os.kill(pid, signal.SIGKILL)
            return b"", True
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    else:
        os.kill(pid, signal.SIGKILL)        # the child cuts at max_bytes: this is a bug guard
        return b"-output over its limit", False
    return b"".join(chunks), False


def _how(status: int) -> str:
    if os.WIFSIGNALED(status):
        return "killed by signal %d: out of CPU time or memory" % os.WTERMSIG(status)
    return "exit status %d" % os.WEXITSTATUS(status)


def _child(fd: int, source: str, names: Mapping[str, Any], max_bytes: int) -> None:
    """Compile and render under rlimits; write b"+output" or b"-one line why"; _exit."""
    try:
        try:
            _limit_resources()
            result = b"+" + _render(source, names, max_bytes)
        except MemoryError:
            result = b"-it needs more than %d MiB of memory" % (
                LIMITS.template_memory_bytes // (1024 * 1024))
        except RecursionError:
            result = b"-it recurses too deeply"
        except Exception as exc:  # noqa: BLE001 - any failure of the VO's template is its answer
            result = ("-%s" % _reason(exc)).encode("utf-8", "replace")
        view = memoryview(result)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os._exit(0)


def _limit_resources() -> None:
    import resource

    with open("/proc/self/statm") as statm:
        size = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    for which, soft in ((resource.RLIMIT_AS, size + LIMITS.template_memory_bytes),
                        (resource.RLIMIT_CPU, LIMITS.template_seconds + 1)):
        hard = resource.getrlimit(which)[1]
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        resource.setrlimit(which, (soft, hard))


def _reason(exc: Exception) -> str:
    lineno = getattr(exc, "lineno", None)
    where = " (line %d)" % lineno if isinstance(lineno, int) else ""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return "%s%s: %s" % (type(exc).__name__, where, text[:300])


def _render(source: str, names: Mapping[str, Any], max_bytes: int) -> bytes:
    env = _environment()
    template = env.from_string(source)
    out: List[bytes] = []
    size = 0
    for piece in template.generate(**dict(names)):
        chunk = piece.encode("utf-8")
        size += len(chunk)
        if size > max_bytes:
            raise ValueError("output exceeds %d bytes" % max_bytes)
        out.append(chunk)
    return b"".join(out)


def _environment() -> Any:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment, SecurityError

    bits = LIMITS.template_bits
    largest = LIMITS.file_bytes

    class Sandbox(SandboxedEnvironment):   # type: ignore[misc]
        # Intercepted operators are also never folded at compile time (the compiler would
        # otherwise compute `9**9**9` itself, outside any check).
        intercepted_binops = frozenset(["*", "**", "+"])

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            _check_binop(operator, left, right, bits, largest, SecurityError)
            return super().call_binop(context, operator, left, right)

    env = Sandbox(undefined=StrictUndefined, autoescape=False, loader=None,
                  keep_trailing_newline=True)
    # Only range (the sandbox's bounded one), dict and namespace: no lipsum, cycler, joiner.
    env.globals = {k: v for k, v in env.globals.items() if k in ("range", "dict", "namespace")}
    return env


def _check_binop(operator: str, left: Any, right: Any, bits: int, largest: int,
                 error: Any) -> None:
    """Refuse an operation whose result would be huge, before it is computed."""
    def size(value: Any) -> int:
        return len(value) if isinstance(value, (str, bytes, list, tuple)) else -1

    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (left, right))
    if operator == "**" and ints and right > 0 and abs(left) > 1 and \
            left.bit_length() * right > bits:
        raise error("a %d-bit integer ** %d would exceed %d bits" % (left.bit_length(), right,
                                                                     bits))
    if operator == "*":
        for seq, times in ((left, right), (right, left)):
            if size(seq) >= 0 and isinstance(times, int) and size(seq) * times > largest:
                raise error("a sequence of %d repeated %d times would exceed %d"
                            % (size(seq), times, largest))
    if operator == "+" and size(left) >= 0 and size(right) >= 0 and \
            size(left) + size(right) > largest:
        raise error("joining %d and %d would exceed %d" % (size(left), size(right), largest))


def namespace(facts: Mapping[str, Any], site_settings: Mapping[str, Any],
              variables: Mapping[str, Any]) -> Dict[str, Any]:
    """The names a template sees: `facts`, `site_settings` and `vars`, plain copies."""
    return {"facts": dict(facts), "site_settings": dict(site_settings), "vars": dict(variables)}

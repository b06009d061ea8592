"""The command line: parse arguments, call one command, turn errors into exit codes.

This is the only place that prints errors or decides exit codes (DESIGN section 3). A known
error is one line on stderr; anything else is a bug: one line plus a traceback in a file.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from contextd import __version__, errors, logs
from contextd.errors import ContextdError, UsageError

log = logging.getLogger("contextd")
# Allocations (net of frees) before the collector's first pass; Python's default is 700.
GC_THRESHOLD = 100000


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, sized without shutil: argparse makes one to check every
    add_argument, and shutil.get_terminal_size costs the import of shutil, bz2 and lzma
    (4 ms of each boot). Same rule as shutil: $COLUMNS, else the terminal, else 80."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: Optional[int] = None, **more: Any):   # more: newer Pythons' options
        if width is None:
            width = _columns() - 2      # as argparse does
        super().__init__(prog, indent_increment, max_help_position, width, **more)


def _columns() -> int:
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            # sys.__stdout__ is None without a stdout: the AttributeError below covers it.
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class _Parser(argparse.ArgumentParser):
    """Every parser, the commands' too, takes -v (`contextd run -v` as well as `contextd -v
    run`); SUPPRESS keeps a command's parser from resetting what the top level set."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)
        self.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                          help="log each step to stderr (default: warnings only)")

    def error(self, message: str) -> None:  # type: ignore[override]
        # cli prints "contextd: error: ": the message itself does not repeat the program.
        raise UsageError(message, "see %s --help" % self.prog)


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """The command line. With `command`, only that command is declared: each parser costs
    argparse a gettext lookup per label, a few milliseconds of every boot for commands a boot
    never runs. Without it (no or an unknown command) all are, for --help and the error."""
    p = _Parser(prog="contextd", description="Signed, policy-checked VM contextualization.",
                epilog=_EPILOG)
    p.add_argument("--version", action="version", version="contextd %s" % __version__)
    p.set_defaults(verbose=False)
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    sub.required = True
    for name, (summary, declare) in _COMMANDS.items():
        if command in (None, name):
            declare(sub.add_parser(name, help=summary))
    return p


def _command_in(argv: Sequence[str]) -> Optional[str]:
    """The command word (the global options take no value), if it is one we know."""
    word = next((arg for arg in argv if not arg.startswith("-")), None)
    return word if word in _COMMANDS else None


_POLICY_HELP = "the site policy (default /etc/contextd/policy.yaml)"
_EPILOG = ("exit status, for every command: 0 success (applied, unchanged, skipped); "
           "1 rejected (the context could not be read, or its signature, payload or the "
           "policy said no; nothing applied); 2 usage or site-configuration error (bad "
           "options, a named file that cannot be used, a broken policy); 3 apply failed "
           "(rolled back); 70 internal error (a bug). See contextd(8).")


def _run_options(run: argparse.ArgumentParser) -> None:
    run.add_argument("--policy", default="/etc/contextd/policy.yaml", metavar="FILE",
                     help=_POLICY_HELP)
    run.add_argument("--root", default="/", metavar="DIR",
                     help="apply under this directory (default /)")
    run.add_argument("--source", metavar="KIND:WHERE",
                     help="skip detection and read this source: iso:PATH (a context ISO, "
                     "CD-ROM or disc: contextd/, context.sh, OpenStack config-2, NoCloud "
                     "cidata), dir:PATH, file:PATH (user-data: a bundle, gzip or MIME), "
                     "ec2:URL, openstack:URL, gce:URL (metadata services, e.g. "
                     "ec2:http://169.254.169.254), url:URL (user-data over HTTP(S)); default: "
                     "the policy's sources, in order")
    run.add_argument("--state-dir", metavar="DIR", help="what was applied, backups for "
                     "rollback (default /var/lib/contextd under --root)")
    run.add_argument("--run-dir", metavar="DIR", help="where report.json is written "
                     "(default /run/contextd under --root)")
    run.add_argument("--spool-dir", metavar="DIR", help="undelivered reports (default "
                     "/var/spool/contextd/reports under --root)")
    run.add_argument("--run-commands", action="store_true",
                     help="run commands even under an alternate --root (default: only "
                     "under /)")
    run.add_argument("--dry-run", action="store_true",
                     help="plan only; change nothing, write no report (default: off)")
    run.add_argument("--json", action="store_true",
                     help="print the report as JSON (default: a summary)")


def _explain_options(ex: argparse.ArgumentParser) -> None:
    ex.add_argument("bundle", help="a bundle file, a context ISO or a context directory")
    ex.add_argument("--policy", default="/etc/contextd/policy.yaml", metavar="FILE",
                    help=_POLICY_HELP)
    ex.add_argument("--fact", action="append", default=[], metavar="NAME=VALUE",
                    help="a host fact, as explain prints them (site, hostname, cloud, region, "
                    "instance_id, image_id, image, image_version); repeatable; default: the "
                    "policy's site and this host's name")
    ex.add_argument("--root", default="/", metavar="DIR",
                    help="read current files (puppet.conf) and the image manifest from here "
                    "(default /)")
    ex.add_argument("--json", action="store_true", help="print as JSON (default: text)")


def _sign_options(sign: argparse.ArgumentParser) -> None:
    sign.add_argument("payload", help="payload.yaml, or an existing bundle to add a signature to")
    sign.add_argument("--key", help="unencrypted OpenSSH private key (no default: this or "
                      "--x509-key)")
    sign.add_argument("--cert", help="with --key: the key's SSH user certificate "
                      "(KEY-cert.pub) to embed, as ssh-keygen -Y sign -f KEY-cert.pub does "
                      "(default: none)")
    sign.add_argument("--x509-key", metavar="KEY.pem",
                      help="instead of --key: an unencrypted PEM key of an X.509 (robot) "
                      "certificate (no default)")
    sign.add_argument("--x509-cert", metavar="CERT.pem", help="with --x509-key: the signer "
                      "certificate; further certificates in the file are intermediates "
                      "(no default)")
    sign.add_argument("--x509-chain", metavar="CHAIN.pem", action="append", default=[],
                      help="with --x509-key: intermediate certificates to ship (repeatable; "
                      "default: none)")
    sign.add_argument("-o", "--output", help="bundle to write (appends when it exists); "
                      "default stdout")
    sign.add_argument("--force", action="store_true",
                      help="sign a payload every VM would reject (to test a site's "
                      "rejections); default: refuse it")


def _pack_options(pack: argparse.ArgumentParser) -> None:
    psub = pack.add_subparsers(dest="carrier", parser_class=_Parser)
    psub.required = True
    piso = psub.add_parser("iso", help="a HEPiX/OpenNebula-style context ISO (label CONTEXT)")
    piso.add_argument("bundle", help="the signed bundle (contextd sign's output)")
    piso.add_argument("-o", "--output", required=True, metavar="ISO",
                      help="the ISO to write (required)")
    piso.add_argument("--file", action="append", default=[], metavar="REL=PATH",
                      help="also put PATH on the ISO as REL (files the payload lists; "
                      "repeatable; default: none)")
    piso.add_argument("--label", default="CONTEXT", help="volume label (default CONTEXT)")
    pud = psub.add_parser("user-data", help="EC2 user-data (gzip when it helps; max 16 KiB)")
    pud.add_argument("bundle", help="the signed bundle (contextd sign's output)")
    pud.add_argument("-o", "--output", required=True, metavar="FILE",
                     help="the user-data file to write (required)")


def _policy_options(pol: argparse.ArgumentParser) -> None:
    polsub = pol.add_subparsers(dest="action", parser_class=_Parser)
    polsub.required = True
    check = polsub.add_parser("check", help="validate a policy and print it normalised")
    check.add_argument("file", nargs="?", default="/etc/contextd/policy.yaml",
                       help="the policy (default /etc/contextd/policy.yaml)")
    check.add_argument("--json", action="store_true", help="print as JSON (default: YAML)")


def _status_options(st: argparse.ArgumentParser) -> None:
    st.add_argument("--root", default="/", metavar="DIR",
                    help="the machine's root (default /)")
    st.add_argument("--run-dir", metavar="DIR",
                    help="where the report is (default /run/contextd under --root)")
    st.add_argument("--json", action="store_true", help="print the report as JSON "
                    "(default: one line)")
    st.add_argument("--wait", action="store_true", help="block until this boot's run "
                    "finished; at once when a kill switch is set (default: do not wait)")
    st.add_argument("--timeout", type=float, default=None, metavar="S",
                    help="with --wait: seconds to wait at most (default: no limit)")


def _report_options(rp: argparse.ArgumentParser) -> None:
    rpsub = rp.add_subparsers(dest="action", parser_class=_Parser)
    rpsub.required = True
    fl = rpsub.add_parser("flush", help="send spooled reports; remove what was acknowledged")
    fl.add_argument("--root", default="/", metavar="DIR",
                    help="the machine's root (default /)")
    fl.add_argument("--spool-dir", metavar="DIR",
                    help="the spool (default /var/spool/contextd/reports under --root)")


def _image_options(im: argparse.ArgumentParser) -> None:
    isub = im.add_subparsers(dest="action", parser_class=_Parser)
    isub.required = True
    sign = isub.add_parser("sign", help="sign the manifest of an image root at build: writes "
                           "/etc/contextd/image.json and image.json.sig under it")
    sign.add_argument("--key", required=True, metavar="FILE", help="the site's unencrypted "
                      "OpenSSH image-signing private key (required)")
    sign.add_argument("--root", required=True, metavar="DIR",
                      help="the image's root directory (required)")
    sign.add_argument("--name", required=True, help="the image's name (required)")
    sign.add_argument("--version", required=True, help="the image's version (required)")
    sign.add_argument("--build-id", help="the build's id (default: BUILD_ID of the image's "
                      "os-release)")
    sign.add_argument("--site", help="the site (default: site of the image's own policy)")
    show = isub.add_parser("show", help="the image's manifest and whether it verifies")
    show.add_argument("--root", default="/", metavar="DIR",
                      help="the image's root directory (default /)")
    show.add_argument("--policy", metavar="FILE",
                      help="the policy naming the image signers (default: "
                      "/etc/contextd/policy.yaml under --root)")
    show.add_argument("--json", action="store_true", help="print as JSON (default: text)")


_COMMANDS: Dict[str, Tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "run": ("the boot job: detect, verify, authorize, apply, report", _run_options),
    "explain": ("what a bundle would do on this site, and why", _explain_options),
    "sign": ("VO side: sign a payload (or add a signature to a bundle)", _sign_options),
    "pack": ("VO side: put a bundle on a carrier", _pack_options),
    "policy": ("site policy tools", _policy_options),
    "status": ("the last run's outcome", _status_options),
    "report": ("reports that could not be delivered at boot", _report_options),
    "image": ("site side: sign an image's manifest at build, or show it", _image_options),
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    _collect_less()
    args: Any = None
    try:
        words = sys.argv[1:] if argv is None else argv
        args = build_parser(_command_in(words)).parse_args(words)
        logs.setup(verbose=args.verbose)
        return _dispatch(args)
    except ContextdError as exc:
        print("contextd: error: %s" % exc.one_line(), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("contextd: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 - the one place a bug becomes exit 70
        crash = _save_traceback()
        print("contextd: unexpected error (a bug, please report it): %s: %s; traceback in %s"
              % (type(exc).__name__, exc, crash), file=sys.stderr)
        return errors.EXIT_INTERNAL


def _collect_less() -> None:
    """Let the cyclic garbage collector wait. A command is one short process whose every
    input is capped (limits.py); during a boot run the collector otherwise makes about 30
    passes over the objects the libraries create at import and frees a few hundred, which
    costs more than it saves (bench/RESULTS.md). It still runs, later: a safety net for a
    process that would allocate without end."""
    gc.set_threshold(GC_THRESHOLD, 50, 50)


def _save_traceback() -> str:
    import tempfile
    import traceback

    fd, path = tempfile.mkstemp(prefix="contextd-crash-", suffix=".log")
    with os.fdopen(fd, "w") as f:
        traceback.print_exc(file=f)
    return path


def _dispatch(args: Any) -> int:
    from contextd import commands

    if args.command == "run":
        return commands.run(args)
    if args.command == "explain":
        return commands.explain(args)
    if args.command == "sign":
        return commands.sign(args)
    if args.command == "pack":
        return commands.pack(args)
    if args.command == "policy":
        return commands.policy_check(args)
    if args.command == "status":
        return commands.status(args)
    if args.command == "report":
        return commands.report_flush(args)
    if args.command == "image":
        return commands.image(args)
    raise UsageError("unknown command %r" % args.command)


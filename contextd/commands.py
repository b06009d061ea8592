"""The commands behind the CLI: each takes parsed arguments, prints, returns an exit code.

A command that fails raises a ContextdError; cli maps it to its exit code (errors.Outcome).
A command that ends without an error returns a code from the same table, never a number of
its own.
"""

from __future__ import annotations

import datetime
import json
import os
import stat
import sys
import time
from typing import Any, Dict

from contextd import filesystem, killswitch, paths, policy, report
from contextd.errors import EXIT_OK, EXIT_REJECTED, ContextdError, SourceError, UsageError


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def run(args: Any) -> int:
    from contextd import run as runner

    opts = runner.Options(policy=args.policy, root=args.root, source=args.source,
                          state_dir=args.state_dir, run_dir=args.run_dir,
                          spool_dir=args.spool_dir,
                          run_commands=args.run_commands, dry_run=args.dry_run)
    result = runner.execute(opts)
    rep = result.report
    if args.json:
        _print_json(dict(rep, dry_run=True) if args.dry_run else rep)
    else:
        _print_summary(rep, dry_run=args.dry_run)
    if result.spooled and sys.stderr.isatty():     # the journal has each one; a person, one line
        print("contextd: %d report%s not delivered, spooled in %s; `contextd report flush` "
              "sends %s" % (len(result.spooled), "" if len(result.spooled) == 1 else "s",
                            os.path.dirname(result.spooled[0]),
                            "it" if len(result.spooled) == 1 else "them"), file=sys.stderr)
    if result.error is not None:
        raise result.error
    return EXIT_OK


def _print_summary(rep: Dict[str, Any], dry_run: bool = False) -> None:
    p = rep.get("payload") or {}
    # A dry run that ends applied would apply; one that ends otherwise says how it ended.
    head = "dry run: would apply" if dry_run and rep["outcome"] == "applied" else rep["outcome"]
    where = (rep.get("source") or {}).get("location")
    who = " payload %s serial %s from %s" % (p.get("vo"), p.get("serial"), where) if p else ""
    print("contextd: %s%s" % (head, who))
    for action in rep.get("actions", []):
        print("  %-11s %-8s %-8s %s" % (action["status"], action["plugin"], action["kind"],
                                       action["target"]))
    for item in rep.get("overridden", []):
        print("  overridden %s %s: %s" % (item["field"], item["value"], item["reason"]))


# What explain may be told; image and image_version stand for a verified image manifest.


def explain(args: Any) -> int:
    from contextd import explain as explainer
    from contextd import sources

    from contextd.facts import IMAGE, NAMES

    paths.existing_dir(args.root, "--root")
    pol = policy.load(args.policy)
    facts = {}
    known = ("site", "hostname", *NAMES, *IMAGE)     # every fact explain prints
    for item in args.fact:
        name, sep, value = item.partition("=")
        if not sep or name not in known:
            raise UsageError("--fact %r is not NAME=VALUE with a known NAME" % item,
                             "names: %s" % ", ".join(known))
        facts[name] = value
    ctx = sources.fetch(_spec_for(args.bundle))
    now = datetime.datetime.now(datetime.timezone.utc)
    out = explainer.explain(ctx, pol, facts, args.root, now, os.uname().nodename)
    if args.json:
        _print_json(out)
    else:
        _print_explain(out)
    return EXIT_OK if out["verdict"] == "accepted" else EXIT_REJECTED


def _spec_for(path: str) -> str:
    if ":" in path.split("/", 1)[0] and path.split(":", 1)[0] in ("iso", "dir", "file"):
        return path
    if os.path.isdir(path):
        return "dir:" + path
    from contextd import sources

    try:
        if stat.S_ISBLK(os.stat(path).st_mode):       # a context CD-ROM itself
            return "iso:" + path
    except OSError as exc:
        raise SourceError("cannot read %s: %s" % (path, exc.strerror or exc)) from None
    with sources.open_regular(path, "context") as f:     # a FIFO must not hang explain
        f.seek(32769)
        if f.read(5) == b"CD001":
            return "iso:" + path
    return "file:" + path


def _print_explain(out: Dict[str, Any]) -> None:
    sig = out.get("signature", {})
    if not sig.get("ok"):
        print("signature: REJECTED: %s" % sig.get("reason"))
        print("verdict:   REJECTED")
        return
    signers = "; ".join("%s (VO %s)" % (", ".join(ids), vo) for vo, ids in sig["signers"].items())
    print("signature: OK, trusted signers %s" % signers)
    for note in sig.get("notes", []):
        print("           not counted: %s" % note)
    if "payload_error" in out:
        print("payload:   INVALID: %s" % out["payload_error"])
        print("verdict:   REJECTED")
        return
    p = out["payload"]
    print("payload:   VO %s serial %s, valid %s .. %s, sha256 %s"
          % (p["vo"], p["serial"], p["not_before"], p["expires"], p["sha256"]))
    print("facts:     %s" % ", ".join("%s=%s" % kv for kv in sorted(out["facts"].items())))
    print("changes:")
    for row in out["changes"]:
        print("  %-10s %s = %s: %s" % (row["verdict"].upper(), row["field"], row["value"],
                                      row["reason"]))
    if out["violations"]:
        print("violations:")
        for v in out["violations"]:
            print("  - %s" % v)
    for label, key in (("would write", "would_write"), ("would run", "would_run")):
        if out.get(key):
            print("%s:" % label)
            for item in out[key]:
                print("  %s" % item)
    for path, lines in out.get("previews", {}).items():
        print("first lines of %s:" % path)
        for line in lines:
            print("  | %s" % line)
    print("verdict:   %s" % out["verdict"].upper())


def sign(args: Any) -> int:
    from contextd.vo import signing

    if bool(args.key) == bool(args.x509_key):
        raise UsageError("contextd sign needs exactly one of --key (SSH) and --x509-key (X.509)",
                         "see contextd sign --help")
    if args.cert and not args.key:
        raise UsageError("--cert goes with --key (the SSH certificate of that key)")
    if args.x509_key and not args.x509_cert:
        raise UsageError("--x509-key needs --x509-cert, the signer certificate")
    if (args.x509_cert or args.x509_chain) and not args.x509_key:
        raise UsageError("--x509-cert and --x509-chain go with --x509-key")
    source = _read_input(args.payload, "payload")
    existing = None
    if args.output:
        paths.output(args.output, "-o")
    if args.output and os.path.exists(args.output):
        existing = _read_input(args.output, "bundle")
    if args.key:
        cert = _read_input(args.cert, "certificate") if args.cert else None
        data = signing.sign(_read_input(args.key, "key"), source, existing=existing,
                            key_name=args.key, certificate=cert,
                            certificate_name=args.cert or "certificate")
    else:
        certs = [(path, _read_input(path, "certificate"))
                 for path in [args.x509_cert, *args.x509_chain]]
        data = signing.sign_x509(_read_input(args.x509_key, "key"), certs, source,
                                 existing=existing, key_name=args.x509_key)
    refusal, warnings = signing.review(data)
    if refusal is not None and not args.force:
        raise refusal
    if refusal is not None:
        warnings.insert(0, "signed all the same (--force): %s" % refusal.message)
    for warning in warnings:
        print("contextd: warning: %s" % warning, file=sys.stderr)
    if args.output:
        try:
            filesystem.atomic_write(os.path.abspath(args.output), data, 0o644)
        except OSError as exc:
            raise paths.unwritable(args.output, "-o", exc) from None
        print("contextd: signed %s -> %s" % (args.payload, args.output), file=sys.stderr)
    else:
        sys.stdout.write(data.decode("ascii"))
    return EXIT_OK


def _read_input(path: str, what: str, limit: int = 16 * 1024 * 1024) -> bytes:
    try:
        data = filesystem.read_limited(path, limit)
    except OSError as exc:
        raise UsageError("cannot read %s %s: %s" % (what, path, exc.strerror or exc)) from None
    if data is None:
        raise UsageError("%s file %s does not exist" % (what, path))
    return data


def pack(args: Any) -> int:
    from contextd.vo import packing

    data = _read_input(args.bundle, "bundle")
    paths.output(args.output, "-o")
    if args.carrier == "iso":
        packing.pack_iso(data, args.output, args.file, label=args.label)
        print("contextd: wrote context ISO %s" % args.output, file=sys.stderr)
    else:
        size = packing.pack_user_data(data, args.output)
        print("contextd: wrote user-data %s (%d bytes)" % (args.output, size), file=sys.stderr)
    return EXIT_OK


def policy_check(args: Any) -> int:
    pol = policy.load(args.file)
    from contextd import policyview

    doc = policyview.normalised(pol)
    if args.json:
        _print_json(doc)
    else:
        import yaml

        print("# %s: valid (sha256 %s)" % (pol.path, pol.sha256))
        print(yaml.safe_dump(doc, sort_keys=False, default_flow_style=False).rstrip())
    return EXIT_OK


def status(args: Any) -> int:
    if not args.run_dir:
        paths.existing_dir(args.root, "--root")
    run_dir = args.run_dir or filesystem.default_dir(args.root, "/run/contextd")
    paths.dir_or_absent(run_dir, "--run-dir")
    deadline = None if args.timeout is None else time.monotonic() + max(args.timeout, 0.0)
    boot = _this_boot()
    while True:
        rep = report.read(run_dir)
        if rep is not None and rep.get("finished_at") and (
                not args.wait or _from_this_boot(rep, boot)):
            break
        if not args.wait:
            raise SourceError("no finished contextd run recorded in %s" % run_dir,
                              "contextd run has not run yet on this boot")
        off = killswitch.reason(args.root)
        if off:             # no run will come: the unit's conditions keep it from starting
            return _switched_off(off, args.json)
        if deadline is not None and time.monotonic() >= deadline:
            raise ContextdError("timed out after %gs waiting for this boot's contextd run to "
                                "finish (report %s)" % (args.timeout, os.path.join(
                                    run_dir, report.NAME)),
                                "is contextd.service running? see journalctl -u contextd")
        time.sleep(0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic())))
    if args.json:
        _print_json(rep)
    else:
        p = rep.get("payload") or {}
        line = "%s at %s" % (rep.get("outcome"), rep.get("finished_at"))
        if p:
            line += ": VO %s serial %s sha256 %s" % (p.get("vo"), p.get("serial"), p.get("sha256"))
        if rep.get("message"):
            line += " (%s: %s)" % (rep.get("stage"), rep.get("message"))
        print(line)
    return report.exit_code(rep)


def _switched_off(reason: str, as_json: bool) -> int:
    if as_json:
        _print_json({"outcome": "skipped", "stage": "disabled", "message": reason})
    else:
        print("skipped (disabled: %s)" % reason)
    return EXIT_OK


def _this_boot() -> Dict[str, Any]:
    return {"boot_id": report.boot_id(), "btime": _boot_time()}


def _boot_time() -> float:
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0


def _from_this_boot(rep: Dict[str, Any], boot: Dict[str, Any]) -> bool:
    """The kernel's boot id when both sides have one: the wall clock may be stepped (NTP)
    after the run, which moves /proc/stat's btime but not the boot id. Else the clock."""
    recorded = (rep.get("host") or {}).get("boot_id")
    if recorded and boot["boot_id"]:
        return bool(recorded == boot["boot_id"])
    try:
        started = datetime.datetime.strptime(rep["started_at"], "%Y-%m-%dT%H:%M:%S.%fZ")
    except (KeyError, TypeError, ValueError):
        return False
    return started.replace(tzinfo=datetime.timezone.utc).timestamp() >= boot["btime"]


def report_flush(args: Any) -> int:
    """Send the spool; exit 0 when nothing is left in it (delivered or moved aside), else 1."""
    from contextd import delivery

    if not args.spool_dir:
        paths.existing_dir(args.root, "--root")
    spool = args.spool_dir or filesystem.default_dir(args.root, report.SPOOL)
    paths.dir_or_absent(spool, "--spool-dir")
    try:
        result = delivery.flush(spool)
    except OSError as exc:
        raise delivery.DeliveryError("cannot use spool %s: %s"
                                     % (spool, exc.strerror or exc)) from None
    for item in result.refused:
        print("refused, moved aside: %s -> %s: %s" % (
            delivery.shown(item.url), item.spool_file, item.message))
    for item in result.remaining:
        print("still spooled: %s -> %s: %s" % (
            delivery.shown(item.url), item.spool_file, item.message))
    print("contextd: %d delivered, %d refused (moved to %s), %d still spooled" % (
        len(result.delivered), len(result.refused), os.path.join(spool, delivery.FAILED),
        len(result.remaining)))
    return EXIT_REJECTED if result.remaining else EXIT_OK


def image(args: Any) -> int:
    from contextd.image import tool

    return tool.sign_command(args) if args.action == "sign" else tool.show_command(args)

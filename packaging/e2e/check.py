"""check.py SCENARIO DIR: judge one e2e boot from what the guest said and what is on its disk.

DIR holds result.log (the guest's JSON, base64 between marker lines on ttyS1), console.log
(the kernel console, where contextd.service's output also goes) and disk.img (the guest's
root file system after power-off, read with debugfs: evidence that does not depend on the
guest telling the truth about itself). Prints one line per check; exit 1 when any failed.
"""

import base64
import hashlib
import json
import os
import re
import subprocess
import sys

SECRET = "e2e-secret-token-never-in-a-report"
CONDOR_CONF = "/etc/condor/config.d/50-contextd.conf"
TOKEN = "/etc/condor/tokens.d/contextd.token"
CVMFS = "/etc/cvmfs/default.local"
CONDOR_MARK = "/var/lib/fake-condor/started"
CVMFS_LOG = "/var/log/fake-cvmfs_config.log"
WAIT_FOR_SOURCE_MS = 10000
CONFIG_DRIVE_UUID = "83679162-1378-4288-a2d4-70e13ec132aa"     # run-e2e.sh's E2E_UUID
# Issue 18 (local-repo.sh, run-e2e.sh's packages_payload): the package, its templated
# configuration and the marker its service writes when it starts.
GMOND_CONF = "/etc/e2e-gmond/gmond.conf"
GMOND_MARK = "/var/lib/e2e-gmond/started"
GMOND_UNIT = "e2e-gmond.service"
GMOND_TEMPLATE = ("# e2e-gmond.conf, from the payload's template\n"
                  "cluster_name = atlas-e2e-workers\ncluster_owner = E2E-SITE\n"
                  "host_location = %s\n")


class Checks:
    def __init__(self, scenario):
        self.scenario = scenario
        self.failed = 0

    def check(self, ok, what, detail=""):
        print("  %s %s%s" % ("ok  " if ok else "FAIL", what, "" if ok else ": %s" % detail))
        self.failed += 0 if ok else 1


def user_ids(disk, name):
    """(uid, gid) of user `name` in the image's /etc/passwd, or None."""
    found = on_disk(disk, "/etc/passwd")
    for line in (found[2] if found else b"").decode("utf-8", "replace").splitlines():
        fields = line.split(":")
        if len(fields) > 3 and fields[0] == name:
            return int(fields[2]), int(fields[3])
    return None


def dpkg_status(disk, package):
    """The Status line of `package` in the image's dpkg database, or None."""
    found = on_disk(disk, "/var/lib/dpkg/status")
    for stanza in (found[2] if found else b"").decode("utf-8", "replace").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line)
        if fields.get("Package") == package:
            return fields.get("Status")
    return None


def package_checks(c, res, report, disk):
    """packages: e2e-gmond installed by apt-get from the image's local repository, its
    configuration templated (a fact, a var), then its service started; packagefail: e2e-broken
    fails, exit 3, no configuration, e2e-gmond installed but never started."""
    files, ctx, gmond = res["files"], res["units"]["contextd.service"], res["units"][GMOND_UNIT]
    actions = [(a.get("plugin"), a.get("kind"), a.get("target", ""), a.get("status"))
               for a in report.get("actions", [])]
    installs = [a for a in actions if a[0] == "packages" and " install " in a[2]]
    c.check(actions[:1] and actions[0][0] == "packages" and "update" in actions[0][2]
            and "Dir::Etc::SourceList=/etc/apt/sources.list.d/e2e-local.list" in actions[0][2],
            "first action: apt-get update of the allowed repository's list alone", actions[:1])
    c.check(dpkg_status(disk, "e2e-gmond") == "install ok installed",
            "on disk: dpkg has e2e-gmond installed", dpkg_status(disk, "e2e-gmond"))
    if c.scenario == "packages":
        c.check(report.get("outcome") == "applied", "outcome applied", report.get("message"))
        c.check(res["status_wait"]["exit"] == 0, "contextd status --wait exits 0",
                res["status_wait"])
        c.check([(a[0], a[1], a[3]) for a in actions] == [
            ("packages", "command", "ran"), ("packages", "command", "ran"),
            ("files", "file", "created")] and installs and installs[0][2].endswith(" e2e-gmond")
            and actions[2][2] == GMOND_CONF,
            "report actions in order: apt-get update, install e2e-gmond, write the file", actions)
        expected = GMOND_TEMPLATE % report.get("host", {}).get("hostname")
        conf = files[GMOND_CONF]
        c.check(conf.get("exists") and conf["mode"] == "0644" and conf["uid"] == 0
                and conf.get("text") == expected,
                "%s rendered from the template (facts.site, facts.hostname, vars.cluster)"
                % GMOND_CONF, conf)
        d = on_disk(disk, GMOND_CONF)
        c.check(d is not None and d[2].decode("utf-8", "replace") == expected,
                "on disk: the templated file as rendered", d and d[2])
        mark = files[GMOND_MARK].get("text", "")
        c.check(mark.partition("\n")[2] == expected,
                "e2e-gmond started after the file was written (it read the rendered file)", mark)
        exited = int(ctx.get("ExecMainExitTimestampMonotonic") or 0)
        started = int(gmond.get("ActiveEnterTimestampMonotonic") or 0)
        c.check(exited and started >= exited and gmond.get("ActiveState") == "active",
                "e2e-gmond.service started last, after contextd finished",
                "contextd exited at %s, e2e-gmond active at %s (%s)" % (
                    exited, started, gmond.get("ActiveState")))
        c.check(on_disk(disk, GMOND_MARK) is not None, "on disk: e2e-gmond's start recorded")
        return
    c.check(report.get("outcome") == "failed" and report.get("stage") == "apply",
            "outcome failed at the apply stage", (report.get("outcome"), report.get("message")))
    c.check(res["status_wait"]["exit"] == 3, "contextd status --wait exits 3", res["status_wait"])
    c.check((ctx.get("Result"), ctx.get("ExecMainStatus")) == ("exit-code", "3"),
            "contextd.service failed with exit 3", ctx)
    c.check([a[3] for a in installs] == ["ran", "failed"] and installs[1][2].endswith(
        " e2e-broken"), "e2e-gmond installed, then e2e-broken's install failed", installs)
    c.check(not any(a[0] == "files" for a in actions), "no file written", actions)
    c.check(any(t.endswith(" install e2e-gmond") for t in report.get("not_undone", [])),
            "not_undone names the e2e-gmond install (a package is not uninstalled)",
            report.get("not_undone"))
    for path in (GMOND_CONF, GMOND_MARK):
        c.check(not files[path].get("exists"), "nothing at %s" % path, files[path])
        c.check(on_disk(disk, path) is None, "on disk: nothing at %s" % path)
    c.check(gmond.get("ActiveState") != "active" and gmond.get("ConditionResult") != "yes",
            "e2e-gmond.service never started (no configuration)", gmond)


def guest_result(path):
    with open(path, "rb") as f:
        text = f.read().decode("ascii", "replace").replace("\r", "")
    m = re.search(r"E2E-RESULT-BEGIN\n(.*?)E2E-RESULT-END", text, re.S)
    if not m:
        raise SystemExit("  FAIL no E2E-RESULT block in %s: the guest never reported" % path)
    return json.loads(base64.b64decode("".join(m.group(1).split())))


def debugfs(disk, request):
    p = subprocess.run(["debugfs", "-R", request, disk], capture_output=True, timeout=60)
    return p.stdout, p.stderr.decode("utf-8", "replace")


def on_disk(disk, path):
    """(mode, uid, content) of a file in the image, or None when it is not there."""
    out, err = debugfs(disk, "stat %s" % path)
    if "File not found" in err:
        return None
    if not out:
        raise SystemExit("  FAIL debugfs cannot read %s: %s" % (disk, err.strip()))
    text = out.decode("utf-8", "replace")
    mode = re.search(r"Mode:\s+(\d+)", text)
    uid = re.search(r"User:\s+(\d+)", text)
    content, _ = debugfs(disk, "cat %s" % path)
    return (int(mode.group(1), 8) if mode else None, int(uid.group(1)) if uid else None, content)


def main(scenario, directory):
    c = Checks(scenario)
    res = guest_result(os.path.join(directory, "result.log"))
    with open(os.path.join(directory, "console.log"), "rb") as f:
        console = f.read().decode("utf-8", "replace")
    disk = os.path.join(directory, "disk.img")
    if not os.path.isfile(disk):
        raise SystemExit("  FAIL no disk image %s to read back" % disk)
    files = res["files"]
    ctx = res["units"]["contextd.service"]
    condor = res["units"]["condor.service"]
    try:
        report = json.loads(files["/run/contextd/report.json"]["text"])
    except (KeyError, ValueError):
        report = {}
    print("e2e %s: outcome %s%s" % (scenario, report.get("outcome", "(no run, no report)"),
                                    " (%s: %s)" % (report.get("stage"), report.get("message"))
                                    if report.get("message") else ""))
    wait = res["status_wait"]

    # Every scenario: leaked no secret, left contextd.service alone in the generator (this
    # policy does not read ec2), and the report timer's service works.
    everything = json.dumps(res) + console
    c.check(SECRET not in everything, "the HTCondor token appears in no report, log or console")
    c.check(not res["generator_dropin"], "no network-online drop-in (policy has no ec2)")
    c.check("network-online.target" not in ctx.get("Wants", ""),
            "contextd.service does not pull in network-online.target", ctx.get("Wants"))
    c.check(res["units"]["contextd-report.timer"].get("UnitFileState") == "enabled",
            "contextd-report.timer enabled by the preset")
    flush = res["units"]["contextd-report.service"]
    if scenario == "killswitch":
        c.check(res["report_flush"]["exit"] == 0, "systemctl start contextd-report.service ran",
                res["report_flush"])
    else:
        c.check(res["report_flush"]["exit"] == 0 and flush.get("Result") == "success",
                "contextd-report.service (contextd report flush) succeeded",
                (res["report_flush"], flush))
        c.check(ctx.get("ConditionResult") == "yes", "contextd.service ran (conditions met)", ctx)
        c.check("contextd:" in console, "contextd's output reached the console")

    if scenario in ("signed", "configdrive"):
        c.check(report.get("outcome") == "applied", "outcome applied", report.get("message"))
        c.check(wait["exit"] == 0, "contextd status --wait exits 0", wait)
        c.check((ctx.get("Result"), ctx.get("ExecMainStatus")) == ("success", "0"),
                "contextd.service succeeded", ctx)
        if scenario == "configdrive":
            c.check(report.get("source", {}).get("kind") == "config-drive",
                    "source is the config drive, found by its label", report.get("source"))
            c.check(report.get("host", {}).get("instance_id") == CONFIG_DRIVE_UUID,
                    "instance id is the config drive's uuid", report.get("host"))
        else:
            c.check(report.get("source", {}).get("kind") in ("hepix-cdrom", "iso"),
                    "source is the CD-ROM", report.get("source"))
        image = report.get("host", {}).get("image", {})
        c.check(image.get("verified") is True and image.get("signer") == "e2e-image-factory"
                and (image.get("manifest") or {}).get("name") == "e2e-worker"
                and (image.get("manifest") or {}).get("packages", {}).get("db") == "dpkg",
                "host.image: the manifest signed at image build verifies",
                {k: image.get(k) for k in ("verified", "signer", "reason")})
        conf = files[CONDOR_CONF]
        c.check(conf.get("exists") and conf["mode"] == "0644" and conf["uid"] == 0,
                "%s written 0644 root" % CONDOR_CONF, conf)
        c.check("atlas-cm.cern.ch" in conf.get("text", "")
                and "e2e-signed-worker" in conf.get("text", ""),
                "HTCondor config has the payload's central manager and VMType")
        tok = files[TOKEN]
        condor_ids = user_ids(disk, "condor")
        c.check(condor_ids is not None and condor_ids[0] != 0, "the image has a condor user",
                condor_ids)
        c.check(tok.get("exists") and tok["mode"] == "0600"
                and (tok["uid"], tok.get("gid")) == condor_ids,
                "%s written 0600, owned by condor (HTCondor reads it as condor)" % TOKEN,
                {k: tok.get(k) for k in ("exists", "mode", "uid", "gid")})
        c.check(tok.get("sha256") == hashlib.sha256(SECRET.encode()).hexdigest()
                or tok.get("sha256") == hashlib.sha256((SECRET + "\n").encode()).hexdigest(),
                "token file holds the payload's token")
        cv = files[CVMFS]
        c.check(cv.get("exists") and "atlas.cern.ch" in cv.get("text", ""),
                "%s lists the repositories" % CVMFS, cv)
        c.check("cvmfs_config setup" in files[CVMFS_LOG].get("text", ""),
                "cvmfs_config setup ran", files[CVMFS_LOG])
        c.check(files[CONDOR_MARK].get("exists") and condor.get("ActiveState") == "active"
                and condor.get("UnitFileState") == "enabled",
                "condor enabled and started", condor)
        exited = int(ctx.get("ExecMainExitTimestampMonotonic") or 0)
        started = int(condor.get("ActiveEnterTimestampMonotonic") or 0)
        c.check(exited and started >= exited, "condor started only after contextd finished",
                "contextd exited at %s, condor active at %s" % (exited, started))
        d = on_disk(disk, TOKEN)
        c.check(d is not None and d[0] & 0o7777 == 0o600 and condor_ids is not None
                and d[1] == condor_ids[0], "on disk: token 0600 condor's", d and d[:2])
        d = on_disk(disk, os.path.dirname(TOKEN))
        c.check(d is not None and d[0] & 0o7777 == 0o700 and condor_ids is not None
                and d[1] == condor_ids[0], "on disk: tokens.d 0700 condor's", d and d[:2])
        d = on_disk(disk, CONDOR_CONF)
        c.check(d is not None and hashlib.sha256(d[2]).hexdigest() == conf.get("sha256"),
                "on disk: HTCondor config as the guest saw it")
        c.check(on_disk(disk, CONDOR_MARK) is not None, "on disk: condor's start recorded")
    elif scenario == "tampered":
        c.check(report.get("outcome") == "rejected", "outcome rejected", report.get("outcome"))
        c.check(report.get("stage") == "verify", "rejected at the verify stage",
                report.get("stage"))
        c.check(wait["exit"] == 1, "contextd status --wait exits 1", wait)
        c.check((ctx.get("Result"), ctx.get("ExecMainStatus")) == ("exit-code", "1"),
                "contextd.service failed with exit 1", ctx)
        for path in (CONDOR_CONF, TOKEN, CVMFS, CVMFS_LOG, CONDOR_MARK,
                     "/var/lib/contextd/applied.json"):
            c.check(not files[path].get("exists"), "nothing at %s" % path, files[path])
            c.check(on_disk(disk, path) is None, "on disk: nothing at %s" % path)
        state = (condor.get("ActiveState"), condor.get("UnitFileState"))
        c.check(state == ("inactive", "disabled"), "HTCondor never enabled or started", condor)
        c.check("systemctl" not in json.dumps(report.get("actions", [])),
                "no systemctl action attempted", report.get("actions"))
    elif scenario == "nocd":
        c.check(report.get("outcome") == "skipped", "outcome skipped", report.get("outcome"))
        c.check(wait["exit"] == 0, "contextd status --wait exits 0", wait)
        c.check((ctx.get("Result"), ctx.get("ExecMainStatus")) == ("success", "0"),
                "contextd.service succeeded", ctx)
        c.check(int(report.get("duration_ms") or 0) >= WAIT_FOR_SOURCE_MS - 500,
                "waited wait_for_source (10s) for a late CD-ROM",
                "%s ms" % report.get("duration_ms"))
        c.check(bool(ctx.get("StatusText")), "contextd told systemd what it waited for "
                "(sd_notify STATUS=, NotifyAccess=main)", ctx.get("StatusText"))
        for path in (CONDOR_CONF, TOKEN, CVMFS, CONDOR_MARK):
            c.check(not files[path].get("exists"), "nothing at %s" % path, files[path])
        c.check(condor.get("ActiveState") == "inactive", "HTCondor not started", condor)
    elif scenario in ("packages", "packagefail"):
        package_checks(c, res, report, disk)
    elif scenario == "killswitch":
        # contextd=off on the kernel command line, the signed ISO in the drive: nothing runs.
        c.check(ctx.get("ConditionResult") == "no", "contextd.service skipped by its condition",
                ctx)
        c.check(not files["/run/contextd/report.json"].get("exists"), "no report: no run")
        for path in (CONDOR_CONF, TOKEN, CVMFS, CONDOR_MARK):
            c.check(not files[path].get("exists"), "nothing at %s" % path, files[path])
        c.check(condor.get("ActiveState") == "inactive", "HTCondor not started", condor)
        c.check(res["units"]["contextd-report.timer"].get("ActiveState") == "inactive",
                "contextd-report.timer not armed either",
                res["units"]["contextd-report.timer"])
    else:
        raise SystemExit("unknown scenario %s" % scenario)
    if c.failed:
        print("  contextd's journal:\n    " + res.get("journal", "").replace("\n", "\n    "))
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))

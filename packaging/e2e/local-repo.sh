#!/usr/bin/env bash
# The e2e image's local apt repository (issue 18, the packages plugin): two tiny .debs built
# at test time, in a flat repository inside the image, no network.
#
# usage: local-repo.sh TREE WORKDIR
#
# - e2e-gmond: a stand-in for ganglia-gmond. Its unit, e2e-gmond.service, records its start
#   and the configuration it read (/var/lib/e2e-gmond/started), so the host can tell it ran
#   after contextd wrote that configuration. It is ordered after contextd.service and needs
#   its configuration (ConditionPathExists): a package installed by a run that then fails
#   (its files rolled back) never starts. Its postinst starts it as Debian's dh_installsystemd
#   does, but with --no-block: the start waits for contextd.service, which is installing it.
# - e2e-broken: its postinst fails, as a broken package does: apt-get install exits non-zero.
#
# The repository is /srv/e2e-repo (Packages from dpkg-scanpackages); its sources list, the
# one apt reads for the policy's repository id e2e-local, is
# /etc/apt/sources.list.d/e2e-local.list (`deb [trusted=yes] file:/srv/e2e-repo ./`).
set -euo pipefail
tree=${1:?usage: local-repo.sh TREE WORKDIR}
work=${2:?usage: local-repo.sh TREE WORKDIR}
repo=/srv/e2e-repo
rm -rf "$work" && mkdir -p "$work" "$tree$repo"

control() {     # control NAME DESCRIPTION -> a package directory with its DEBIAN/control
    mkdir -p "$work/$1/DEBIAN"
    printf 'Package: %s\nVersion: 1.0\nArchitecture: all\nMaintainer: contextd e2e <e2e@localhost>\nDescription: %s\n' \
        "$1" "$2" >"$work/$1/DEBIAN/control"
}

control e2e-gmond "contextd e2e: a stand-in for ganglia-gmond"
mkdir -p "$work/e2e-gmond/usr/sbin" "$work/e2e-gmond/lib/systemd/system" "$work/e2e-gmond/etc/e2e-gmond"
cat >"$work/e2e-gmond/usr/sbin/e2e-gmond" <<'EOF'
#!/bin/sh
# e2e stand-in for gmond: record when it started and the configuration it read.
set -e
mkdir -p /var/lib/e2e-gmond
{ date -u +%FT%T.%NZ; cat /etc/e2e-gmond/gmond.conf; } >/var/lib/e2e-gmond/started
echo "e2e-gmond: started" >/dev/console
EOF
cat >"$work/e2e-gmond/lib/systemd/system/e2e-gmond.service" <<'EOF'
[Unit]
Description=fake ganglia gmond (contextd e2e package)
After=contextd.service
ConditionPathExists=/etc/e2e-gmond/gmond.conf

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/e2e-gmond

[Install]
WantedBy=multi-user.target
EOF
cat >"$work/e2e-gmond/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable e2e-gmond.service
    systemctl start --no-block e2e-gmond.service
fi
EOF

control e2e-broken "contextd e2e: a package whose installation fails"
cat >"$work/e2e-broken/DEBIAN/postinst" <<'EOF'
#!/bin/sh
echo "e2e-broken: postinst fails on purpose" >&2
exit 1
EOF
chmod 0755 "$work/e2e-gmond/usr/sbin/e2e-gmond" "$work"/*/DEBIAN/postinst

for pkg in e2e-gmond e2e-broken; do
    dpkg-deb --root-owner-group -Zgzip --build "$work/$pkg" "$tree$repo/${pkg}_1.0_all.deb" >/dev/null
done
(cd "$tree$repo" && dpkg-scanpackages --multiversion . /dev/null 2>/dev/null >Packages)
grep -q '^Package: e2e-gmond$' "$tree$repo/Packages" || { echo "local-repo: no Packages index" >&2; exit 1; }
chmod -R a+rX "$tree$repo"                  # apt's _apt user reads file: repositories
echo "deb [trusted=yes] file:$repo ./" >"$tree/etc/apt/sources.list.d/e2e-local.list"

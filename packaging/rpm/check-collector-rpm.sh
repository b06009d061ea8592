#!/usr/bin/env bash
# check-collector-rpm.sh AGENT_RPM COLLECTOR_RPM EL9_PYTHON: what `make rpm-check` proves about
# the contextd-collector subpackage (check-rpm.sh checks the agent's RPM the same way).
#   1. rpmlint: check-rpm.sh lints the spec and both RPMs together (one shared rpmlintrc)
#   2. requirements and bundle (deps_collector.py): every import satisfied by a Requires or a
#      bundled library, no Requires unused, the bundle exactly the lock file and its Provides;
#      the agent's RPM has no collector file and does not require it
#   3. both installed with `rpm --root SCRATCH -i` (scriptlets run: %pre adds the user)
#   4. files, modes, owners, the config file, the unit not enabled
#   5. the installed collector runs on EL9_PYTHON (3.9 with only EL9's libraries): migrate,
#      serve, a signed report stored and read back (collector-smoke.py), on SQLite and on a
#      throwaway PostgreSQL cluster with EL9's psycopg2; and the same run fails with the
#      bundle removed (the check can fail)
#   6. the man page renders; systemd-analyze verify on the unit
#   7. erase: an edited configuration is kept as .rpmsave, the agent stays
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
usage="usage: check-collector-rpm.sh AGENT_RPM COLLECTOR_RPM EL9_PYTHON"
agent=$(readlink -f "${1:?$usage}")
collector=$(readlink -f "${2:?$usage}")
# not readlink -f: a venv's python is a symlink to the interpreter outside the venv
el9py=$(cd "$(dirname "${3:?$usage}")" && pwd)/$(basename "$3")
fail() { echo "rpm-check (collector): FAIL: $*" >&2; exit 1; }
step() { echo "rpm-check (collector): $*"; }
# (Debian's rpm first says to use alien instead: not a problem of the package)
quiet_rpm() { grep -v "use Alien instead\|assuming you know what you are doing" || true; }

sitelib=/usr/lib/python3.9/site-packages
py=/usr/bin/python3          # Debian's, for the checking script (deps_collector.py)
scratch=$(mktemp -d "${TMPDIR:-/var/tmp}/contextd-collector-rpm-check.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
"$el9py" -c 'import sys; assert sys.version_info[:2] == (3, 9), sys.version' ||
    fail "$el9py is not Python 3.9 (EL9's)"

step "requirements, bundle and lock file agree; the agent knows nothing of the collector"
"$py" "$here/deps_collector.py" "$collector" "$agent" "$here/collector-bundle.txt" ||
    fail "requirements, bundle and lock file disagree"

step "install both into a scratch root"
root="$scratch/root"
mkdir -p "$root/bin" "$root/usr/bin" "$root/usr/sbin" "$root/etc" "$root/dev"
mknod -m 0666 "$root/dev/null" c 1 3       # %pre redirects to it (rpm --root runs as root)
cp /bin/busybox "$root/bin/busybox"
for tool in sh "[" test grep; do ln -s busybox "$root/bin/$tool"; done
# shadow-utils' commands as %pre calls them, on the scratch root's passwd and group
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\n' >"$root/etc/group"
printf '#!/bin/sh\ngrep "^$2:" "/etc/$1"\n' >"$root/usr/bin/getent"
printf '#!/bin/sh\nfor name; do :; done\necho "$name:x:990:" >>/etc/group\n' >"$root/usr/sbin/groupadd"
printf '#!/bin/sh\nfor name; do :; done\necho "$name:x:990:990::/var/lib/$name:/sbin/nologin" >>/etc/passwd\n' \
    >"$root/usr/sbin/useradd"
chmod 0755 "$root/usr/bin/getent" "$root/usr/sbin/groupadd" "$root/usr/sbin/useradd"
rpm --root "$root" --initdb
rpm --root "$root" --nodeps -i "$agent" "$collector" 2>&1 | quiet_rpm | tee "$scratch/install.log"
rpm --root "$root" -q contextd contextd-collector >/dev/null || fail "not installed in the scratch root"
if grep -qi "scriptlet failed\|warning\|error\|can't\|not found" "$scratch/install.log"; then
    fail "rpm -i printed warnings or errors"
fi
grep -qx 'contextd-collector:x:990:990::/var/lib/contextd-collector:/sbin/nologin' "$root/etc/passwd" ||
    fail "%pre did not create the contextd-collector user: $(cat "$root/etc/passwd")"
rpm --root "$root" -V --nodeps contextd-collector || fail "rpm -V: installed files differ from the package"

step "files, modes, owners"
# path mode owner:group; every packaged path must be here, and nothing else (but the Python
# files of contextd_collector and the bundle's content, checked below).
expected=$(cat <<EOF
/etc/contextd-collector drwxr-xr-x root:root
/etc/contextd-collector/collector.yaml -rw-r--r-- root:root
/usr/bin/contextd-collector -rwxr-xr-x root:root
/usr/lib/systemd/system/contextd-collector.service -rw-r--r-- root:root
/usr/lib/sysusers.d/contextd-collector.conf -rw-r--r-- root:root
/usr/share/contextd-collector drwxr-xr-x root:root
/usr/share/contextd-collector/bundled drwxr-xr-x root:root
/var/lib/contextd-collector drwxr-x--- contextd-collector:contextd-collector
$sitelib/contextd_collector drwxr-xr-x root:root
$sitelib/contextd_collector/migrations drwxr-xr-x root:root
$sitelib/contextd_collector/migrations/script.py.mako -rw-r--r-- root:root
$sitelib/contextd_collector/migrations/versions drwxr-xr-x root:root
$sitelib/contextd_collector/templates drwxr-xr-x root:root
$sitelib/contextd_collector/templates/fleet.html -rw-r--r-- root:root
EOF
)
rpm -qp --qf '[%{FILENAMES} %{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME}\n]' "$collector" |
    sort >"$scratch/actual"
grep -v -E "^/usr/share/man/|^$sitelib/contextd_collector/(.*\.py[c]?|(.*/)?__pycache__) |^/usr/share/contextd-collector/bundled/." \
    "$scratch/actual" >"$scratch/actual.core" || true
echo "$expected" | sort >"$scratch/expected"
diff -u "$scratch/expected" "$scratch/actual.core" ||
    fail "packaged files differ from the expected list (above: - expected, + packaged)"
grep -Eq '^/usr/share/man/man8/contextd-collector\.8(\.gz)? -rw-r--r-- root:root$' "$scratch/actual" ||
    fail "man page contextd-collector.8 is not packaged"
odd=$(grep -E "^(/usr/share/contextd-collector/bundled/|$sitelib/contextd_collector/)" "$scratch/actual" |
      grep -v -E ' (-rw-r--r--|drwxr-xr-x) root:root$' || true)
[ -z "$odd" ] || fail "collector files not 0644/0755 root: $odd"
native=$(grep -E '\.(so|pyd)(\.[0-9.]+)? ' "$scratch/actual" || true)
[ -z "$native" ] || fail "a compiled extension in a noarch package: $native"
foreign_pyc=$(grep -E '\.pyc ' "$scratch/actual" | grep -v '\.cpython-39\.pyc ' || true)
[ -z "$foreign_pyc" ] || fail "bytecode of another Python in the package: $foreign_pyc"
# ... and EL9's own is there for every bundled module: the service cannot write it.
uncompiled=$(grep -E '^/usr/share/contextd-collector/bundled/.*\.py ' "$scratch/actual" | cut -d' ' -f1 |
    while read -r py; do
        pyc="$(dirname "$py")/__pycache__/$(basename "$py" .py).cpython-39.pyc"
        grep -qF "$pyc " "$scratch/actual" || echo "$py"
    done)
[ -z "$uncompiled" ] || fail "bundled modules without EL9's bytecode (%py_byte_compile): $(echo "$uncompiled" | sed -n '1,5p' | tr '\n' ' ')..."
[ "$(rpm -qp --configfiles "$collector")" = /etc/contextd-collector/collector.yaml ] ||
    fail "the only config file must be /etc/contextd-collector/collector.yaml"
rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags}\n]' "$collector" |
    grep -x '/etc/contextd-collector/collector.yaml cn' >/dev/null ||
    fail "collector.yaml is not %config(noreplace)"
head -n1 "$root/usr/bin/contextd-collector" | grep -qx '#!/usr/bin/python3 -s' ||
    fail "bad shebang in /usr/bin/contextd-collector"
# Installed, never enabled: %post applies the presets, and no preset of ours enables it.
rpm -qp --scripts "$collector" |
    grep 'systemd-update-helper install-system-units contextd-collector.service' >/dev/null ||
    fail "%post does not go through the systemd scriptlets"
if grep -rs 'contextd-collector' "$root/usr/lib/systemd/system-preset/" >/dev/null; then
    fail "a preset names contextd-collector: it must not be enabled by default"
fi

step "the installed collector on EL9's Python and libraries ($el9py)"
"$el9py" -s "$here/collector-smoke.py" "$root" | sed 's/^/  /'
[ "${PIPESTATUS[0]}" = 0 ] || fail "the installed collector does not work on EL9's stack"
"$el9py" -s -c 'import psycopg2; assert psycopg2.__version__.startswith("2.8."), psycopg2.__version__' ||
    fail "$el9py has not EL9's psycopg2 (2.8)"
"$el9py" -s "$here/collector-smoke.py" "$root" postgresql | grep -v '^collector-smoke: bundled' | sed 's/^/  /'
[ "${PIPESTATUS[0]}" = 0 ] || fail "the installed collector does not work on PostgreSQL with EL9's psycopg2"
step "EL9's Python loads the bundle from the packaged bytecode, none compiled at start"
# -v: the import system itself names each .pyc it took a module's code from; every bundled
# module imported must be among them (a stale or foreign .pyc is recompiled, silently).
bundle="$root/usr/share/contextd-collector/bundled"
"$el9py" -s -B -v -c 'import importlib.util, sys; sys.path.insert(0, sys.argv[1]); import sqlalchemy, starlette, alembic, uvicorn, prometheus_client, sqlalchemy.dialects.postgresql; print("\n".join(importlib.util.cache_from_source(m.__file__) for m in list(sys.modules.values()) if (getattr(m, "__file__", None) or "").startswith(sys.argv[1]) and m.__file__.endswith(".py")))' "$bundle" \
    >"$scratch/bytecode.want" 2>"$scratch/bytecode.log" || { cat "$scratch/bytecode.log" >&2; fail "importing the bundle failed"; }
sed -n "s/^# code object from '\(.*\)'\$/\1/p" "$scratch/bytecode.log" | sort -u >"$scratch/bytecode.got"
sort -u "$scratch/bytecode.want" >"$scratch/bytecode.want.sorted"
compiled=$(comm -23 "$scratch/bytecode.want.sorted" "$scratch/bytecode.got")
[ -s "$scratch/bytecode.want.sorted" ] && [ -z "$compiled" ] ||
    fail "bundled modules not loaded from their packaged bytecode: $(echo "$compiled" | sed -n '1,5p' | tr '\n' ' ')"
echo "  $(wc -l <"$scratch/bytecode.want.sorted") bundled modules imported, each from its packaged .cpython-39.pyc"
step "the same run without the bundle must fail"
mv "$root/usr/share/contextd-collector/bundled" "$scratch/bundled.away"
if "$el9py" -s "$here/collector-smoke.py" "$root" >"$scratch/nobundle.log" 2>&1; then
    fail "the collector ran without its bundle: the check above proves nothing"
fi
grep -q "No module named" "$scratch/nobundle.log" || { cat "$scratch/nobundle.log" >&2;
    fail "without the bundle it failed, but not for a missing module"; }
mv "$scratch/bundled.away" "$root/usr/share/contextd-collector/bundled"
echo "  it fails: $(grep -m1 'No module named' "$scratch/nobundle.log")"

step "the man page renders without warnings; systemd-analyze verify"
for page in "$root"/usr/share/man/man8/contextd-collector.8*; do
    warnings=$(MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null) || fail "man -l $page failed"
    [ -z "$warnings" ] || fail "man -l $page: $warnings"
done
# verify loads every unit the service refers to: the host's units stand in for EL9's.
cp -rn /usr/lib/systemd/system/. "$root/usr/lib/systemd/system/"
if ! SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --root="$root" contextd-collector.service \
        >"$scratch/verify.log" 2>&1; then
    cat "$scratch/verify.log" >&2
    fail "systemd-analyze verify contextd-collector.service"
fi
# (postgresql.service is only ordered after, for a database on the same host)
if grep -v "^$" "$scratch/verify.log" | grep -v "postgresql.service" | grep -q .; then
    cat "$scratch/verify.log" >&2
    fail "systemd-analyze verify complained"
fi

step "erase"
echo "# edited by the site" >>"$root/etc/contextd-collector/collector.yaml"
rpm --root "$root" -e --nodeps contextd-collector 2>&1 | quiet_rpm | tee "$scratch/erase.log"
if grep -qi "scriptlet failed\|error" "$scratch/erase.log"; then fail "rpm -e printed errors"; fi
[ -f "$root/etc/contextd-collector/collector.yaml.rpmsave" ] ||
    fail "the edited configuration was not kept as .rpmsave"
[ ! -e "$root/usr/bin/contextd-collector" ] && [ ! -e "$root/usr/share/contextd-collector" ] &&
    [ ! -e "$root$sitelib/contextd_collector" ] || fail "files left behind after rpm -e"
rpm --root "$root" -q contextd >/dev/null || fail "erasing the collector took the agent with it"

step "OK: $(basename "$collector")"

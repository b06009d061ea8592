#!/usr/bin/python3 -s
"""/usr/bin/contextd-collector of the contextd-collector RPM (contextd.spec installs this file).

Puts the libraries the RPM bundles (collector-bundle.txt: Starlette, uvicorn, SQLAlchemy 2,
Alembic, ...) FIRST on sys.path, then runs the collector. First, because EL9 itself has older
packages of some of the same names (python3-sqlalchemy 1.4, python3-typing-extensions 3.7,
python3-click 7.1): a site that installed them must not shadow the versions the collector was
built and tested with. The bundle holds only those pinned libraries, so what it shadows is
only ever an older copy of one of them, and only in this process. The directory is found
relative to this script (../share/contextd-collector/bundled), so an unpacked copy of the RPM
(make rpm-check) runs the same way.

What it must never do: put the bundle on the path of any other program (no .pth file in
site-packages), or import anything before the bundle is on the path.
"""

import os
import sys

BUNDLED = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))),
                       "share", "contextd-collector", "bundled")
sys.path.insert(0, BUNDLED)

from contextd_collector.cli import run  # noqa: E402 - the bundle must be on the path first

if __name__ == "__main__":
    run()

"""Planning: the authorized settings into an ordered list of actions.

Pure apart from `read_file`, which lets a plugin merge into a file it does not own
(puppet.conf). Order: the commands that come first (package installs), every file, then
commands, then service starts, last of all.
"""

from __future__ import annotations

from typing import List

from contextd import plugin
from contextd.actions import Action, RunCommand, WriteFile
from contextd.authorize import Authorization
from contextd.plugin import PlanContext


def plan(auth: Authorization, ctx: PlanContext) -> List[Action]:
    actions: List[Action] = []
    for name, decision in auth.decisions.items():
        actions.extend(plugin.load(name).plan(decision.settings, ctx))
    first = [a for a in actions if isinstance(a, RunCommand) and a.first]
    files = [a for a in actions if isinstance(a, WriteFile)]
    commands = [a for a in actions if isinstance(a, RunCommand) and not a.service
                and not a.first]
    services = [a for a in actions if isinstance(a, RunCommand) and a.service]
    return [*first, *files, *commands, *services]

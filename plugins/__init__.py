"""contextd's built-in plugins (installed as the `contextd_plugins` package).

Each module defines `PLUGIN`, registered in setup.cfg under the `contextd.plugins`
entry-point group. Plugins describe changes; they never touch the system.
"""

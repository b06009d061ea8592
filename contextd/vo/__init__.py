"""The VO side: what a VO or site runs to make what the VM reads (sign, pack, write ISOs).

Nothing here runs at boot, and the boot path must never import this package: signing keys,
pycdlib and armouring for output have no business in a VM's start-up (import cost, and
less code where hostile input arrives). tests/test_boot_imports.py checks it.
"""

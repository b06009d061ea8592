"""contextd: signed, policy-checked contextualization for HEP cloud VMs."""

__version__ = "0.1.0"

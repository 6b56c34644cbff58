"""Mininet topologies for sdnvirt; each module also works with ``mn --custom``."""

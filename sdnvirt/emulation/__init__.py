"""Emulated fabrics: Mininet topologies with the config's VMs as hosts.

Only this package imports Mininet; nothing here imports os_ken.
"""

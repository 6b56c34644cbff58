"""The os-ken shim: the only part of sdnvirt that imports os_ken (DESIGN.md)."""

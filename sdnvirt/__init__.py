"""sdnvirt: multi-tenant virtual networks on an OpenFlow 1.3 fabric."""

__version__ = "0.1.0"

"""Load-balancer logic with no I/O: backend selection and backend health."""

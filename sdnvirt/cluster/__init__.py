"""Several instances of the controller on one etcd: membership with a lease,
switch mastership by claims (``claims``: pure decisions; ``member``: the
agent that keeps the lease, the claims and the leader key, and fences)."""

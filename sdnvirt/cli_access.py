"""``sdnvirt token`` and ``sdnvirt audit``: the operator's commands for access to the API.

They run with the admin token (``--config`` or ``--token-file``); a tenant's
token is shown once, on stdout alone, so that it can go straight to a file.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from urllib.parse import quote, urlencode


def _when(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def cmd_token(args) -> int:
    from .cli import _api, _show
    api = _api(args)
    if args.action == "create":
        made = api.post("/tokens", {"tenant": args.tenant, "description": args.description})
        print(json.dumps(made, indent=1) if args.json else made["token"])
        print(f"sdnvirt token: token {made['id']} of tenant {made['tenant']}: shown this once, keep it "
              "(clients take it with --token-file)", file=sys.stderr)
        return 0
    if args.action == "revoke":
        api.delete(f"/tokens/{quote(args.id, safe='')}")
        print(f"token {args.id} revoked")
        return 0
    tokens = api.get("/tokens")
    return _show(args, tokens, [[t["id"], t["tenant"], _when(t["created"]), t["description"] or None]
                                for t in tokens], ["ID", "TENANT", "CREATED (UTC)", "DESCRIPTION"])


def cmd_audit(args) -> int:
    from .cli import _api, _show
    query = {"limit": args.limit, **({"after": args.after} if args.after is not None else {})}
    records = _api(args).get(f"/audit?{urlencode(query)}")
    return _show(args, records, [[r["id"], _when(r["time"]), r["token"], r["tenant"], r["method"], r["path"],
                                  r["status"]] for r in records],
                 ["ID", "TIME (UTC)", "TOKEN", "TENANT", "METHOD", "PATH", "STATUS"])


def add_parsers(sub, api_options, client_command) -> None:
    p = sub.add_parser("token", help="tenant tokens of the API: create, list, revoke (admin)")
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("create", help="a token that reaches one tenant only; printed once")
    a.add_argument("--tenant", required=True)
    a.add_argument("--description", default="", help="whom or what it is for")
    api_options(a)
    a = actions.add_parser("list", help="every tenant token (never their secrets)")
    api_options(a)
    a = actions.add_parser("revoke", help="refuse the token from now on")
    a.add_argument("id", help="the ID `sdnvirt token list` shows")
    api_options(a)
    for a in actions.choices.values():
        a.set_defaults(func=client_command(cmd_token))

    p = sub.add_parser("audit", help="the changes asked of the API: which token, what, when, the answer (admin)")
    p.add_argument("--after", type=int, metavar="ID", help="the records after this one (default: the last ones)")
    p.add_argument("--limit", type=int, default=100, help="at most this many, oldest first (default 100)")
    api_options(p)
    p.set_defaults(func=client_command(cmd_audit))

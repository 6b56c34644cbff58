"""Tenant tokens: the admin makes, lists and revokes them (``sdnvirt token``).

What each token may call is access.py's rule; how a token is kept, credentials.py.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Response, status
from pydantic import BaseModel, ConfigDict, Field

from ..config import Name
from .credentials import issue, listing, revoke
from .deps import ConfigStateDep, StoreDep
from .schemas import Error

router = APIRouter(tags=["access"])


class NewToken(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenant: Name
    description: Annotated[str, Field(max_length=200)] = ""     # whom or what it was made for


class Token(BaseModel):
    id: str
    tenant: str
    description: str
    created: float          # wall-clock seconds


class IssuedToken(Token):
    token: str              # ID.SECRET: shown this once, kept nowhere


TokenId = Annotated[str, Path(pattern=r"^[0-9a-f]{12}$", description="the id `sdnvirt token list` shows")]


@router.post("/tokens", response_model=IssuedToken, status_code=status.HTTP_201_CREATED, responses={
    status.HTTP_422_UNPROCESSABLE_CONTENT: {"model": Error, "description": "no such tenant"}})
def create_token(body: NewToken, state: ConfigStateDep):
    """A token for one tenant. Its secret is in this answer only: the store keeps a hash of it."""
    if body.tenant not in state.config.tenants:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            [{"loc": "tenant", "msg": f"no tenant {body.tenant}"}])
    record, token = issue(state.store, body.tenant, body.description)
    return IssuedToken(**record, token=token)


@router.get("/tokens", response_model=list[Token])
def list_tokens(store: StoreDep):
    """Every tenant token, oldest first (never their secrets)."""
    return listing(store)


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT, responses={
    status.HTTP_404_NOT_FOUND: {"model": Error, "description": "no such token"}})
def revoke_token(token_id: TokenId, store: StoreDep):
    """The token is refused from the next call on, by every controller sharing the store."""
    if not revoke(store, token_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no token {token_id}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)

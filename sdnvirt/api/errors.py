"""Every refusal is a 4xx with a JSON body that names the key at fault."""

from __future__ import annotations

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ..config import ConfigError


def config_problems(err: ConfigError) -> HTTPException:
    """The effective config would be invalid: 422 with every problem, as the config file reports them."""
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                         [{"loc": loc or "(top level)", "msg": msg} for loc, msg in err.problems])


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse(status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, content={"detail": [
        {"loc": ".".join(str(part) for part in e["loc"]), "msg": e["msg"]} for e in exc.errors()]})


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _invalid_request)

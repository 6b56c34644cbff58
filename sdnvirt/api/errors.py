"""Every refusal is a 4xx with a JSON body that names the key at fault."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from ..config import Config, ConfigError
from ..events import Handler
from ..overlay import Changes
from ..state import ConfigState
from ..store import Conflict, StoreError, Unconfirmed


def config_problems(err: ConfigError) -> HTTPException:
    """The effective config would be invalid: 422 with every problem, as the config file reports them."""
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                         [{"loc": loc or "(top level)", "msg": msg} for loc, msg in err.problems])


def not_found(what: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no {what}")


def conflict(what: str) -> HTTPException:
    return HTTPException(status.HTTP_409_CONFLICT, f"{what} already exists")


def apply_change(state: ConfigState, edit: Callable[[Changes], None]) -> Config:
    """``state.change(edit)``, with an invalid result answered as a 422, a
    change that kept losing races with other writers as a 409 and a store
    that cannot take it as a 503 (saying so when the store may still apply it)."""
    try:
        return state.change(edit)
    except ConfigError as err:
        raise config_problems(err) from None
    except Conflict as err:
        raise HTTPException(status.HTTP_409_CONFLICT, f"{err}; try again") from None
    except Unconfirmed as err:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the store did not confirm the change: it may "
                            "still take effect once the store is back (reads are answered; read it again before "
                            f"trying again): {err}") from None
    except StoreError as err:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the store cannot take the change (reads are "
                            f"answered; try again once it is back): {err}") from None


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse(status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, content={"detail": [
        {"loc": ".".join(str(part) for part in e["loc"]), "msg": e["msg"]} for e in exc.errors()]})


def install(app: FastAPI, failed: Callable[[Handler], None]) -> None:
    """``failed`` counts every request that raised; the server still logs its traceback."""
    def _crashed(request: Request, exc: Exception) -> JSONResponse:
        failed(Handler.API)
        return JSONResponse(status_code=status.HTTP_500_INTERNAL_SERVER_ERROR, content={"detail": "internal error"})
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(Exception, _crashed)

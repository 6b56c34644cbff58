"""The northbound REST API (/v1): FastAPI routers over the controller.

Nothing here imports os_ken or mininet: the daemon hands the API a
``facade.Controller`` (the os-ken app implements it) and the config state.
"""

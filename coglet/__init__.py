"""coglet: the prediction server inside Cog containers, in C.

`coglet.server.serve(...)` runs the HTTP server, the prediction service and the
orchestrator (all C, GIL released); the worker subprocess runs your predictor.
"""

from coglet._impl import CancelationException, __build__, __version__, _sdk, server

serve = server.serve

__all__ = ["__version__", "__build__", "server", "CancelationException"]

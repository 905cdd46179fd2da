"""Deprecated location of :class:`TFEnvHubAuthorizer`; use ``jupyter_tfenv.server.hub``.

``--ServerApp.authorizer_class=jupyter_tfenv.hub.TFEnvHubAuthorizer`` was the documented
setting before the package was laid out by layer; it keeps working.
"""

from jupyter_tfenv.server.hub import TFEnvHubAuthorizer

__all__ = ["TFEnvHubAuthorizer"]

"""The shipped example (examples/hub) is consistent, without a hub: the catalog is valid,
the broker config restricts environments that exist, and the hub config declares what
the tests and docs/jupyterhub.md rely on."""

from __future__ import annotations

import pytest
from traitlets.config.loader import PyFileConfigLoader

from jupyter_tfenv.catalog.loading import TFEnvCatalog

from .harness import BROKER_SERVICE, EXAMPLE_CONFIG

EXAMPLES = EXAMPLE_CONFIG.parent


def test_example_catalog_is_valid() -> None:
    catalog = TFEnvCatalog(catalog_files=[str(EXAMPLES / "tfenv-catalog.yaml")])
    catalog.refresh()
    assert catalog.problems() == []
    assert {env.id for env in catalog.all()} == {"tf220", "tf219", "tf220-gpu"}


def test_example_broker_config_names_catalog_environments() -> None:
    broker = PyFileConfigLoader("tfenv_broker_config.py", path=str(EXAMPLES)).load_config()
    catalog = TFEnvCatalog(catalog_files=[str(EXAMPLES / "tfenv-catalog.yaml")])
    catalog.refresh()
    ids = {env.id for env in catalog.all()}
    assert set(broker.TFEnvBroker.environment_groups) <= ids


def test_example_hub_config_wires_the_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("JUPYTER_TFENV_CATALOG", "TFENV_BROKER_PORT", "TFENV_CHECKPOINT_ROOT"):
        monkeypatch.delenv(name, raising=False)
    config = PyFileConfigLoader(EXAMPLE_CONFIG.name, path=str(EXAMPLES)).load_config()
    (broker,) = [s for s in config.JupyterHub.services if s["name"] == BROKER_SERVICE]
    assert broker["url"] == "http://127.0.0.1:8765"
    assert broker["command"][1:3] == ["-m", "jupyter_tfenv.broker"]
    env = config.Spawner.environment
    assert env["JUPYTER_TFENV_BROKER_URL"] == broker["url"]
    assert env["JUPYTER_TFENV_CATALOG"] == broker["environment"]["JUPYTER_TFENV_CATALOG"]
    assert f"access:services!service={BROKER_SERVICE}" in config.Spawner.server_token_scopes
    assert "--ServerApp.authorizer_class=jupyter_tfenv.server.hub.TFEnvHubAuthorizer" in (
        config.Spawner.args
    )
    declared = set(config.JupyterHub.custom_scopes)
    assert declared == {"custom:tfenv:read", "custom:tfenv:write", "custom:tfenv:execute"}
    assert declared <= set(config.Spawner.oauth_client_allowed_scopes)
    (user_role,) = [r for r in config.JupyterHub.load_roles if r["name"] == "user"]
    assert f"access:services!service={BROKER_SERVICE}" in user_role["scopes"]

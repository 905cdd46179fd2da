"""The warm pool on Kubernetes with the home claim (issue 22 items 1 and 4), tier 3.

With ``kubernetes_mount_home`` a pool pod is started for the server's root folder: it
mounts that folder of the user's home claim at the server's path and runs there. A take
moves the kernel into the notebook's folder (the same path as on the server): it reads
the file the server saved beside the notebook, and the server sees the file it writes.
The scripted API, its Docker node, the claim and the "server" pod are those of
tests/broker/test_k8s_home_broker.py; the pool helpers those of test_k8s_pool.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from tests.broker.test_k8s_home_broker import CLAIM, cluster, jp_root_dir, jp_server_config
from tests.broker.test_k8s_pool import full_pool, stop_server_pool
from tests.conftest import CATALOG, run_code, start_kernel

pytestmark = [
    pytest.mark.docker,
    pytest.mark.scripted_api,
    pytest.mark.skipif(os.geteuid() != 0, reason="the scripted node chowns the pod's folders"),
]

__all__ = ["cluster", "jp_root_dir", "jp_server_config"]  # fixtures


@pytest.fixture
def catalog_path(tmp_path: Path) -> Path:
    """The server's catalog: 'py' (the broker's one environment) with a pool of one."""
    envs = [dict(e, pool_size=1) if e["id"] == "py" else e for e in CATALOG]
    path = tmp_path / "server-catalog.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "environments": envs}))
    return path


async def test_a_take_moves_the_pool_pod_into_the_notebooks_folder(jp_fetch, jp_serverapp, cluster):
    home = cluster.home
    (home / "work" / "data.csv").write_text("a,b\n1,2\n")
    (ready,) = await full_pool(jp_serverapp, "py", 1)
    [pod] = cluster.kernel_pods()
    (box,) = pod["spec"]["containers"]
    assert box["workingDir"] == str(home), "the pool pod does not run in the server's root"
    volumes = pod["spec"]["volumes"]
    claims = [(v.get("persistentVolumeClaim") or {}).get("claimName") for v in volumes]
    assert CLAIM in claims, f"the pool pod does not mount the home claim: {claims}"
    assert ready.workdir == str(home)

    manager = jp_serverapp.kernel_manager
    kernel_id = await start_kernel(jp_fetch, "tfenv-py", "work/nb.ipynb")
    try:
        assert manager.get_kernel(kernel_id).provisioner.container_id == ready.container_id
        out = await run_code(
            jp_serverapp,
            kernel_id,
            "import os\nprint(os.getcwd())\nprint(open('data.csv').read().split()[1])\n"
            "open('result.txt', 'w').write('from the pool pod')\n",
        )
        assert out.split() == [str(home / "work"), "1,2"], out
        assert (home / "work" / "result.txt").read_text() == "from the pool pod"
    finally:
        await manager.shutdown_kernel(kernel_id, now=True)
        await stop_server_pool(jp_serverapp)
    assert cluster.kernel_pods() == []

"""``/tfenv/kernels``: what a running tfenv kernel really runs on, live."""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from jupyter_tfenv.server.handlers.base import TFEnvHandler


class KernelsHandler(TFEnvHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.write_json({"kernels": self.tfenv.tfenv_kernels(self.kernel_manager)})


class KernelHandler(TFEnvHandler):
    @web.authenticated
    @authorized
    async def get(self, kernel_id: str) -> None:
        self.write_json(await self.tfenv.kernel_status(self.kernel_manager, kernel_id))


class GpusHandler(TFEnvHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.write_json(await self.tfenv.gpu_overview())


routes = [
    (r"/tfenv/kernels", KernelsHandler),
    (r"/tfenv/kernels/(?P<kernel_id>[^/]+)", KernelHandler),
    (r"/tfenv/gpus", GpusHandler),
]

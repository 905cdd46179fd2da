"""The environment catalog: what a team declares once, validated, with problems reported.

The modules, by concern:

* :mod:`~jupyter_tfenv.catalog.model`: ``Environment``, ``Mount``, ``CatalogProblem`` and the
  small parsers their fields use (``parse_size``, ``infer_tensorflow_version``).
* :mod:`~jupyter_tfenv.catalog.validation`: one raw entry → an ``Environment``
  (``environment_from_dict``): the JSON Schema and the safety rules for mounts, ``env`` and
  networks.
* :mod:`~jupyter_tfenv.catalog.loading`: ``TFEnvCatalog``, which merges config and catalog
  files, reports problems and re-reads files when they change.
* :mod:`~jupyter_tfenv.catalog.images`: image references and the pinning policies.
* :mod:`~jupyter_tfenv.catalog.lock`: the lock file (``jupyter tfenv lock``) and its checks.
"""

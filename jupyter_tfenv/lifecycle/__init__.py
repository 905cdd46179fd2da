"""What happens to kernels over time, whatever backend runs them.

- ``keep``: kernels that outlive the server (``keep_kernels_on_stop``): detached at stop.
- ``adoption``: the *kept* markers in a kernel's runtime folder, and adopting kept kernels at
  the next start.
- ``pool``: warm pools, kernels started ahead per environment (catalog ``pool_size``).
- ``culling``: idle kernels culled per environment (``idle_timeout``), GPU ones first.

Each asks its backend ``supports(...)`` and says clearly where a backend lacks a feature.
"""

"""TensorBoard for the user's log folders, in the environments' own images
(docs/tensorboard.md): the container (``container.py``), the in-image bridge
(``bridge.py``), the proxy over its Unix socket (``proxy.py``) and the lifecycle
(``manager.py``)."""

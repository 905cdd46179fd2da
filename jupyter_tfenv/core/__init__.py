"""What every layer shares and no layer owns: container labels, in-image paths, the caller.

Nothing here imports from the rest of the package, so the catalog, the checkpoint storage,
the backends, the broker and the server can all use these names without pointing upward.
"""

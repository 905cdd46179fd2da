"""Kernels as Kubernetes pods (issue 11), first tier: the objects, as plain dicts.

:mod:`.manifests` builds the Pod, Secret, PersistentVolumeClaim and NetworkPolicy of one
kernel start; :mod:`.pss` checks a pod against the restricted Pod Security Standard. No
module here talks to a cluster: there is no Kubernetes backend yet (docs/kubernetes.md).
"""

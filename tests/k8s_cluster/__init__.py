"""Kubernetes kernels (issue 11) against a real cluster: skipped unless $KUBECONFIG is set."""

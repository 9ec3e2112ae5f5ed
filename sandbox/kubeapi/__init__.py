"""The sandbox's Kubernetes API server: object store, HTTP layer, apply and patch semantics."""

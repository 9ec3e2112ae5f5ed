"""pyinfra operations for Kubernetes: apply with server-side dry-run diffs, wait, delete.

Modules, one job each (after Ansible kubernetes.core's module_utils): `client` (connection,
retries), `kinds` (addressing), `changes` (plan and diff), `waiter` (readiness as data),
`k8s` (the pyinfra operations), `connection` (which connection a host uses).
"""

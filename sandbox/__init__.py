"""A simulated EKS account on loopback: Kubernetes API, AWS (moto) and the Hugging Face Hub.

The playbook talks to these servers exactly as it talks to the real ones; nothing in it knows
that it is in the sandbox.
"""

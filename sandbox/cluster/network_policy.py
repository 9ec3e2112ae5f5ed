"""NetworkPolicy as a CNI enforces it, for the connections the sandbox itself makes to pods (its
ALB's requests and health checks); the pods' own traffic stays on loopback, unchecked.

After the networking.k8s.io/v1 NetworkPolicySpec reference: a pod that no policy with the
Ingress type selects takes every connection; a selected pod takes one only if some selecting
policy has an ingress rule whose `from` (none: any source) admits the source address (an ipBlock
containing it and none of its `except`; pod and namespace selectors name pods, never an ALB) and
whose `ports` (none: any port) include the destination port (number, named container port, or
the range to endPort).
"""

from __future__ import annotations

import ipaddress

from sandbox.kubeapi.store import selector_matches


def _ip_block_admits(block: dict, address: ipaddress._BaseAddress) -> bool:
    def within(cidr: str) -> bool:
        net = ipaddress.ip_network(cidr, strict=False)
        return net.version == address.version and address in net
    return within(block["cidr"]) and not any(within(c) for c in block.get("except") or [])


def _port_admits(entry: dict, port: int, named: dict[str, int]) -> bool:
    if (entry.get("protocol") or "TCP") != "TCP":
        return False
    wanted = entry.get("port")
    if wanted is None:
        return True
    if isinstance(wanted, str):
        return named.get(wanted) == port
    return wanted <= port <= (entry.get("endPort") or wanted)


def admits(policies: list[dict], pod: dict, source: str, port: int) -> bool:
    """Whether a TCP connection from `source` to `port` of `pod` gets through the policies of its namespace."""
    labels = pod["metadata"].get("labels") or {}
    namespace = pod["metadata"].get("namespace")
    selecting = [p for p in policies if p["metadata"].get("namespace") == namespace
                 and "Ingress" in ((p.get("spec") or {}).get("policyTypes") or ["Ingress"])
                 and selector_matches((p.get("spec") or {}).get("podSelector"), labels)]
    if not selecting:
        return True
    address = ipaddress.ip_address(source)
    named = {c["name"]: c["containerPort"] for container in (pod.get("spec") or {}).get("containers") or []
             for c in container.get("ports") or [] if c.get("name")}
    for policy in selecting:
        for rule in policy["spec"].get("ingress") or []:
            peers = rule.get("from") or []
            if peers and not any(p.get("ipBlock") and _ip_block_admits(p["ipBlock"], address) for p in peers):
                continue
            ports = rule.get("ports") or []
            if not ports or any(_port_admits(entry, port, named) for entry in ports):
                return True
    return False

"""The playbook's own overhead: what a run on a converged cluster asks of the API server.

Counted from the sandbox API server's audit log (every request it saw, the verify step's
service-proxy calls included), per object the deploy manages. Timings are the bench's job
(bench/deploy_bench.py prints them); these keep the request budget from creeping back.
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.deploy_helpers import assert_ok, converged, deploy, managed_objects, output, run_pyinfra, writes  # noqa: F401

pytestmark = pytest.mark.xdist_group("overhead-converged")

REQUESTS_PER_OBJECT = 2  # issue 13


def _budget_message(records: list[dict], objects: int) -> str:
    paths = Counter(f"{r['verb']} {r['path']}" for r in records)
    return (f"{len(records)} API requests for {objects} managed objects (budget {REQUESTS_PER_OBJECT} each):\n  "
            + "\n  ".join(f"{n} x {what}" if n > 1 else what for what, n in paths.items()))


def test_a_no_op_rerun_asks_the_api_server_at_most_twice_per_managed_object_and_writes_nothing(converged):
    objects = len(managed_objects(converged.control.audit()))
    assert objects >= 20, "the first deploy applied fewer objects than the deploy manages"
    mark = converged.control.audit_mark()
    result = deploy(converged)
    assert_ok(result)
    records = converged.control.audit_since(mark)
    assert len(records) <= REQUESTS_PER_OBJECT * objects, _budget_message(records, objects)
    assert writes(records) == []
    # Verify still proved the path (health and round trips, through the API server and the ALB);
    # only the minutes-long synthesis is left to the runs that change something.
    text = output(result)
    assert "round trip tts-1/Vivian" in text and "through the ALB: round trip tts-1-en/Ryan" in text
    assert "long synthesis skipped, this run changed nothing" in text


def test_a_dry_run_on_a_converged_cluster_asks_the_api_server_at_most_twice_per_managed_object(converged):
    objects = len(managed_objects(converged.control.audit()))
    mark = converged.control.audit_mark()
    result = run_pyinfra(converged, "deploy.py", "--dry")
    assert_ok(result)
    records = converged.control.audit_since(mark)
    assert len(records) <= REQUESTS_PER_OBJECT * objects, _budget_message(records, objects)
    assert writes(records) == [] and not any(r.get("dry_run") for r in records)

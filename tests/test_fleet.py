"""Several clusters in one run: inventories/sandbox_fleet.py lists two sandboxes as `@cluster/<name>` hosts."""

import os
import subprocess
import sys

from tests.deploy_helpers import ROOT, output, run_pyinfra, writes


def _fleet(**members) -> dict:
    return {"QWEN3_SANDBOX_FLEET": os.pathsep.join(f"{name}={sb.root}" for name, sb in members.items())}


def _lines_of(text: str, host: str) -> list[str]:
    return [line for line in text.splitlines() if f"[{host}]" in line]


def test_a_fleet_run_converges_the_good_cluster_and_stops_only_the_one_missing_a_prerequisite(make_sandbox):
    staging = make_sandbox()
    production = make_sandbox(alb_controller=False)
    marks = {"staging": staging.control.audit_mark(), "production": production.control.audit_mark()}
    result = run_pyinfra(staging, "deploy.py", "-y", inventory="inventories/sandbox_fleet.py",
                         env=_fleet(staging=staging, production=production))
    text = output(result)
    assert result.returncode != 0, text[-6000:]
    # The broken cluster names its missing prerequisite, on its own lines, and wrote nothing.
    broken = "\n".join(_lines_of(text, "@cluster/production"))
    assert "IngressClass 'alb'" in broken, text[-6000:]
    assert writes(production.control.audit_since(marks["production"])) == []
    # The other converged all the way to verify, under its own name.
    good = "\n".join(_lines_of(text, "@cluster/staging"))
    assert "round trip" in good and "TTS URL: http://" in good, text[-6000:]
    assert "IngressClass 'alb'" not in good
    assert writes(staging.control.audit_since(marks["staging"]))
    assert staging.state["alb_listeners"] and not production.state.get("alb_listeners")
    # Lines written while the deploy is prepared say whose they are too (both hosts print them).
    found = [line for line in text.splitlines() if "device plugin:" in line or " cluster https://" in line]
    assert len(found) == 4 and all("[@cluster/" in line for line in found), found


def test_limit_deploys_only_the_clusters_it_names(make_sandbox):
    staging, production = make_sandbox(), make_sandbox()
    mark = production.control.audit_mark()
    result = run_pyinfra(staging, "deploy.py", "-y", "--limit", "@cluster/staging",
                         inventory="inventories/sandbox_fleet.py", env=_fleet(staging=staging, production=production))
    assert result.returncode == 0, output(result)[-6000:]
    assert "[@cluster/staging]" in output(result) and "[@cluster/production]" not in output(result)
    assert production.control.audit_since(mark) == []


def test_a_fleet_entry_without_a_name_is_rejected_naming_the_variable_and_the_form(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "QWEN3_"))}
    env["QWEN3_SANDBOX_FLEET"] = str(tmp_path)
    result = subprocess.run([sys.executable, "-m", "pyinfra", "-y", "inventories/sandbox_fleet.py", "deploy.py"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert f"QWEN3_SANDBOX_FLEET entry {str(tmp_path)!r}: write it as name=/path/to/sandbox" in output(result)

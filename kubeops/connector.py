"""`@cluster/<name>`: one pyinfra host per Kubernetes cluster, run on the operator's machine.

pyinfra allows a single `@local` host (connectors/local.py make_names_data), and a plain name
means ssh. A fleet inventory lists one host per cluster, `@cluster/staging`, `@cluster/production`:
each runs locally like `@local` (the playbook talks to the cluster's API, not to a shell), each has
its own host data, and pyinfra runs them in parallel, prefixes their output with the name and
honours `--limit @cluster/staging`.

pyinfra finds connectors only through the `pyinfra.connectors` entry-point group
(pyinfra/api/connectors.py get_all_connectors). The entry point lives in
qwen3_speech_connectors.dist-info at the project root: importlib.metadata reads it from any
sys.path entry, and every inventory puts the project root there, so it needs no `pip install`
of this project (the README's install command and any existing venv keep working as they are).
"""

from pyinfra.api.exceptions import InventoryError
from pyinfra.connectors.local import LocalConnector


class ClusterConnector(LocalConnector):
    """
    The ``@cluster/<name>`` connector: a local host named by the cluster it deploys to.

    + name: the cluster's environment (staging, production, eu-west-1, ...)

    .. code:: python

        fleet = [("@cluster/staging", {"eks_cluster_name": "speech-staging", ...}),
                 ("@cluster/production", {"eks_cluster_name": "speech-prod", ...})]
    """

    @staticmethod
    def make_names_data(name=None):
        if not name:
            raise InventoryError("@cluster needs the cluster's name after a slash, e.g. @cluster/staging")
        yield f"@cluster/{name}", {}, ["@cluster"]

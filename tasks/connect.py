"""Before step 0: check the inventory, then reach the cluster (kubeconfig or EKS by name).

Runs while the deploy is prepared; any problem stops the run before the first write.
"""

from __future__ import annotations

from pyinfra import host, logger
from pyinfra.api import deploy

from kubeops import client as kube_client
from kubeops import connection, interrupt
from qwen_speech.settings import SettingsError, settings_warnings, validate

from .context import DeployBlocked, DeployContext, host_tag, set_context
from .lock import DeployLock, run_identity


def host_data() -> dict:
    return dict(host.data.dict())


@deploy("Connect to the cluster")
def connect():
    try:
        settings = validate(host_data())
    except SettingsError as err:
        raise DeployBlocked(f"{host.name}: {err}") from None
    for warning in settings_warnings(settings):
        logger.warning(f"    {host_tag()}inventory: {warning}")
    ctx = open_context(settings)
    name = host.name  # bound now: retries also happen outside this host's context (the lock's renewal thread)
    ctx.kube.on_retry = lambda line: logger.warning(f"    [{name}] {line}")
    connection.use(host, ctx.kube)
    set_context(host, ctx)
    _guard_the_run(ctx)


def _guard_the_run(ctx) -> None:
    """One writer per cluster (tasks/lock.py), taken by the first write; Ctrl-C ends the run at once."""
    import atexit
    import shlex
    import sys

    s = ctx.settings
    name = host.name  # bound now: the lock speaks from its renewal thread too, where `host` is no host
    lock = DeployLock(ctx.kube, run_identity(s.environment), lease_seconds=s.deploy_lock_seconds,
                      wait_seconds=s.deploy_lock_wait_seconds, poll=max(s.poll_seconds, 1.0),
                      say=lambda line: logger.info(f"    [{name}] {line}"))
    connection.guard_writes(host, lock.hold)
    interrupt.on_interrupt(lock.release)
    atexit.register(lock.release)
    interrupt.install(rerun_hint="pyinfra " + shlex.join(sys.argv[1:]))


def open_context(settings) -> DeployContext:
    """Reach the cluster the inventory names: through EKS (cluster name) or a kubeconfig."""
    aws_session = None
    if settings.aws_region:
        aws_session = aws_session_for(settings)
    if settings.uses_eks:
        kube = _eks_connection(settings, aws_session)
    else:
        try:
            kube = kube_client.from_kubeconfig(settings.kubeconfig, settings.kube_context, retry_seconds=settings.api_retry_seconds)
        except Exception as err:  # kubernetes.config raises several unrelated types
            context = f" (context {settings.kube_context!r})" if settings.kube_context else ""
            raise DeployBlocked(f"kubeconfig {settings.kubeconfig!r}{context} could not be loaded: {err}") from None
    kube.progress_interval = settings.progress_interval_seconds
    kube.on_retry = lambda line: logger.warning(f"    {line}")
    return DeployContext(settings=settings, kube=kube, aws=aws_session)


def aws_session_for(settings):
    from qwen_speech import aws

    try:
        return aws.aws_session(settings.aws_region, profile=settings.aws_profile, role_arn=settings.aws_role_arn,
                               endpoint_url=settings.aws_endpoint_url)
    except aws.AwsProblem as err:
        raise DeployBlocked(f"AWS: {err}") from None


def _eks_connection(settings, session):
    from qwen_speech import aws

    try:
        configuration = aws.kube_configuration_for_eks(session, settings.eks_cluster_name,
                                                       refresh_after_seconds=settings.eks_token_refresh_seconds)
    except aws.AwsProblem as err:
        raise DeployBlocked(f"EKS cluster {settings.eks_cluster_name!r} in {settings.aws_region}: {err}") from None
    return kube_client.from_configuration(
        configuration, f"EKS cluster {settings.eks_cluster_name} ({settings.aws_region})", retry_seconds=settings.api_retry_seconds)


"""The EFS CSI provisioner stand-in: PVCs of an `efs.csi.aws.com` StorageClass, and where data lives.

A claim binds (a PV with an access-point volume handle, claimRef, the class's reclaim policy) only
when the CSIDriver object `efs.csi.aws.com` exists and the class's fileSystemId names a file system
of the sandbox's AWS account. Each PV's data is a directory under ROOT/efs/<fs-id>/, laid out as
the driver lays out access point roots: basePath / subPathPattern (default `${.PV.name}`), plus a
unique suffix unless ensureUniqueDirectory is "false". So with a fixed pattern and no suffix a
recreated claim finds the same data. Data is never deleted (the driver keeps access point roots
by default): reclaim Delete removes the PV only, Retain leaves it Released.

Each dynamically provisioned PV gets its own access point (created through boto3 in the sandbox's
AWS when there is one) whose PosixUser is the class's `uid`/`gid`, or else the next free gid of
`gidRangeStart`..`gidRangeEnd` with uid = gid, as the driver does. Its root directory is created
with `directoryPerms` and owned by that user; the kubelet stand-in runs containers mounting it as
that user, so a recreated claim with a new allocated gid cannot write the old directory (EACCES).
"""

from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from sandbox.kubeapi.store import ApiError

from .common import CSIDRIVERS, PVCS, PVS, STORAGECLASSES, hex_id, is_deleting, pod_is_terminal

if TYPE_CHECKING:
    from .cluster import Cluster

EFS_PROVISIONER = "efs.csi.aws.com"
_FS_ID = re.compile(r"^fs-[0-9a-f]{8,17}$")
# kubernetes-sigs/aws-efs-csi-driver pkg/driver/controller.go: DefaultGidMin/DefaultGidMax.
DEFAULT_GID_MIN, DEFAULT_GID_MAX = 50000, 7000000
_EFS_AP_PATH = re.compile(r"^(\/|(\/(?!\.)+[^$#<>;`|&?{}^*/\n]+){1,4})$")  # at most 100 characters


class EfsProvisioner:
    def __init__(self, cluster: "Cluster"):
        self.cluster = cluster
        self.store = cluster.store
        self.root = cluster.root / "efs"
        self._pv_dirs: dict[str, Path] = {}
        self._fs_cache: dict[str, tuple[bool, float]] = {}  # fs id -> (exists, checked at)
        # access point id -> (fs id, uid, gid): the offline ledger, and a cache of the AWS one
        self._access_points: dict[str, tuple[str, int, int]] = {}

    # -- where data lives ----------------------------------------------------------------------

    def local_dir(self, pv: dict) -> Path:
        """The directory standing in for a PV's EFS access point root (created if missing)."""
        name = pv["metadata"]["name"]
        path = self._pv_dirs.get(name)
        if path is None:
            spec = pv.get("spec") or {}
            handle = ((spec.get("csi") or {}).get("volumeHandle") or "")
            if handle:  # static PV: fs-id, fs-id:/sub/path or fs-id::fsap-id
                fs_id, _, rest = handle.partition(":")
                sub, _, access_point = rest.partition(":")
                path = self._under(self.root / _safe(fs_id), (sub or "") + ("/" + access_point if access_point else ""))
            elif spec.get("hostPath"):
                path = self._under(self.cluster.root / "hostpath", spec["hostPath"].get("path", ""))
            else:
                path = self._under(self.cluster.root / "volumes", name)
            self._pv_dirs[name] = path
        path.mkdir(parents=True, exist_ok=True)
        return path

    def posix_user(self, pv: dict) -> tuple[int, int] | None:
        """(uid, gid) that EFS enforces on every NFS operation through this PV's access point, or None.

        EFS replaces the client's identity with the access point's PosixUser (AWS EFS user guide,
        "Enforcing a user identity using an access point"), so this is who a container really is
        on the volume, whatever its securityContext says."""
        handle = (((pv.get("spec") or {}).get("csi") or {}).get("volumeHandle") or "")
        fs_id, _, rest = handle.partition("::")
        if not rest.startswith("fsap-"):
            return None
        known = self._access_points.get(rest)
        if known is None and self.cluster.aws is not None:
            try:
                (point,) = self.cluster.aws.client("efs").describe_access_points(AccessPointId=rest)["AccessPoints"]
            except Exception:  # deleted, or AWS unreachable: no identity to enforce
                return None
            posix = point.get("PosixUser") or {}
            known = self._access_points[rest] = (fs_id, int(posix["Uid"]), int(posix["Gid"]))
        return (known[1], known[2]) if known else None

    def _posix_for(self, params: dict, fs_id: str) -> tuple[int, int]:
        """The access point's PosixUser as the driver chooses it.

        kubernetes-sigs/aws-efs-csi-driver pkg/driver/gid_allocator.go (FileSystemIdentityManager
        .GetUidAndGid): a `gid` parameter wins, else one is allocated from gidRangeStart..gidRangeEnd
        (default pkg/driver/controller.go DefaultGidMin..DefaultGidMax; start must be below end);
        without `uid` the uid is the gid. GidAllocator.getNextGid pops the lowest gid of a per-file-
        system heap, and only DeleteVolume gives one back, so a retained PV keeps its gid for good:
        here, the lowest gid of the range that no access point of the file system holds."""
        def number(key: str, default: int | None) -> int | None:
            raw = params.get(key)
            if raw in (None, ""):
                return default
            try:
                return int(str(raw))
            except ValueError:
                raise ValueError(f"Failed to parse invalid {key}: {raw}") from None
        uid, gid = number("uid", None), number("gid", None)
        if gid is None:
            low, high = number("gidRangeStart", DEFAULT_GID_MIN), number("gidRangeEnd", DEFAULT_GID_MAX)
            if low >= high:
                raise ValueError("GidMin cannot be greater than GidMax")
            used = {g for f, _, g in self._access_points.values() if f == fs_id}
            if self.cluster.aws is not None:
                points = self.cluster.aws.client("efs").describe_access_points(FileSystemId=fs_id)["AccessPoints"]
                used |= {int((p.get("PosixUser") or {}).get("Gid", -1)) for p in points}
            gid = next((g for g in range(low, high + 1) if g not in used), None)
            if gid is None:
                raise ValueError(f"Failed to locate a free GID for given file system: {fs_id}")
        return (gid if uid is None else uid), gid

    def _create_access_point(self, fs_id: str, sub: str, uid: int, gid: int, perms: str, pv_name: str) -> str:
        aws = self.cluster.aws
        if aws is None:
            point_id = f"fsap-{hex_id(17)}"
        else:
            point_id = aws.client("efs").create_access_point(
                ClientToken=pv_name, FileSystemId=fs_id, PosixUser={"Uid": uid, "Gid": gid},
                RootDirectory={"Path": sub, "CreationInfo": {"OwnerUid": uid, "OwnerGid": gid, "Permissions": perms}},
                Tags=[{"Key": "efs.csi.aws.com/cluster", "Value": "true"}])["AccessPointId"]
        self._access_points[point_id] = (fs_id, uid, gid)
        return point_id

    @staticmethod
    def _make_root(path: Path, uid: int, gid: int, perms: str) -> None:
        """EFS creates a missing access point root with CreationInfo; an existing one is left as it is."""
        try:
            path.mkdir(parents=True)
        except FileExistsError:  # there already (or made meanwhile by a pod's volume setup): left as it is
            return
        path.chmod(int(perms, 8))
        if os.geteuid() == 0:  # only root can give a directory away; unprivileged sandboxes skip identity
            os.chown(path, uid, gid)

    @staticmethod
    def _under(base: Path, relative: str) -> Path:
        parts = [p for p in relative.split("/") if p and p != "."]
        if ".." in parts:
            raise ValueError(f"path {relative!r} climbs out of {base}; remove the '..' parts")
        return base.joinpath(*parts) if parts else base

    # -- reconcile -----------------------------------------------------------------------------

    def sync(self, pods: list[dict]) -> None:
        """Provision pending claims, keep claim/volume phases, release or delete orphaned volumes."""
        pvcs = self.cluster.snapshot(PVCS)
        pvs = {pv["metadata"]["name"]: pv for pv in self.cluster.snapshot(PVS)}
        consumers = {(p["metadata"]["namespace"], v["persistentVolumeClaim"]["claimName"])
                     for p in pods if not pod_is_terminal(p)
                     for v in p["spec"].get("volumes") or [] if v.get("persistentVolumeClaim")}
        claims_by_uid = {c["metadata"]["uid"]: c for c in pvcs}
        for pvc in pvcs:
            if is_deleting(pvc):
                continue
            volume_name = (pvc.get("spec") or {}).get("volumeName")
            if volume_name:
                phase = "Bound" if volume_name in pvs else "Lost"
                if (pvc.get("status") or {}).get("phase") != phase:
                    self._set_pvc_phase(pvc, phase)
                continue
            self._provision(pvc, consumers)
        for pv in pvs.values():
            self._sync_pv(pv, claims_by_uid)

    def _set_pvc_phase(self, pvc: dict, phase: str) -> None:
        def write(obj: dict) -> None:
            obj.setdefault("status", {})["phase"] = phase
        self.store.mutate(PVCS, pvc["metadata"]["namespace"], pvc["metadata"]["name"], write)

    def _event(self, pvc: dict, type_: str, reason: str, message: str) -> None:
        self.cluster.events.record(pvc, type_, reason, message,
                                   component=f"{EFS_PROVISIONER}_efs-csi-controller" if reason.startswith("Provision")
                                   else "persistentvolume-controller")

    def _provision(self, pvc: dict, consumers: set) -> None:
        meta, spec = pvc["metadata"], pvc.get("spec") or {}
        if (pvc.get("status") or {}).get("phase") != "Pending":
            self._set_pvc_phase(pvc, "Pending")
        sc_name = spec.get("storageClassName")
        if sc_name is None:
            default = [sc for sc in self.cluster.snapshot(STORAGECLASSES)
                       if (sc["metadata"].get("annotations") or {}).get("storageclass.kubernetes.io/is-default-class") == "true"]
            sc = default[0] if default else None
        elif sc_name == "":
            return  # static binding only
        else:
            sc = self.store.get(STORAGECLASSES, None, sc_name)
        if sc is None:
            if sc_name:
                self._event(pvc, "Warning", "ProvisioningFailed", f'storageclass.storage.k8s.io "{sc_name}" not found')
            return
        sc_name = sc["metadata"]["name"]
        provisioner = sc.get("provisioner")
        if sc.get("volumeBindingMode") == "WaitForFirstConsumer" and (meta["namespace"], meta["name"]) not in consumers:
            self._event(pvc, "Normal", "WaitForFirstConsumer",
                        "waiting for first consumer to be created before binding")
            return
        waiting = (f"Waiting for a volume to be created either by the external provisioner '{provisioner}' or "
                   "manually by the system administrator. If volume creation is delayed, please verify that the "
                   "provisioner is running and correctly registered.")
        if provisioner != EFS_PROVISIONER or self.store.get(CSIDRIVERS, None, EFS_PROVISIONER) is None:
            self._event(pvc, "Normal", "ExternalProvisioning", waiting)
            return
        params = sc.get("parameters") or {}
        failed = f'failed to provision volume with StorageClass "{sc_name}": '
        mode = params.get("provisioningMode")
        if mode not in ("efs-ap", "efs-dir"):
            reason = ("Missing provisioningMode parameter" if not mode else
                      f"Provisioning mode {mode} is not supported. Only Access point provisioning: 'efs-ap' is supported")
            self._event(pvc, "Warning", "ProvisioningFailed", failed + "rpc error: code = InvalidArgument desc = " + reason)
            return
        fs_id = params.get("fileSystemId") or ""
        if not fs_id:
            self._event(pvc, "Warning", "ProvisioningFailed", failed + "rpc error: code = InvalidArgument desc = "
                        "Missing fileSystemId parameter")
            return
        if mode == "efs-ap" and not params.get("directoryPerms"):
            self._event(pvc, "Warning", "ProvisioningFailed", failed + "rpc error: code = InvalidArgument desc = "
                        "Missing directoryPerms parameter")
            return
        if not self._fs_exists(fs_id):
            self._event(pvc, "Warning", "ProvisioningFailed",
                        failed + "rpc error: code = InvalidArgument desc = File System does not exist: Failed to fetch "
                        f"File System info: Describe File system failed: FileSystemNotFound: File system '{fs_id}' "
                        "does not exist.")
            return
        self._event(pvc, "Normal", "Provisioning",
                    f'External provisioner is provisioning volume for claim "{meta["namespace"]}/{meta["name"]}"')
        pv_name = f"pvc-{meta['uid']}"
        try:
            sub = self._access_point_path(params, pvc, pv_name)
        except ValueError as err:
            self._event(pvc, "Warning", "ProvisioningFailed", failed + f"rpc error: code = InvalidArgument desc = {err}")
            return
        if mode == "efs-ap" and (not _EFS_AP_PATH.match(sub) or len(sub) > 100):
            # EFS's CreateAccessPoint validates the root directory (botocore data/efs/2015-02-01,
            # shape Path); the driver passes the error on. Before, "/../../.." escaped the file system.
            self._event(pvc, "Warning", "ProvisioningFailed",
                        failed + f"rpc error: code = Internal desc = Failed to create Access point in File System "
                        f"{fs_id} : ValidationException: 1 validation error detected: Value '{sub}' at "
                        "'rootDirectory.path' failed to satisfy constraint: Member must satisfy regular expression "
                        f"pattern: {_EFS_AP_PATH.pattern}")
            return
        perms = str(params.get("directoryPerms") or "755")
        try:
            uid, gid = self._posix_for(params, fs_id)
            point_id = self._create_access_point(fs_id, sub, uid, gid, perms, pv_name)
        except Exception as err:  # noqa: BLE001 (a bad parameter or an EFS error both fail the provisioning)
            self._event(pvc, "Warning", "ProvisioningFailed", failed + f"rpc error: code = InvalidArgument desc = {err}")
            return
        storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
        pv = {
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": pv_name,
                         "annotations": {"pv.kubernetes.io/provisioned-by": EFS_PROVISIONER,
                                         "volume.kubernetes.io/provisioner-deletion-secret-name": "",
                                         "volume.kubernetes.io/provisioner-deletion-secret-namespace": ""}},
            "spec": {
                "accessModes": list(spec.get("accessModes") or ["ReadWriteMany"]),
                "capacity": {"storage": storage},
                "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": meta["namespace"],
                             "name": meta["name"], "uid": meta["uid"], "resourceVersion": meta["resourceVersion"]},
                "csi": {"driver": EFS_PROVISIONER, "volumeHandle": f"{fs_id}::{point_id}",
                        "volumeAttributes": {"storage.kubernetes.io/csiProvisionerIdentity":
                                             f"{int(time.time() * 1000)}-8081-{EFS_PROVISIONER}"}},
                "persistentVolumeReclaimPolicy": sc.get("reclaimPolicy") or "Delete",
                "storageClassName": sc_name,
                "volumeMode": spec.get("volumeMode") or "Filesystem",
            },
            "status": {"phase": "Bound"},
        }
        if sc.get("mountOptions"):
            pv["spec"]["mountOptions"] = list(sc["mountOptions"])
        try:
            self.store.create(PVS, pv)
        except ApiError:
            return
        self._pv_dirs[pv_name] = self._under(self.root / _safe(fs_id), sub)
        self._make_root(self._pv_dirs[pv_name], uid, gid, perms)

        def bind(obj: dict) -> None:
            ann = obj["metadata"].setdefault("annotations", {})
            ann.update({"pv.kubernetes.io/bind-completed": "yes", "pv.kubernetes.io/bound-by-controller": "yes",
                        "volume.beta.kubernetes.io/storage-provisioner": EFS_PROVISIONER,
                        "volume.kubernetes.io/storage-provisioner": EFS_PROVISIONER})
            obj["spec"]["volumeName"] = pv_name
            obj["status"] = {"phase": "Bound", "accessModes": list(pv["spec"]["accessModes"]),
                             "capacity": {"storage": storage}}

        self.store.mutate(PVCS, meta["namespace"], meta["name"], bind)
        self._event(pvc, "Normal", "ProvisioningSucceeded", f"Successfully provisioned volume {pv_name}")

    def _access_point_path(self, params: dict, pvc: dict, pv_name: str) -> str:
        pattern = params.get("subPathPattern") or "${.PV.name}"
        for var, value in (("${.PVC.name}", pvc["metadata"]["name"]), ("${.PVC.namespace}", pvc["metadata"]["namespace"]),
                           ("${.PV.name}", pv_name)):
            pattern = pattern.replace(var, value)
        if "${" in pattern:
            raise ValueError(f"subPathPattern {params.get('subPathPattern')!r} uses an unknown variable; use "
                             "${.PVC.name}, ${.PVC.namespace} or ${.PV.name}")
        if str(params.get("ensureUniqueDirectory", "true")).lower() != "false":
            pattern = pattern.rstrip("/") + "-" + str(uuid.uuid4())
        return (params.get("basePath") or "").rstrip("/") + "/" + pattern.lstrip("/")

    def _fs_exists(self, fs_id: str) -> bool:
        cached = self._fs_cache.get(fs_id)
        if cached and time.monotonic() - cached[1] < (1.0 if self.cluster.options.fast else 5.0):
            return cached[0]
        aws = self.cluster.aws
        try:
            exists = aws.efs_exists(fs_id) if aws is not None else bool(_FS_ID.match(fs_id))
        except Exception:  # AWS stand-in unreachable: treat as a failed describe, retried later
            exists = False
        self._fs_cache[fs_id] = (exists, time.monotonic())
        return exists

    def _sync_pv(self, pv: dict, claims_by_uid: dict) -> None:
        spec = pv.get("spec") or {}
        claim_ref = spec.get("claimRef")
        if not claim_ref:
            if (pv.get("status") or {}).get("phase") != "Available":
                self._set_pv_phase(pv, "Available")
            return
        claim = claims_by_uid.get(claim_ref.get("uid"))
        if claim is not None:
            if (pv.get("status") or {}).get("phase") != "Bound":
                self._set_pv_phase(pv, "Bound")
            return
        if not claim_ref.get("uid"):
            return  # pre-bound static PV waiting for its claim
        policy = spec.get("persistentVolumeReclaimPolicy") or "Retain"
        if policy == "Delete":
            try:
                self.store.delete(PVS, None, pv["metadata"]["name"])
            except ApiError:
                pass
            return
        if (pv.get("status") or {}).get("phase") != "Released":
            self._set_pv_phase(pv, "Released")

    def _set_pv_phase(self, pv: dict, phase: str) -> None:
        def write(obj: dict) -> None:
            obj.setdefault("status", {})["phase"] = phase
        self.store.mutate(PVS, None, pv["metadata"]["name"], write)


def _safe(fs_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", fs_id) or "_"


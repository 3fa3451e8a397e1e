"""The node's work after receiving: complete series become jobs, jobs are contoured (the model
loaded once), results are sent with retries, and the spool is cleaned. One scheduler loop
(``tick``) decides; contouring runs on ``workers`` threads. Every decision is a journal
transition committed before the work it starts."""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

from ..errors import InputError
from .config import NodeConfig
from .journal import Journal
from .log import JsonLog
from .spool import Spool

DAY = 86400.0


class Jobs:
    def __init__(self, config: NodeConfig, spool: Spool, journal: Journal, log: JsonLog):
        from ..engine_server import LoadedModels

        self.config, self.spool, self.journal, self.log = config, spool, journal, log
        self.models = LoadedModels()
        package, _ = self.models.get(config.package, config.device)  # a bad package stops the node at start
        self.weights = package.manifest["weights"]["sha256"]
        self.log("model_loaded", model=package.name, weights_sha256=self.weights)
        self.pool = ThreadPoolExecutor(config.workers, thread_name_prefix="segment")
        # one sender apart: a destination that hangs must not hold up receiving and contouring
        self.sender = ThreadPoolExecutor(1, thread_name_prefix="send")
        self.running: set[str] = set()  # series being contoured or sent
        self.last_sweep = 0.0

    def recover(self) -> None:
        """After a crash or stop: half-written instances go (never acknowledged), interrupted
        contouring starts again (its outputs are replaced, its RTSTRUCT UIDs are the same)."""
        removed = self.spool.remove_partial_files()
        if removed:
            self.log("partial_instances_removed", count=removed)
        self.journal.restart_timers()
        for row in self.journal.jobs("segmenting"):
            self.journal.move(row["series_uid"], "received", "contouring was interrupted (node restart): again")
            self.log("job_resumed", series_uid=row["series_uid"], patient_id=row["patient_id"])

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.sender.shutdown(wait=True, cancel_futures=True)

    def tick(self) -> None:
        now = time.time()
        for row in self.journal.jobs("receiving"):
            if row["last_received"] < now - self.config.series_complete_seconds:
                self.journal.move(row["series_uid"], "received", f"complete: {row['instances']} instance(s), none "
                                  f"for {self.config.series_complete_seconds:g} s")
                self.log("series_complete", series_uid=row["series_uid"], patient_id=row["patient_id"],
                         instances=row["instances"])
        for row in self.journal.jobs("received"):
            if row["series_uid"] not in self.running:
                self.running.add(row["series_uid"])
                self.pool.submit(self._contour, dict(row))
        for row in self.journal.jobs("done"):
            if row["next_try"] <= now and row["series_uid"] not in self.running:
                self.running.add(row["series_uid"])
                self.sender.submit(self._send, dict(row))
        if now - self.last_sweep > 60:
            self.sweep(now)

    def _contour(self, row: dict) -> None:
        from ..segment_command import run_segment

        uid = row["series_uid"]
        try:
            if not self.journal.claim(uid):
                return
            self.log("segmenting", series_uid=uid, patient_id=row["patient_id"])
            started = time.perf_counter()
            report = run_segment(self.spool.incoming / row["folder"], self.spool.results / row["folder"],
                                 model=self.config.package, structures=list(self.config.structures) or None,
                                 device=self.config.device, overwrite=True, models=self.models,
                                 uid_key=f"{uid}/{self.weights}", dicom_seg=self.config.destination.dicom_seg)
            results = [report["outputs"][key] for key in ("rtstruct", "dicom_seg") if key in report["outputs"]]
            self.journal.move(uid, "done", f"contoured in {time.perf_counter() - started:.1f} s",
                              result=json.dumps(results), warnings=json.dumps(report["warnings"]))
            self.log("segmented", series_uid=uid, patient_id=row["patient_id"], warnings=report["warnings"],
                     volumes_ml={n: s["volume_ml"] for n, s in report["structures"].items()},
                     seconds=round(time.perf_counter() - started, 2))
        except InputError as error:
            self.journal.move(uid, "refused", str(error), reason=str(error))
            self.log("refused", series_uid=uid, patient_id=row["patient_id"], reason=str(error))
        except Exception as error:  # noqa: BLE001 - one series' bug must not stop the node
            reason = f"internal error: {type(error).__name__}: {error}"
            self.journal.move(uid, "failed", reason, reason=reason)
            self.log("failed", series_uid=uid, patient_id=row["patient_id"], reason=reason)
        finally:
            self.running.discard(uid)

    def _send(self, row: dict) -> None:
        try:
            self._send_once(row)
        finally:
            self.running.discard(row["series_uid"])

    def _send_once(self, row: dict) -> None:
        """C-STORE the RTSTRUCT; only a success status marks the job sent."""
        uid, destination = row["series_uid"], self.config.destination
        status = _c_store(self.config.ae_title, destination, json.loads(row["result"]))
        if status == 0x0000:
            self.journal.move(uid, "sent", f"stored at {destination.ae_title}@{destination.host}:{destination.port}")
            self.log("sent", series_uid=uid, patient_id=row["patient_id"], destination=destination.ae_title,
                     attempts=row["attempts"] + 1)
            if self.config.keep_days == 0:
                self._clean(row)
            return
        attempts = row["attempts"] + 1
        wait = min(destination.retry_max_seconds, destination.retry_first_seconds * 2 ** (attempts - 1))
        self.journal.update(uid, attempts=attempts, next_try=time.time() + wait, reason=f"send failed: {status}")
        self.log("send_failed", series_uid=uid, patient_id=row["patient_id"], reason=status, attempts=attempts,
                 retry_in_seconds=wait)

    def _clean(self, row: dict) -> None:
        self.spool.remove(self.spool.incoming / row["folder"])
        self.spool.remove(self.spool.results / row["folder"])
        self.journal.update(row["series_uid"], cleaned=1)
        self.log("cleaned", series_uid=row["series_uid"])

    def sweep(self, now: float) -> None:
        """Retention: sent series after keep_days, refused and failed ones after max(keep_days, 1)."""
        self.last_sweep = now
        for row in self.journal.jobs("sent", "refused", "failed"):
            days = self.config.keep_days if row["state"] == "sent" else max(self.config.keep_days, 1.0)
            if not row["cleaned"] and row["updated"] < now - days * DAY:
                self._clean(dict(row))


def _c_store(ae_title: str, destination, paths: list[str]) -> int | str:
    """Every file over one association: 0 when each got success, else the first failure."""
    from pydicom import dcmread
    from pynetdicom import AE

    try:
        datasets = [dcmread(path) for path in paths]
    except OSError as error:
        return f"a result cannot be read: {error}"
    ae = AE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for sop_class in sorted({str(d.SOPClassUID) for d in datasets}):
        ae.add_requested_context(sop_class)
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        return "no association (destination down, or it rejected this node)"
    try:
        for dataset in datasets:
            status = assoc.send_c_store(dataset)
            if not status or "Status" not in status:
                return "no response to the C-STORE"
            if status.Status != 0x0000:
                return f"status 0x{status.Status:04X}"
    finally:
        assoc.release()
    return 0

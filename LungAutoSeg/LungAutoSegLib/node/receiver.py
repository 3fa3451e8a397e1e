"""The listening side: C-ECHO, and C-STORE of CT and Enhanced CT from known peers, into the spool.

An unknown calling AE title is rejected at association (pynetdicom's ``require_calling_aet``);
a known title from an address its [[peers]] entry does not allow is aborted as soon as the
association is accepted, before any instance is taken. Other SOP classes are declined in the
presentation-context negotiation (they were never offered as supported), with a log line.
"""
from __future__ import annotations

import ssl

from pydicom.uid import UID

from .config import NodeConfig
from .journal import Journal
from .log import JsonLog
from .spool import Spool, valid_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
VERIFICATION = "1.2.840.10008.1.1"
ACCEPTED = {CT_IMAGE_STORAGE: "CT Image Storage", ENHANCED_CT_STORAGE: "Enhanced CT Image Storage"}
# C-STORE statuses (PS3.4 B.2.3)
SUCCESS, OUT_OF_RESOURCES, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC000


class Receiver:
    def __init__(self, config: NodeConfig, spool: Spool, journal: Journal, log: JsonLog):
        self.config, self.spool, self.journal, self.log = config, spool, journal, log
        self.server = None

    def start(self):
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt

        ae = AE(ae_title=self.config.ae_title)
        ae.add_supported_context(VERIFICATION)
        for sop_class in ACCEPTED:
            ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
        ae.require_calling_aet = [peer.ae_title for peer in self.config.peers]
        ae.maximum_associations = self.config.max_associations
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_ACCEPTED, self._on_accepted),
                    (evt.EVT_REJECTED, self._on_rejected), (evt.EVT_C_ECHO, self._on_echo)]
        self.server = ae.start_server((self.config.host, self.config.port), block=False, evt_handlers=handlers,
                                      ssl_context=self._tls())
        self.log("listening", ae_title=self.config.ae_title, host=self.config.host, port=self.port,
                 tls=self.config.certificate is not None)
        return self.server

    @property
    def port(self) -> int:
        return self.server.server_address[1] if self.server else self.config.port

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()

    def _tls(self) -> ssl.SSLContext | None:
        if self.config.certificate is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self.config.certificate), str(self.config.key))
        if self.config.ca is not None:
            context.load_verify_locations(str(self.config.ca))
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    @staticmethod
    def _peer(event) -> dict:
        requestor = event.assoc.requestor
        return {"calling_ae": str(requestor.ae_title).strip(), "address": requestor.address}

    def _on_rejected(self, event) -> None:
        self.log("association_rejected", reason="calling AE title is not a known peer (or the node is busy)",
                 **self._peer(event))

    def _on_accepted(self, event) -> None:
        peer = self._peer(event)
        if not self.config.allows(peer["calling_ae"], peer["address"]):
            self.log("association_aborted", reason="this AE title may not send from this address", **peer)
            event.assoc.abort()
            return
        declined = sorted({str(context.abstract_syntax) for context in event.assoc.rejected_contexts})
        if declined:  # one line per association: a sender may propose a hundred classes at once
            self.log("sop_classes_declined", sop_classes=[UID(uid).name for uid in declined], **peer)

    def _on_echo(self, event) -> int:
        self.log("echo", **self._peer(event))
        return SUCCESS

    def _on_store(self, event) -> int:
        """Success only once the instance is on disk and counted in the journal: a promise."""
        peer = self._peer(event)
        if not self.config.allows(peer["calling_ae"], peer["address"]):
            return OUT_OF_RESOURCES  # unreachable after _on_accepted's abort; kept as the rule's second wall
        try:
            dataset = event.dataset
            series_uid, sop_uid = dataset.get("SeriesInstanceUID"), dataset.get("SOPInstanceUID")
            patient_id = str(dataset.get("PatientID", ""))
        except Exception as error:  # noqa: BLE001 - any undecodable dataset is the sender's problem
            self.log("instance_refused", reason=f"the dataset cannot be parsed: {type(error).__name__}: {error}",
                     **peer)
            return CANNOT_UNDERSTAND
        if not (valid_uid(series_uid) and valid_uid(sop_uid)):
            self.log("instance_refused", reason="SeriesInstanceUID or SOPInstanceUID is not a valid UID",
                     series_uid=repr(series_uid)[:80], sop_uid=repr(sop_uid)[:80], patient_id=patient_id, **peer)
            return CANNOT_UNDERSTAND
        try:
            self.spool.store(series_uid, sop_uid, event.encoded_dataset())
            before = self.journal.received_instance(series_uid, self.spool.series_folder(series_uid).name, patient_id)
        except OSError as error:
            self.log("instance_not_stored", reason=str(error), series_uid=series_uid, **peer)
            return OUT_OF_RESOURCES
        if before is None:
            self.log("series_started", series_uid=series_uid, patient_id=patient_id, **peer)
        elif before not in ("receiving", "received", "refused", "failed"):
            self.log("instance_after_result", series_uid=series_uid, state=before,
                     reason="the series was taken as complete and contoured (or is being contoured); the "
                            "instance is kept, no new result is made (a longer series_complete_seconds avoids this)",
                     **peer)
        return SUCCESS

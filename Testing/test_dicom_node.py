"""The DICOM node with real DCMTK clients on loopback: the scanner is storescu / echoscu, the
planning system storescp. Each test runs its own node process on its own ports and spool."""
from __future__ import annotations

import sys
import subprocess
import time

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

import non_chest_phantoms as ncp
import thorax_phantom as tp
from conftest import shared_data
from node_harness import NODE, Node, Tps, dcmtk, example_series, storescu, wait_for
from LungAutoSegLib.ct_reader import read_ct
from LungAutoSegLib.rtstruct import read_roi_masks
from LungAutoSegLib.segment_command import run_segment
from lungautoseg_train.dicom_seg import read_seg_masks

LUNGS = ["Lung_R", "Lung_L"]
REAL_CT = shared_data("real", "nsclc_radiomics_lung1", "LUNG1-010")


@pytest.fixture
def tps(tmp_path):
    receiver = Tps(tmp_path / "tps").start()
    yield receiver
    receiver.stop()


@pytest.fixture
def node(tmp_path, tps):
    started = Node(tmp_path / "node", tps.port).start()
    yield started
    started.stop()


def referenced_series(rtstruct) -> str:
    return rtstruct.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0] \
        .RTReferencedSeriesSequence[0].SeriesInstanceUID


def test_echo_succeeds_an_unknown_caller_is_rejected_and_other_classes_declined(node, tmp_path):
    assert subprocess.run([dcmtk("echoscu"), "-aet", "SCANNER", "-aec", NODE, "127.0.0.1", str(node.port)],
                          capture_output=True).returncode == 0
    stranger = subprocess.run([dcmtk("echoscu"), "-aet", "STRANGER", "-aec", NODE, "127.0.0.1", str(node.port)],
                              capture_output=True, text=True)
    assert stranger.returncode != 0 and "Calling AE Title Not Recognized" in stranger.stderr
    rejected = wait_for(lambda: node.events("association_rejected"), 10, "the rejection's log line")
    assert rejected[0]["calling_ae"] == "STRANGER"

    example_series(tmp_path / "ct", "P1")
    mr = dcmread(next((tmp_path / "ct").iterdir()))
    mr.SOPClassUID = mr.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage
    mr.Modality = "MR"
    (tmp_path / "mr").mkdir()
    mr.save_as(tmp_path / "mr" / "mr.dcm")
    sent = storescu(node, tmp_path / "mr", extra=["-R"])  # propose only the classes of the files sent
    assert sent.returncode != 0
    declined = wait_for(lambda: node.events("sop_classes_declined"), 10, "the declined class's log line")
    assert "MR Image Storage" in declined[0]["sop_classes"]
    assert node.jobs() == {} and not list((node.root / "spool" / "incoming").iterdir())


def test_a_real_ct_sent_by_storescu_comes_back_as_one_rtstruct_with_the_lungs_of_segment(node, tps, tmp_path):
    series_folder = next(p.parent for p in REAL_CT.rglob("*.dcm") if dcmread(p, stop_before_pixels=True)
                         .Modality == "CT")
    sent = storescu(node, series_folder)
    assert sent.returncode == 0, sent.stderr
    ct = read_ct(series_folder)
    series_uid = ct.dicom.datasets[0].SeriesInstanceUID
    wait_for(lambda: node.state(series_uid) == "sent", 300, "the RTSTRUCT to be sent")
    (rtstruct,) = tps.rtstructs()
    assert referenced_series(rtstruct) == series_uid
    received = read_roi_masks(rtstruct.filename, ct.dicom, LUNGS)
    direct = run_segment(series_folder, tmp_path / "direct", device="cpu")
    expected = read_roi_masks(direct["outputs"]["rtstruct"], ct.dicom, LUNGS)
    for name in LUNGS:
        assert np.array_equal(received.masks[name], expected.masks[name]), name
        assert received.masks[name].sum() > 100_000  # a real lung on a 512x512 grid
    # patient left/right: Lung_R lies towards -x (LPS)
    assert ct.volume.centroid_lps(received.masks["Lung_R"])[0] < ct.volume.centroid_lps(received.masks["Lung_L"])[0]
    assert not (node.root / "spool" / "incoming" / node.jobs()[series_uid]["folder"]).exists()  # retention 0


def test_three_concurrent_senders_get_three_rtstructs_each_matched_to_its_series(node, tps, tmp_path):
    series = {example_series(tmp_path / f"ct{n}", f"P{n}"): tmp_path / f"ct{n}" for n in range(3)}
    senders = [storescu(node, folder, wait=False) for folder in series.values()]
    assert all(s.wait(120) == 0 for s in senders)
    wait_for(lambda: all(node.state(uid) == "sent" for uid in series), 300, "three results")
    rtstructs = tps.rtstructs()
    assert sorted(referenced_series(r) for r in rtstructs) == sorted(series)
    for rtstruct in rtstructs:
        ct = read_ct(series[referenced_series(rtstruct)])
        assert rtstruct.PatientID == ct.dicom.datasets[0].PatientID
        assert [r.ROIName for r in rtstruct.StructureSetROISequence] == LUNGS


def test_a_dicom_seg_goes_with_the_rtstruct_when_configured_and_holds_the_same_lungs(tmp_path, tps):
    node = Node(tmp_path / "node", tps.port, destination_lines=("dicom_seg = true",)).start()
    try:
        uid = example_series(tmp_path / "ct", "P1")
        assert storescu(node, tmp_path / "ct").returncode == 0
        wait_for(lambda: node.state(uid) == "sent", 180, "the results")
    finally:
        node.stop()
    (rtstruct,), (seg,) = tps.rtstructs(), tps.received("SEG")
    assert seg.SeriesInstanceUID != rtstruct.SeriesInstanceUID and seg.ReferencedSeriesSequence[0].SeriesInstanceUID == uid
    assert [s.SegmentLabel for s in seg.SegmentSequence] == LUNGS
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "39607008"  # SNOMED CT lung
    ct = read_ct(tmp_path / "ct")
    in_seg = read_seg_masks(seg.filename, ct.dicom, LUNGS)
    in_rtstruct = read_roi_masks(rtstruct.filename, ct.dicom, LUNGS).masks
    for name in LUNGS:
        assert np.array_equal(in_seg[name], in_rtstruct[name]) and in_seg[name].sum() > 100_000, name


def test_a_destination_down_at_first_gets_the_rtstruct_once_it_is_up(tmp_path):
    tps = Tps(tmp_path / "tps")  # its port is chosen, nothing listens yet
    node = Node(tmp_path / "node", tps.port).start()
    try:
        uid = example_series(tmp_path / "ct", "P1")
        assert storescu(node, tmp_path / "ct").returncode == 0
        wait_for(lambda: len(node.events("send_failed")) >= 2, 120, "two failed sends")
        assert node.state(uid) == "done"
        tps.start()
        wait_for(lambda: node.state(uid) == "sent", 60, "the send after the destination came up")
        assert [referenced_series(r) for r in tps.rtstructs()] == [uid]
        assert node.jobs()[uid]["attempts"] >= 2
    finally:
        node.stop()
        tps.stop()


@pytest.mark.parametrize("moment", ["receive", "segmenting", "send"])
def test_a_node_killed_and_restarted_yields_exactly_one_rtstruct_per_series(tmp_path, moment):
    """SIGKILL while receiving (the scanner then sends the series again, as scanners retry),
    while contouring, or while the destination holds the RTSTRUCT's C-STORE open."""
    tps = Tps(tmp_path / "tps", sleep_after=4 if moment == "send" else 0).start()
    node = Node(tmp_path / "node", tps.port).start()
    try:
        uid = example_series(tmp_path / "ct", "P1")
        sender = storescu(node, tmp_path / "ct", wait=False)
        if moment == "receive":
            wait_for(lambda: node.jobs().get(uid, {}).get("instances", 0) >= 10, 60, "ten instances")
        elif moment == "segmenting":
            wait_for(lambda: node.state(uid) == "segmenting", 120, "contouring to start")
        else:
            wait_for(lambda: node.state(uid) == "done", 120, "the result")
            time.sleep(1.5)  # the C-STORE is under way: storescp has the file and holds its answer 4 s
            assert len(tps.rtstructs()) == 1  # stored there, but the node never heard so
        node.kill()
        sender.wait(60)
        node.start()
        if moment == "receive":
            assert storescu(node, tmp_path / "ct").returncode == 0
        wait_for(lambda: node.state(uid) == "sent", 180, "the result after the restart")
        time.sleep(3)  # a second RTSTRUCT, if one were coming, would come now
        rtstructs = tps.rtstructs()
        assert len({r.SOPInstanceUID for r in rtstructs}) == 1 and referenced_series(rtstructs[0]) == uid
        history = node.journal_events(uid)
        assert history[-1].startswith("sent")
        if moment == "segmenting":
            assert any("interrupted (node restart)" in line for line in history), history
    finally:
        node.stop()
        tps.stop()


def _series_with(tmp_path, name: str, change) -> tuple[str, object]:
    folder = tmp_path / name
    uid = example_series(folder, name.upper())
    change(sorted(folder.iterdir()))
    return uid, folder


def _gap(files):
    files[30].unlink()


def _short_pixels(files):
    ds = dcmread(files[10])
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    ds.save_as(files[10])


@pytest.mark.parametrize("name, change, says", [
    ("gap", _gap, "gap"),
    ("short_pixels", _short_pixels, "pixel"),
])
def test_a_series_segment_refuses_is_refused_with_its_reason_and_the_node_serves_on(node, tps, tmp_path, name,
                                                                                     change, says):
    uid, folder = _series_with(tmp_path, name, change)
    storescu(node, folder, extra=["-nh"])
    wait_for(lambda: node.state(uid) in ("refused", "failed"), 120, "the refusal")
    job = node.jobs()[uid]
    assert job["state"] == "refused" and says in job["reason"].lower(), job["reason"]
    assert node.events("refused")[0]["series_uid"] == uid
    good = example_series(tmp_path / "good", "GOOD")
    assert storescu(node, tmp_path / "good").returncode == 0
    wait_for(lambda: node.state(good) == "sent", 120, "the next good series")
    assert [referenced_series(r) for r in tps.rtstructs()] == [good]


def test_a_head_ct_is_contoured_as_segment_does_and_its_warning_travels_in_the_rtstruct(node, tps, tmp_path):
    """segment does not refuse a CT that is not a chest: it warns. The node keeps that rule and
    puts the warnings in the RTSTRUCT's StructureSetDescription."""
    uid = str(tp.write_ct_series(ncp.head_ct(), tmp_path / "head", "HEAD", generate_uid()).datasets[0]
              .SeriesInstanceUID)
    assert storescu(node, tmp_path / "head").returncode == 0
    wait_for(lambda: node.state(uid) == "sent", 120, "the result")
    (rtstruct,) = tps.rtstructs()
    assert "not a chest CT" in rtstruct.StructureSetDescription
    assert any("not a chest CT" in w for w in node.events("segmented")[0]["warnings"])


def test_a_path_trick_uid_is_refused_and_nothing_lands_outside_the_spool(node, tmp_path):
    example_series(tmp_path / "ct", "P1")
    first = sorted((tmp_path / "ct").iterdir())[0]
    trick = dcmread(first)
    trick.SOPInstanceUID = trick.file_meta.MediaStorageSOPInstanceUID = "../../../escaped"
    (tmp_path / "bad").mkdir()
    trick.save_as(tmp_path / "bad" / "trick.dcm")
    storescu(node, tmp_path / "bad", extra=["-nh"])  # storescu exits 0 on a failure status: the log says
    refused = wait_for(lambda: node.events("instance_refused"), 10, "the refusal's log line")
    assert "not a valid UID" in refused[0]["reason"]
    assert not list(tmp_path.rglob("escaped*")) and node.jobs() == {}
    # the node still serves
    assert subprocess.run([dcmtk("echoscu"), "-aet", "SCANNER", "-aec", NODE, "127.0.0.1", str(node.port)],
                          capture_output=True).returncode == 0


def test_node_status_lists_the_jobs_from_the_journal(node, tps, tmp_path):
    uid = example_series(tmp_path / "ct", "P7")
    storescu(node, tmp_path / "ct")
    wait_for(lambda: node.state(uid) == "sent", 120, "the result")
    done = subprocess.run([sys.executable, "-m", "LungAutoSegLib.cli", "node", "status",
                           "--config", str(node.config)], capture_output=True, text=True)
    line = next(line for line in done.stdout.splitlines() if uid in line)
    assert "sent" in line and "P7" in line and "61" in line


def _certificates(folder):
    """A CA, the node's certificate (for 127.0.0.1) and a scanner's, made by openssl."""
    folder.mkdir()

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=Test CA")
    for name in ("node", "scanner"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={name}")
        (folder / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    return folder


def test_with_tls_only_a_sender_with_a_certificate_the_ca_signed_gets_through(tmp_path, tps):
    certificates = _certificates(tmp_path / "certificates")
    node = Node(tmp_path / "node", tps.port)
    node.config.write_text(node.config.read_text() + "[tls]\n" + "".join(
        f'{key} = "{(certificates / name).as_posix()}"\n'
        for key, name in (("certificate", "node.pem"), ("key", "node.key"), ("ca", "ca.pem"))))
    node.start()
    try:
        def echo(*tls):
            return subprocess.run([dcmtk("echoscu"), *tls, "-aet", "SCANNER", "-aec", NODE, "127.0.0.1",
                                   str(node.port)], capture_output=True, text=True, timeout=60).returncode

        signed = ["+tls", str(certificates / "scanner.key"), str(certificates / "scanner.pem"),
                  "+cf", str(certificates / "ca.pem")]
        assert echo(*signed) == 0
        assert echo() != 0  # plain TCP
        assert echo("+tla", "+cf", str(certificates / "ca.pem")) != 0  # TLS without a certificate
        assert node.process.poll() is None  # and the node serves on
        assert echo(*signed) == 0
    finally:
        node.stop()


def test_node_status_before_the_node_ever_ran_says_so_and_makes_nothing(tmp_path):
    node = Node(tmp_path / "node", 104)
    done = subprocess.run([sys.executable, "-m", "LungAutoSegLib.cli", "node", "status", "--config", str(node.config)],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "has not run with this configuration" in done.stderr
    assert not (tmp_path / "node" / "spool").exists()

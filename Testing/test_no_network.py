"""No command opens a network connection: a socket guard fails every connect and name lookup
that leaves this machine, while segment, export, an offline train, package and evaluate run."""
import socket

import pytest
import yaml

import thorax_phantom as tp
from LungAutoSegLib.cli import main as engine
from lungautoseg_train.cli import main as train_cli

LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "", None}


class NetworkUsed(AssertionError):
    pass


@pytest.fixture
def socket_guard(monkeypatch):
    """Records and refuses any connection or lookup beyond this machine. Local sockets stay
    allowed: W&B talks to its own service process over one, even offline."""
    attempts = []

    def refuse(what):
        attempts.append(what)
        raise NetworkUsed(f"network use: {what}")

    def is_local(address) -> bool:
        if isinstance(address, (str, bytes)):  # AF_UNIX path
            return True
        return isinstance(address, tuple) and address[0] in LOCAL_HOSTS

    real_connect, real_connect_ex, real_getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def connect(self, address):
        return real_connect(self, address) if is_local(address) else refuse(address)

    def connect_ex(self, address):
        return real_connect_ex(self, address) if is_local(address) else refuse(address)

    def getaddrinfo(host, *args, **kwargs):
        host_text = host.decode() if isinstance(host, bytes) else host
        return real_getaddrinfo(host, *args, **kwargs) if host_text in LOCAL_HOSTS else refuse(host_text)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    return attempts


def test_the_guard_catches_a_connection(socket_guard):
    with pytest.raises(NetworkUsed):
        socket.create_connection(("example.org", 443), timeout=1)
    assert socket_guard == ["example.org"]


def test_segment_export_train_package_and_evaluate_use_no_network(socket_guard, tmp_path, capsys):
    grid = dict(shape_ijk=(64, 64, 24), spacing=(5.5, 5.5, 10.0))
    patient = tp.write_case(tmp_path / "dicom", "NET-000", tp.render(tp.make_anatomy(0), tp.make_grid(**grid)))
    ct_folder = next(p.parent for p in patient.rglob("CT*.dcm"))
    assert engine(["segment", str(ct_folder), "-o", str(tmp_path / "segment"), "--progress", "none"]) == 0
    assert train_cli(["export", "--dicom-root", str(tmp_path / "dicom"), "--roi", "Lung_R,Lung_L",
                      "--out", str(tmp_path / "export"), "--quiet"]) == 0

    csv = tp.write_nifti_dataset(tmp_path / "data", range(2), folds=2, **grid)
    config = {"output_dir": str(tmp_path / "run"), "data": {"csv": str(csv), "fold": 0}, "epochs": 1,
              "preprocessing": {"spacing": [8, 8, 8]}, "patch_size": [32, 32, 32],
              "network": {"class": "UNet", "channels": [4, 8], "strides": [2], "num_res_units": 1, "norm": "batch"},
              "validation": {"window": [32, 32, 32], "images_every": 1, "image_cases": 1}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    assert train_cli(["train", "--config", str(tmp_path / "config.yaml"), "--wandb", "offline", "--quiet"]) == 0
    assert list((tmp_path / "run").glob("wandb/offline-run-*"))  # W&B ran, offline
    assert train_cli(["package", "--checkpoint", str(tmp_path / "run" / "checkpoints" / "best.pt"),
                      "--out", str(tmp_path / "packages")]) == 0
    package = next((tmp_path / "packages").iterdir())
    assert train_cli(["evaluate", "--model", str(package), "--data", str(csv), "--out", str(tmp_path / "eval"),
                      "--wandb", "offline", "--quiet"]) == 0
    capsys.readouterr()
    assert socket_guard == []

"""The node's configuration: a TOML file; ``lungautoseg serve --example-config`` prints this one."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (Slicer-free installs): the [node] extra brings tomli
    import tomli as tomllib

EXAMPLE = '''\
# LungAutoSeg DICOM node. Every key is shown with its default; delete what you do not change.

[node]
ae_title = "LUNGAUTOSEG"         # this node's AE title (up to 16 characters)
host = "0.0.0.0"                  # interface to listen on; "127.0.0.1": this machine only
port = 11112                      # open it in the firewall for the senders' addresses only
max_associations = 4              # more concurrent senders are rejected (busy), to retry later
spool = "lungautoseg-spool"       # received CTs, results and the journal; relative to this file
series_complete_seconds = 10      # a series is complete when none of its instances came for this long
workers = 1                       # series contoured at once; each one needs about 1 GB of memory
log_file = ""                     # JSON lines; empty: standard error

[model]
package = ""                      # a model package folder or zip; empty: the bundled model
structures = []                   # e.g. ["Lung_R", "Lung_L"]; empty: all of the package's
device = "auto"                   # auto, cpu or cuda

# Who may send: one [[peers]] per calling AE title. With an address, only from that address.
# At least one [[peers]]: a caller not listed is rejected at association.
[[peers]]
ae_title = "CT_SCANNER"
address = ""                      # e.g. "10.1.2.3"; empty: any address

[destination]                     # where the RTSTRUCTs go by C-STORE: the planning system
ae_title = "TPS"
host = "127.0.0.1"
port = 104
retry_first_seconds = 5           # after a failed send; doubled each time up to the next value
retry_max_seconds = 300

[tls]                             # both paths set: the listening port speaks TLS only
certificate = ""                  # PEM certificate of this node
key = ""                          # its PEM private key
ca = ""                           # PEM; when set, a sender must present a certificate it signed

[retention]
keep_days = 0                     # 0: a received CT is deleted once its result was sent;
                                  # N: kept N days. A refused series is kept max(N, 1) days.
'''


@dataclass(frozen=True)
class Peer:
    ae_title: str
    address: str = ""


@dataclass(frozen=True)
class Destination:
    ae_title: str = "TPS"
    host: str = "127.0.0.1"
    port: int = 104
    retry_first_seconds: float = 5.0
    retry_max_seconds: float = 300.0
    dicom_seg: bool = False


@dataclass(frozen=True)
class NodeConfig:
    ae_title: str = "LUNGAUTOSEG"
    host: str = "0.0.0.0"
    port: int = 11112
    max_associations: int = 4
    spool: Path = Path("lungautoseg-spool")
    series_complete_seconds: float = 10.0
    workers: int = 1
    log_file: Path | None = None
    package: Path | None = None
    structures: tuple[str, ...] = ()
    device: str = "auto"
    peers: tuple[Peer, ...] = ()
    destination: Destination = field(default_factory=Destination)
    certificate: Path | None = None
    key: Path | None = None
    ca: Path | None = None
    keep_days: float = 0.0

    def allows(self, ae_title: str, address: str) -> bool:
        return any(p.ae_title == ae_title and p.address in ("", address) for p in self.peers)


SECTIONS = {"node": ("ae_title", "host", "port", "max_associations", "spool", "series_complete_seconds", "workers",
                     "log_file"),
            "model": ("package", "structures", "device"), "peers": ("ae_title", "address"),
            "destination": ("ae_title", "host", "port", "retry_first_seconds", "retry_max_seconds", "dicom_seg"),
            "tls": ("certificate", "key", "ca"), "retention": ("keep_days",)}


def load_config(path: str | Path) -> NodeConfig:
    """The validated configuration; relative paths are relative to the file's folder."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("no such configuration file (lungautoseg serve --example-config prints one)", path) from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise InputError(f"not a readable TOML configuration: {error}", path) from None
    try:
        return _parse(data, path.resolve().parent)
    except (TypeError, ValueError) as error:
        raise InputError(f"configuration: {error}", path) from None


def _section(data: dict, name: str) -> dict:
    value = data.get(name, {} if name != "peers" else [])
    rows = value if name == "peers" else [value]
    for row in rows:
        if not isinstance(row, dict):
            raise ValueError(f"[{name}] must be a table")
        unknown = set(row) - set(SECTIONS[name])
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))} in [{name}]; known: "
                             f"{', '.join(SECTIONS[name])}")
    return value


def _parse(data: dict, base: Path) -> NodeConfig:
    unknown = set(data) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown section(s) {', '.join(sorted(unknown))}; known: {', '.join(SECTIONS)}")
    node, model, tls = _section(data, "node"), _section(data, "model"), _section(data, "tls")
    destination, retention = _section(data, "destination"), _section(data, "retention")
    optional_path = lambda text: (base / text) if text else None  # noqa: E731
    config = NodeConfig(
        ae_title=_ae_title(node.get("ae_title", NodeConfig.ae_title), "node.ae_title"),
        host=str(node.get("host", NodeConfig.host)), port=_port(node.get("port", NodeConfig.port), "node.port"),
        max_associations=_positive_int(node.get("max_associations", NodeConfig.max_associations), "max_associations"),
        spool=base / node.get("spool", str(NodeConfig.spool)),
        series_complete_seconds=_number(node.get("series_complete_seconds", NodeConfig.series_complete_seconds),
                                        "node.series_complete_seconds"),
        workers=_positive_int(node.get("workers", NodeConfig.workers), "workers"),
        log_file=optional_path(node.get("log_file", "")),
        package=optional_path(model.get("package", "")), structures=tuple(model.get("structures", ())),
        device=model.get("device", "auto"),
        peers=tuple(Peer(_ae_title(p["ae_title"], "peers.ae_title"), str(p.get("address", ""))) for p in
                    _section(data, "peers")),
        destination=Destination(_ae_title(destination.get("ae_title", Destination.ae_title), "destination.ae_title"),
                                str(destination.get("host", Destination.host)),
                                _port(destination.get("port", Destination.port), "destination.port"),
                                _number(destination.get("retry_first_seconds", Destination.retry_first_seconds),
                                        "destination.retry_first_seconds"),
                                _number(destination.get("retry_max_seconds", Destination.retry_max_seconds),
                                        "destination.retry_max_seconds"),
                                _flag(destination.get("dicom_seg", False), "destination.dicom_seg")),
        certificate=optional_path(tls.get("certificate", "")), key=optional_path(tls.get("key", "")),
        ca=optional_path(tls.get("ca", "")), keep_days=_number(retention.get("keep_days", 0), "retention.keep_days"))
    if not config.peers:
        raise ValueError("no [[peers]]: name at least one calling AE title allowed to send")
    if config.device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"model.device must be auto, cpu or cuda (got {config.device!r})")
    if bool(config.certificate) != bool(config.key):
        raise ValueError("tls needs both certificate and key, or neither")
    if config.series_complete_seconds <= 0 or config.keep_days < 0:
        raise ValueError("series_complete_seconds must be positive and keep_days not negative")
    return config


def _ae_title(value, key: str) -> str:
    text = str(value).strip()
    if not 0 < len(text) <= 16 or "\\" in text or not text.isascii() or not text.isprintable():
        raise ValueError(f"{key} must be 1 to 16 printable ASCII characters without a backslash (got {value!r})")
    return text


def _port(value, key: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 65536:
        raise ValueError(f"{key} must be a port number from 0 to 65535 (got {value!r})")
    return value


def _positive_int(value, key: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{key} must be a positive integer (got {value!r})")
    return value


def _flag(value, key: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false (got {value!r})")
    return value


def _number(value, key: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f"{key} must be a number (got {value!r})")
    return float(value)

"""The node's configuration file: the printed example loads as is; mistakes are named."""
import subprocess
import sys

import pytest

from LungAutoSegLib.errors import InputError
from LungAutoSegLib.node.config import EXAMPLE, load_config


def test_the_example_configuration_loads_with_its_defaults_and_paths_beside_it(tmp_path):
    printed = subprocess.run([sys.executable, "-m", "LungAutoSegLib.cli", "serve", "--example-config"],
                             capture_output=True, text=True, check=True).stdout
    assert printed == EXAMPLE
    (tmp_path / "node.toml").write_text(printed)
    config = load_config(tmp_path / "node.toml")
    assert config.port == 11112 and config.spool == tmp_path / "lungautoseg-spool"
    assert config.allows("CT_SCANNER", "10.0.0.9") and not config.allows("OTHER", "10.0.0.9")
    assert config.keep_days == 0 and config.destination.dicom_seg is False and config.certificate is None


@pytest.mark.parametrize("change, message", [
    (("[node]", "[node]\nbogus = 1"), "unknown key"),
    (('ae_title = "CT_SCANNER"', 'ae_title = "A_TITLE_LONGER_THAN_16"'), "1 to 16 printable"),
    (("port = 104", "port = 70000"), "port number"),
    (('certificate = ""', 'certificate = "node.pem"'), "both certificate and key"),
    (("[[peers]]\nae_title = \"CT_SCANNER\"\naddress = \"\"", ""), "no \\[\\[peers\\]\\]"),
    (("keep_days = 0", "keep_days = 'x'"), "retention.keep_days must be a number"),
    (("keep_days = 0", "keep_days = "), "not a readable TOML"),
])
def test_a_mistake_in_the_configuration_is_named_with_the_file(tmp_path, change, message):
    old, new = change
    assert old in EXAMPLE
    (tmp_path / "node.toml").write_text(EXAMPLE.replace(old, new, 1))
    with pytest.raises(InputError, match=message) as error:
        load_config(tmp_path / "node.toml")
    assert str(tmp_path / "node.toml") in str(error.value)

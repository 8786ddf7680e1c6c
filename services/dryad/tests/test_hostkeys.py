"""Host keys are read from OpenSSH .pub files, checked, and handed out without comments."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from boruta_dryad.config import ConfigError, parse_config
from boruta_dryad.hostkeys import DEFAULT_HOST_KEYS, HostKeyError, parse_public_key, read_host_keys
from boruta_dryad.keys import generate_job_key


def public_line(comment: str = "root@board") -> str:
    return generate_job_key(2048, comment).public_openssh


def test_keys_come_without_comments_in_file_order_and_once(tmp_path: Path) -> None:
    first, second = public_line(), public_line()
    (tmp_path / "ssh_host_b_key.pub").write_text(f"{second}\n")
    (tmp_path / "ssh_host_a_key.pub").write_text(f"# rotated\n\n{first}\n{second}\n")
    keys = read_host_keys([str(tmp_path / "ssh_host_*_key.pub")])
    assert keys == (" ".join(first.split()[:2]), " ".join(second.split()[:2]))


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("ssh-rsa", "expected 'TYPE BASE64"),
        ("ssh-rsa not-base64!", "not valid base64"),
        (f"ssh-ed25519 {base64.b64encode(b'xx').decode()}", "too short"),
    ],
)
def test_lines_that_are_not_public_keys_are_refused(line: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_public_key(line)


def test_a_key_whose_blob_names_another_type_is_refused() -> None:
    kind, blob = public_line().split()[:2]
    assert kind == "ssh-rsa"
    with pytest.raises(ValueError, match="not of type ssh-ed25519"):
        parse_public_key(f"ssh-ed25519 {blob}")


def test_missing_bad_or_no_keys_say_what_to_fix(tmp_path: Path) -> None:
    with pytest.raises(HostKeyError, match="cannot read host key"):
        read_host_keys([str(tmp_path / "gone.pub")])
    (tmp_path / "bad.pub").write_text("ssh-rsa AAAA\n")
    with pytest.raises(HostKeyError, match=r"bad.pub:1 is not an OpenSSH public key"):
        read_host_keys([str(tmp_path / "bad.pub")])
    with pytest.raises(HostKeyError, match=r"no SSH host key found in .*set ssh_host_keys"):
        read_host_keys([str(tmp_path / "nothing_*.pub")])


def board_config(**board: object) -> dict[str, object]:
    return {
        "scheduler": "127.0.0.1:1",
        "listen": "127.0.0.1:0",
        "plaintext": True,
        "board": [{"name": "b0", "ssh_address": "board0.lab:22", **board}],
    }


def test_config_defaults_to_the_system_sshds_keys_and_takes_others() -> None:
    (default,) = parse_config(board_config()).boards
    assert default.ssh_host_keys == DEFAULT_HOST_KEYS == ("/etc/ssh/ssh_host_*_key.pub",)
    (given,) = parse_config(board_config(ssh_host_keys=["/srv/dut/keys/*.pub"])).boards
    assert given.ssh_host_keys == ("/srv/dut/keys/*.pub",)


@pytest.mark.parametrize("value", [[], ["relative.pub"], "/etc/ssh/x.pub", [1]])
def test_config_refuses_host_keys_that_are_not_absolute_paths(value: object) -> None:
    with pytest.raises(ConfigError, match="ssh_host_keys must be a non-empty list"):
        parse_config(board_config(ssh_host_keys=value))

"""Dryad configuration: what is accepted, what is refused and why, and UUID persistence."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from boruta_dryad.config import ConfigError, load_config, parse_config
from boruta_dryad.state import dryad_id, ensure_uuids


def minimal(**overrides: Any) -> dict[str, Any]:
    board = {"name": "b0", "caps": {"board": "rpi4"}, "ssh_address": "board0.lab:22"}
    board.update(overrides.pop("board", {}))
    data: dict[str, Any] = {
        "scheduler": "sched.lab:50051",
        "listen": "0.0.0.0:7175",
        "advertise": "board0.lab:7175",
        "tls_ca": "/etc/boruta/pki/ca.pem",
        "tls_cert": "/etc/boruta/pki/board0.pem",
        "tls_key": "/etc/boruta/pki/board0.key",
        "board": [board],
    }
    data.update(overrides)
    return data


def test_defaults() -> None:
    config = parse_config(minimal())
    (board,) = config.boards
    assert (config.key_bits, config.state_dir) == (3072, "/var/lib/boruta-dryad")
    assert (board.backend, board.user_prefix, board.user_groups) == ("simulated", "boruta-job", ())
    assert board.checks.min_disk_free_mb == 200


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"scheduler": None}, "scheduler"),
        ({"advertise": ""}, "listen is a wildcard address: set advertise"),
        ({"advertise": "0.0.0.0:7175"}, "not a wildcard"),
        ({"key_bits": 1024}, "key_bits must be 2048"),
        ({"board": {"ssh_address": None}}, "ssh_address"),
        ({"board": {"ssh_address": "0.0.0.0:22"}}, "wildcard"),
        ({"board": {"user_prefix": "Bad;rm -rf"}}, "user_prefix"),
        ({"board": {"user_prefix": "x" * 30}}, "user_prefix"),
        ({"board": {"user_groups": ["sudo"]}}, "must not be in group 'sudo'"),
        ({"board": {"user_groups": ["dial out"]}}, "not a valid group name"),
        ({"board": {"backend": "lego"}}, "backend must be"),
        ({"board": {"caps": {"UUID": "x"}}}, "set the UUID with uuid"),
        ({"board": {"uuid": "has space"}}, "uuid must be"),
        # The UUID goes into the job users' GECOS field, whose fields ':' separates.
        ({"board": {"uuid": "rack:7"}}, "uuid must be 1-64 letters, digits, '.', '_' or '-'"),
        ({"board": {"uuid": "a,b"}}, "uuid must be"),
        ({"board": {"uuid": "a\nb"}}, "uuid must be"),
        ({"board": {"colour": "red"}}, "unknown settings colour"),
        ({"board": {"user_shell": "bash"}}, "absolute path"),
        ({"bogus": 1}, "unknown settings bogus"),
        ({"board": []}, "at least one"),
        ({"job_uids": "70000"}, "job_uids: a uid range is FIRST-LAST"),
        ({"job_uids": "10-99"}, "job_uids: not a usable uid range"),
        ({"job_uids": "70000-70000"}, "too small"),
    ],
)
def test_refused(overrides: dict[str, Any], message: str) -> None:
    data = minimal()
    for key, value in overrides.items():
        if key == "board" and isinstance(value, dict):
            for k, v in value.items():
                if v is None:
                    del data["board"][0][k]
                else:
                    data["board"][0][k] = v
        elif value is None:
            del data[key]
        else:
            data[key] = value
    with pytest.raises(ConfigError, match=message):
        parse_config(data)


def test_boards_need_distinct_names_and_prefixes() -> None:
    data = minimal()
    data["board"].append(dict(data["board"][0]))
    with pytest.raises(ConfigError, match="names must be unique"):
        parse_config(data)
    data["board"][1]["name"] = "b1"
    with pytest.raises(ConfigError, match="own user_prefix"):
        parse_config(data)
    data["board"][1]["user_prefix"] = "job-b1-"
    assert len(parse_config(data).boards) == 2


def test_tls_or_plaintext_on_loopback_only() -> None:
    config = parse_config(minimal())
    assert config.tls is not None and config.tls.ca == "/etc/boruta/pki/ca.pem"
    bare = {k: v for k, v in minimal().items() if not k.startswith("tls_")}
    with pytest.raises(ConfigError, match="no TLS"):
        parse_config(bare)
    with pytest.raises(ConfigError, match="plaintext is only allowed on loopback; listen"):
        parse_config({**bare, "plaintext": True})
    local = {**bare, "plaintext": True, "listen": "127.0.0.1:0", "scheduler": "sched.lab:1"}
    with pytest.raises(ConfigError, match="plaintext is only allowed on loopback; scheduler"):
        parse_config(local)
    demo = parse_config({**local, "scheduler": "localhost:50051"})
    assert demo.plaintext and demo.tls is None
    with pytest.raises(ConfigError, match="set all of tls_ca"):
        parse_config({**bare, "tls_ca": "ca.pem"})
    with pytest.raises(ConfigError, match="choose one"):
        parse_config(minimal(plaintext=True))


def test_file_environment_and_options(tmp_path: Path) -> None:
    path = tmp_path / "dryad.toml"
    path.write_text(
        'scheduler = "a:1"\nlisten = "127.0.0.1:0"\n'
        'tls_ca = "ca.pem"\ntls_cert = "d.pem"\ntls_key = "d.key"\n'
        '[[board]]\nssh_address = "b:22"\ncaps = { board = "x" }\n'
    )
    config = load_config(["--config", str(path)], environ={})
    assert config.scheduler == "a:1"
    config = load_config(["--config", str(path)], environ={"BORUTA_SCHEDULER": "env:2"})
    assert config.scheduler == "env:2"
    config = load_config(
        ["--config", str(path), "--scheduler", "cli:3"], environ={"BORUTA_SCHEDULER": "env:2"}
    )
    assert config.scheduler == "cli:3"
    config = load_config(["--config", str(path)], environ={"BORUTA_JOB_UIDS": "80000-80999"})
    assert (config.job_uids.first, config.job_uids.last) == (80000, 80999)
    assert str(load_config(["--config", str(path)], environ={}).job_uids) == "70000-99999"
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(["--config", str(tmp_path / "none.toml")], environ={})


def test_the_dryad_id_is_made_once_and_kept(tmp_path: Path) -> None:
    made = dryad_id(str(tmp_path))
    assert len(made) == 32 and dryad_id(str(tmp_path)) == made
    assert dryad_id(str(tmp_path / "other")) != made
    (tmp_path / "dryad-id").write_text("garbage\n")
    # A new id would orphan the users marked with the old one.
    with pytest.raises(ValueError, match="damaged"):
        dryad_id(str(tmp_path))


def test_uuids_are_generated_once_and_kept(tmp_path: Path) -> None:
    data = minimal(state_dir=str(tmp_path))
    data["board"].append(
        {"name": "b1", "ssh_address": "h:22", "user_prefix": "j1-", "uuid": "fixed-uuid"}
    )
    first = ensure_uuids(parse_config(data))
    generated = first.boards[0].uuid
    assert generated and first.boards[1].uuid == "fixed-uuid"
    assert json.loads((tmp_path / "uuids.json").read_text()) == {"b0": generated}
    again = ensure_uuids(parse_config(data))
    assert again.boards[0].uuid == generated
    # A UUID edited into the state file is checked like a configured one.
    (tmp_path / "uuids.json").write_text(json.dumps({"b0": "rack:7"}))
    with pytest.raises(
        ConfigError, match=r"board 'b0' \(saved in uuids.json\): uuid must be 1-64 letters"
    ):
        ensure_uuids(parse_config(data))


def test_several_schedulers() -> None:
    listed = parse_config(minimal(schedulers=["s1.lab:50051", "s2.lab:50051"]))
    assert listed.scheduler == "s1.lab:50051,s2.lab:50051"
    # As BORUTA_SCHEDULERS or --schedulers give it; it wins over scheduler.
    joined = parse_config(minimal(schedulers="s1.lab:50051, s2.lab:50051"))
    assert joined.scheduler == listed.scheduler
    with pytest.raises(ConfigError, match="scheduler"):
        parse_config(minimal(schedulers=[]))
    with pytest.raises(ConfigError, match="plaintext is only allowed on loopback; scheduler 2"):
        parse_config(
            {
                **minimal(schedulers="127.0.0.1:1,s2.lab:50051", listen="127.0.0.1:7175"),
                **{"plaintext": True, "tls_ca": "", "tls_cert": "", "tls_key": ""},
            }
        )


def test_metrics_need_tls_or_anonymous_scrapes_on_loopback() -> None:
    with_tls = parse_config(minimal(metrics_listen="0.0.0.0:9102"))
    assert (with_tls.metrics_listen, with_tls.metrics_anonymous) == ("0.0.0.0:9102", False)
    plain = {
        "tls_ca": "",
        "tls_cert": "",
        "tls_key": "",
        "plaintext": True,
        "listen": "127.0.0.1:0",
        "advertise": "",
        "scheduler": "127.0.0.1:50051",
    }
    with pytest.raises(ConfigError, match="metrics_anonymous"):
        parse_config(minimal(**plain, metrics_listen="127.0.0.1:0"))
    with pytest.raises(ConfigError, match="loopback"):
        parse_config(minimal(**plain, metrics_listen="0.0.0.0:9102", metrics_anonymous=True))
    demo = parse_config(minimal(**plain, metrics_listen="127.0.0.1:0", metrics_anonymous="yes"))
    assert demo.metrics_anonymous

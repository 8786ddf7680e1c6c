"""The scheduler's configuration: a setting with a wrong type or value is refused when the
scheduler starts, naming the setting, not at the first call that uses it."""

from __future__ import annotations

from pathlib import Path

import pytest
from boruta_scheduler.config import load_config


def config_with(tmp_path: Path, policy: str) -> list[str]:
    path = tmp_path / "scheduler.toml"
    path.write_text(f"[policy]\n{policy}\n")
    return ["--config", str(path)]


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ('max_caps = "8"', "policy.max_caps must be a whole number"),
        ("max_caps = 8.5", "policy.max_caps must be a whole number"),
        ("max_caps = true", "policy.max_caps must be a whole number"),
        ("max_caps = 0", "max_caps must be at least 1"),
        ("max_reason_len = -1", "max_reason_len must be at least 1"),
        ('group_max_priority = { lab = "3" }', "policy.group_max_priority must map"),
        ('group_max_priority = "lab=3"', "policy.group_max_priority must map"),
        ("group_max_priority = { lab = 0 }", "the priority limit of lab must be between"),
    ],
)
def test_a_setting_only_the_file_sets_is_checked_at_start(
    tmp_path: Path, policy: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        load_config(config_with(tmp_path, policy), environ={})


def test_good_settings_only_the_file_sets_are_taken(tmp_path: Path) -> None:
    config = load_config(
        config_with(tmp_path, "max_caps = 8\ngroup_max_priority = { lab = 3 }"), environ={}
    )
    assert config.policy.max_caps == 8
    assert dict(config.policy.group_max_priority) == {"lab": 3}

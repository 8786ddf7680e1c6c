"""The settings tables of docs/configuration.md and docs/dryad.md against the code: every
option is in its table with its variable, its TOML name and (for the scheduler and the relay)
its default, and the tables name no option the code lacks."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from boruta_dryad import config as dryad_config
from boruta_scheduler import config as scheduler_config
from boruta_scheduler.config import ServerConfig, parse_duration
from boruta_scheduler.core import Policy
from boruta_scheduler.relay import config as relay_config
from boruta_scheduler.relay.config import RelayConfig

ROOT = Path(__file__).resolve().parents[1]


def rows(text: str) -> dict[str, list[str]]:
    """The rows of the Markdown tables in text whose first cell is an option, by option."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `--"):
            found[cells[0].strip("`")] = cells
    return found


def documented_default(cell: str) -> str:
    """The default a table cell gives: its first `code`, or "" for none or a (description)."""
    code = re.match(r"`([^`]*)`", cell)
    return code.group(1) if code else ""


def test_every_scheduler_option_is_documented_with_its_variable_toml_name_and_default() -> None:
    text = (ROOT / "docs/configuration.md").read_text().split("## Configuring the relay")[0]
    table = rows(text)
    defaults = {f.name: f.default for f in (*fields(ServerConfig), *fields(Policy))}
    options = scheduler_config._OPTIONS
    for opt in options:
        flag = "--" + opt.name.replace("_", "-")
        assert flag in table, f"docs/configuration.md has no row for {flag}"
        _, variable, toml, default, _ = table[flag]
        assert variable == f"`{scheduler_config.env_name(opt.name)}`", flag
        assert toml == f"`{opt.section}.{opt.name}`", flag
        shown = documented_default(default)
        if opt.kind == "duration":
            assert parse_duration(shown) == defaults[opt.name], (flag, default)
        elif opt.kind == "bool":
            assert shown == str(defaults[opt.name]).lower(), (flag, default)
        else:
            assert shown == str(defaults[opt.name]), (flag, default)
    assert set(table) == {"--" + o.name.replace("_", "-") for o in options}


def test_every_relay_option_is_documented_with_its_variable_and_default() -> None:
    text = (ROOT / "docs/configuration.md").read_text().split("## Configuring the relay")[1]
    table = rows(text)
    defaults = {f.name: f.default for f in fields(RelayConfig)}
    for name, variable, _ in relay_config._OPTIONS:
        flag = "--" + name.replace("_", "-")
        assert flag in table, f"docs/configuration.md's relay table has no row for {flag}"
        _, shown_variable, toml, default, _ = table[flag]
        assert (shown_variable, toml) == (f"`{variable}`", f"`relay.{name}`"), flag
        assert documented_default(default) == defaults[name], (flag, default)
    assert set(table) == {"--" + name.replace("_", "-") for name, _, _ in relay_config._OPTIONS}


def test_every_dryad_option_is_in_the_settings_table_of_dryad_md() -> None:
    text = (ROOT / "docs/dryad.md").read_text()
    settings = text.split("## Settings")[1].split("\n## ")[0]
    for name, _ in dryad_config._CLI:
        flag = "--" + name.replace("_", "-")
        variable = "BORUTA_" + name.upper()
        row = next((line for line in settings.splitlines() if f"`{name}`" in line), None)
        assert row is not None, f"docs/dryad.md's Settings table has no row for {name}"
        assert f"`{flag}`" in row and f"`{variable}`" in row, (name, row)

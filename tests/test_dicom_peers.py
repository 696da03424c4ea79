"""Known DICOM peers (``modalities``) and the calling-AE access rules (``access``)."""

from __future__ import annotations

import pytest

from pacs.config import Settings, SettingsError
from pacs.dicom_peers import ALL_OPERATIONS, Operation, RemoteAE, parse_access, parse_modalities


def test_modalities_are_parsed_into_remote_aes():
    assert parse_modalities("STORESCP=127.0.0.1:11113, WS1=10.0.0.5:104") == {
        "STORESCP": RemoteAE("STORESCP", "127.0.0.1", 11113),
        "WS1": RemoteAE("WS1", "10.0.0.5", 104),
    }


def test_modalities_accept_a_bracketed_ipv6_host():
    assert parse_modalities("WS=[::1]:104")["WS"].host == "::1"


@pytest.mark.parametrize(
    "text",
    ["STORESCP", "STORESCP=host", "STORESCP=host:0", "STORESCP=host:70000", "=h:1",
     "A\\B=h:1", "WAY_TOO_LONG_AE_TITLE=h:1", "X=h:1,X=h:2"],
)
def test_malformed_modalities_are_refused_naming_the_setting(text):
    with pytest.raises(SettingsError, match=r"^modalities: "):
        Settings.load({"PACS_MODALITIES": text})


def test_modalities_from_a_toml_table(tmp_path):
    config = tmp_path / "pacs.toml"
    config.write_text('[modalities]\nSTORESCP = "127.0.0.1:11113"\n')
    settings = Settings.load({}, toml_path=config)
    assert settings.remote_aes == {"STORESCP": RemoteAE("STORESCP", "127.0.0.1", 11113)}


def test_empty_access_lets_any_caller_do_anything():
    policy = parse_access("")
    assert policy.open
    assert policy.operations("ANYONE", "192.0.2.1") == ALL_OPERATIONS


def test_access_rule_limits_operations():
    policy = parse_access("CT01:store+commit")
    assert policy.allows("CT01", "10.0.0.1", Operation.STORE)
    assert policy.allows("CT01", "10.0.0.1", Operation.ECHO)
    assert not policy.allows("CT01", "10.0.0.1", Operation.QUERY)


def test_unknown_caller_may_do_nothing_when_rules_exist():
    policy = parse_access("CT01:store")
    assert policy.operations("WS9", "10.0.0.1") == frozenset()


def test_access_rule_limits_the_hosts_a_caller_may_come_from():
    policy = parse_access("CT01@10.0.0.0/24;192.0.2.7")
    assert policy.allows("CT01", "10.0.0.99", Operation.STORE)
    assert policy.allows("CT01", "192.0.2.7", Operation.STORE)
    assert not policy.allows("CT01", "10.0.1.1", Operation.STORE)


def test_wildcard_rule_matches_any_title_from_its_network():
    policy = parse_access("*@127.0.0.1:query")
    assert policy.allows("WHOEVER", "127.0.0.1", Operation.QUERY)
    assert not policy.allows("WHOEVER", "10.0.0.1", Operation.QUERY)


def test_ae_titles_compare_without_padding_but_with_case():
    policy = parse_access("CT01")
    assert policy.allows("CT01  ", "10.0.0.1", Operation.STORE)
    assert not policy.allows("ct01", "10.0.0.1", Operation.STORE)


def test_rules_for_one_caller_add_up():
    policy = parse_access("WS1:query,WS1@10.0.0.5:retrieve")
    assert policy.operations("WS1", "10.0.0.5") >= {Operation.QUERY, Operation.RETRIEVE}
    assert Operation.RETRIEVE not in policy.operations("WS1", "10.0.0.6")


@pytest.mark.parametrize(
    "text", ["CT01:fly", "CT01:", "CT01@", "CT01@ct-room.local", "A\\B", "@10.0.0.1"]
)
def test_malformed_access_entries_are_refused_naming_the_setting(text):
    with pytest.raises(SettingsError, match=r"^access: "):
        Settings.load({"PACS_ACCESS": text})

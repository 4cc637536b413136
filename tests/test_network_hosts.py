"""``--network HOST,...``: the host list as typed, matched and refused (no network needed)."""

from __future__ import annotations

import re

import pytest

from jupyter_exec.admission import BackendFacts, admit
from jupyter_exec.errors import PolicyError, SpecError
from jupyter_exec.hosts import HostList, HostRule
from jupyter_exec.policy import Policy, parse_policy, policy_report
from jupyter_exec.spec import Limits, RunSpec


def test_entries_are_read_as_typed() -> None:
    hosts = HostList.parse(
        " Index.Example.org., *.example.org:8443, [2001:DB8::1]:443, 198.51.100.7 ,index.example.org"
    )
    assert hosts.rules == (
        HostRule("index.example.org"),
        HostRule("example.org", 8443, wildcard=True),
        HostRule("2001:db8::1", 443),
        HostRule("198.51.100.7"),
    )
    assert str(hosts) == "index.example.org,*.example.org:8443,[2001:db8::1]:443,198.51.100.7"
    assert HostList.parse(str(hosts)) == hosts


def test_a_bare_name_means_the_web_ports_and_a_wildcard_only_subdomains() -> None:
    hosts = HostList.parse("index.example.net,*.example.org,db.example.org:5432")
    assert hosts.match("INDEX.EXAMPLE.NET", 443) and hosts.match("index.example.net", 80)
    assert hosts.match("index.example.net", 22) is None
    assert hosts.match("a.b.example.org", 443) == HostRule("example.org", wildcard=True)
    assert hosts.match("example.org", 443) is None
    assert hosts.match("badexample.org", 443) is None
    assert hosts.match("db.example.org", 5432) == HostRule("db.example.org", 5432)


@pytest.mark.parametrize(
    ("typed", "said"),
    [
        ("10.0.0.0/8", "is an address range; ranges are not allowed"),
        ("example.org:0", "the port must be a number from 1 to 65535"),
        ("example.org:70000", "the port must be a number from 1 to 65535"),
        ("example.org:http", "the port must be a number from 1 to 65535"),
        ("2001:db8::1", "write an IPv6 address in brackets, e.g. [2001:db8::1]"),
        ("[not-v6]:443", "is not an IPv6 address in brackets"),
        ("exa mple.org", "is not a host name"),
        ("*", "is not a host name"),
        ("*.org", "would match a whole top-level domain"),
        ("foo.*.org", "is not a host name"),
        ("https://index.example.org", "is not a host; write the name alone"),
        ("-bad.org", "is not a host name"),
        ("1.2.3.999", "is neither a host name nor an IPv4 address"),
        (",", "no host given"),
    ],
)
def test_a_bad_entry_is_one_line_naming_it(typed: str, said: str) -> None:
    with pytest.raises(SpecError, match=r"^--network: ") as caught:
        Limits.parse(network=typed)
    assert said in str(caught.value) and "\n" not in str(caught.value)


def test_the_limit_is_off_on_or_a_list_and_survives_the_store() -> None:
    assert Limits().network is False and Limits().hosts is None
    assert Limits.parse(network=True).open_network
    listed = Limits.parse(network="files.test,*.example.org:8443")
    assert listed.hosts == HostList.parse("files.test,*.example.org:8443") and not listed.open_network
    assert Limits.read(listed.as_dict()) == listed


def test_one_list_within_another() -> None:
    ceiling = HostList.parse("index.example.org,*.example.net,api.example.org:8443")
    assert HostList.parse("index.example.org:443,files.example.net,*.a.example.net").within(ceiling) is None
    assert HostList.parse("index.example.org,evil.org").within(ceiling) == HostRule("evil.org")
    assert HostList.parse("api.example.org").within(ceiling) == HostRule("api.example.org")


def test_old_policy_files_keep_their_meaning() -> None:
    closed = parse_policy({"network": False}, "old.yaml")
    with pytest.raises(PolicyError, match=r"^--network is not allowed by the administrator's policy \(old.yaml\)"):
        closed.bound(Limits(network=True), Limits(network=True), None)
    with pytest.raises(PolicyError, match=r"^--network is not allowed"):
        closed.bound(Limits.parse(network="index.example.org"), Limits(), None)
    opened = parse_policy({"network": True}, "old.yaml")
    assert opened.bound(Limits(network=True), Limits(network=True), None).network is True
    assert policy_report(closed).splitlines()[1].split() == ["network", "not", "allowed", "(old.yaml)"]


def test_a_policy_list_is_the_hosts_a_user_may_name() -> None:
    policy = parse_policy({"network": ["index.example.org", "*.example.net"]}, "hub.yaml")
    asked = Limits.parse(network="index.example.org,files.example.net")
    assert policy.bound(asked, asked, None).network == asked.network
    assert policy.bound(Limits(), Limits(), None).network is False  # no default list: no network
    with pytest.raises(PolicyError) as alone:
        policy.bound(Limits(network=True), Limits(network=True), None)
    assert str(alone.value) == (
        "--network alone (every host) is not allowed by the administrator's policy (policy hub.yaml); "
        "name the hosts, among: index.example.org,*.example.net"
    )
    with pytest.raises(PolicyError) as outside:
        policy.bound(Limits.parse(network="index.example.org,evil.example"), Limits(), None)
    assert str(outside.value) == (
        "--network evil.example: not among the hosts the administrator's policy allows (policy hub.yaml): "
        "index.example.org,*.example.net"
    )
    stricter = policy.strictest(parse_policy({"network": ["index.example.org"]}, "mine.yaml"))
    with pytest.raises(PolicyError, match=r"^--network files.example.net: .*\(policy mine.yaml\)"):
        stricter.bound(asked, asked, None)


def test_a_default_list_for_runs_that_name_none() -> None:
    policy = parse_policy(
        {"network": ["index.example.org", "api.example.org"], "network_default": ["index.example.org"]}, "hub.yaml"
    )
    assert str(policy.bound(Limits(), Limits(), None).network) == "index.example.org"
    assert policy.bound(Limits(), Limits(), frozenset({"memory"})).network is False  # a backend that cannot keep it
    assert str(policy.bound(*[Limits.parse(network="api.example.org")] * 2, None).network) == "api.example.org"
    assert "network        by default index.example.org   (hub.yaml)" in policy_report(policy)


@pytest.mark.parametrize(
    ("data", "said"),
    [
        ({"network": ["10.0.0.0/8"]}, "policy p.yaml, key network: '10.0.0.0/8' is an address range"),
        ({"network": []}, "policy p.yaml, key network: expected a list of hosts"),
        ({"network_default": "index.example.org"}, "policy p.yaml, key network_default: expected a list of hosts"),
        ({"network": ["index.example.org"], "network_default": ["evil.example"]}, "evil.example is beyond key network"),
        (
            {"network": False, "network_default": ["index.example.org"]},
            "key network_default: a list is beyond key network",
        ),
    ],
)
def test_a_bad_policy_list_names_the_file_and_key(data: dict, said: str) -> None:
    with pytest.raises(PolicyError, match=re.escape(said)):
        parse_policy(data, "p.yaml")


def test_a_sessions_host_list_is_set_by_its_first_cell() -> None:
    """Asked or the policy's default, the list is the session's: a later cell gets it, or is refused another."""
    facts = BackendFacts("seccomp", None, None, lambda spec, policy: None, lambda limits, unenforced: ("", ""))
    first = admit(RunSpec(limits=Limits.parse(network="files.example.org"), session="s1"), facts, Policy(), Limits())
    assert str(first.limits.hosts) == "files.example.org"
    assert admit(RunSpec(session="s1"), facts, Policy(), Limits(), first).limits.hosts == first.limits.hosts
    other = RunSpec(limits=Limits.parse(network="other.example.org"), session="s1")
    with pytest.raises(SpecError, match=r"^--network: session s1 runs with --network files\.example\.org"):
        admit(other, facts, Policy(), Limits(), first)
    policy = parse_policy({"network": ["index.example.org"], "network_default": ["index.example.org"]}, "hub.yaml")
    assert str(admit(RunSpec(session="s2"), facts, policy, Limits()).limits.hosts) == "index.example.org"

"""Hosts from --hosts and from Ansible inventories; no test host needed."""

import subprocess
import sys
from pathlib import Path

import pytest

from glowtools import fleet, fleet_cli

REPO = Path(__file__).resolve().parents[2]

INVENTORY = """\
# The fleet
[beanstalkd]
queue1 ansible_host=10.0.0.4

[cpu]
worker[01:03] ansible_port=2222
big ansible_host=10.0.0.9 ansible_user=ops   ; inline comment

[gpu]
gpu1 ansible_host=10.0.0.21

[glow_listeners:children]
cpu
gpu

[gpu:vars]
ansible_user=cuda

[all:vars]
ansible_user=root
"""


@pytest.fixture
def inventory(tmp_path: Path) -> str:
    path = tmp_path / "inventory.ini"
    path.write_text(INVENTORY)
    return str(path)


def test_group_takes_hosts_of_its_children_with_their_variables(inventory):
    hosts = fleet.resolve_hosts(inventory=inventory, group="glow_listeners")

    assert hosts == [
        fleet.Host("worker01", "", "root", 2222),
        fleet.Host("worker02", "", "root", 2222),
        fleet.Host("worker03", "", "root", 2222),
        fleet.Host("big", "10.0.0.9", "ops", None),
        fleet.Host("gpu1", "10.0.0.21", "cuda", None),
    ]


def test_all_holds_every_host_once(inventory):
    names = [host.name for host in fleet.resolve_hosts(inventory=inventory)]

    assert sorted(names) == [
        "big",
        "gpu1",
        "queue1",
        "worker01",
        "worker02",
        "worker03",
    ]


def test_hosts_option_and_inventory_add_up_without_repeats(inventory):
    hosts = fleet.resolve_hosts("h1, h2,h1", inventory, "gpu")

    assert [host.name for host in hosts] == ["h1", "h2", "gpu1"]


def test_example_inventory_of_the_playbook_is_readable():
    example = str(REPO / "ansible" / "inventory.example.ini")

    hosts = fleet.resolve_hosts(inventory=example, group="glow_listeners")

    assert [host.name for host in hosts] == ["worker1", "worker2", "gpu1"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "no hosts: give --hosts h1,h2 or --inventory FILE --group NAME"),
        ({"inventory": "/nonexistent.ini"}, "inventory /nonexistent.ini: no such file"),
    ],
)
def test_unusable_host_options_are_one_line_errors(options, message, capsys):
    status = fleet_cli.drain_main(**options)

    assert status == 7
    assert capsys.readouterr().err == f"glow-drain: {message}\n"


def test_unknown_group_names_the_known_ones(inventory, capsys):
    status = fleet_cli.status_main(inventory=inventory, group="web")

    assert status == 7
    assert capsys.readouterr().err == (
        f"glow-stats: inventory {inventory}: no group 'web' (groups: all, beanstalkd,"
        " cpu, glow_listeners, gpu)\n"
    )


def test_glow_put_and_glow_listen_do_not_load_fabric():
    code = (
        "import sys, glowtools.put, glowtools.listen, glowtools.drain, glowtools.stats;"
        "print(sorted(m for m in ('fabric', 'paramiko', 'invoke') if m in sys.modules))"
    )

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)

    assert (done.returncode, done.stdout) == (0, "[]\n"), done.stderr


def test_yaml_inventory_is_read_through_ansible_inventory(tmp_path):
    path = tmp_path / "inventory.yml"
    path.write_text(
        "all:\n"
        "  children:\n"
        "    glow_listeners:\n"
        "      hosts:\n"
        "        w1: {ansible_host: 10.0.0.11, ansible_port: 2200}\n"
        "        w2:\n"
        "      vars: {ansible_user: ops}\n"
    )

    hosts = fleet.resolve_hosts(inventory=str(path), group="glow_listeners")

    assert hosts == [
        fleet.Host("w1", "10.0.0.11", "ops", 2200),
        fleet.Host("w2", "", "ops", None),
    ]

"""The cluster's address plan: disjoint ranges, one pod range per node."""

import ipaddress

from localcluster import network


def test_ranges_are_disjoint_and_private():
    ranges = (network.NODE_NETWORK, network.POD_NETWORK, network.SERVICE_NETWORK)
    for index, first in enumerate(ranges):
        assert first.is_private
        for second in ranges[index + 1:]:
            assert not first.overlaps(second), (first, second)
    assert ipaddress.ip_address(network.API_SERVICE_ADDRESS) in network.SERVICE_NETWORK
    assert ipaddress.ip_address(network.HOST_ADDRESS) in network.NODE_NETWORK


def test_nodes_get_distinct_addresses_pod_ranges_and_interface_names():
    nodes = [network.Node(i) for i in (1, 2, 3)]
    assert len({n.address for n in nodes}) == 3
    assert all(ipaddress.ip_address(n.address) in network.NODE_NETWORK for n in nodes)
    assert network.HOST_ADDRESS not in {n.address for n in nodes}
    assert all(n.pod_network.subnet_of(network.POD_NETWORK) for n in nodes)
    assert not nodes[0].pod_network.overlaps(nodes[1].pod_network)
    # Linux limits interface names to 15 bytes.
    assert all(len(name) <= 15 for n in nodes for name in (n.veth_host, n.veth_node, network.BRIDGE))

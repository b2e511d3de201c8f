"""Active probes: traffic sent from every node to its peers over the node's SSH connection.

plan.py decides the targets from facts and the inventory (pure), script.py turns one node's
plan into a bounded read-only shell script, runner.py runs the scripts on all nodes at once
(plus DNS/HTTP through the SSH connection where the node has no tool), parse.py turns the raw
output kept in the bundle into reach, mtu_check, vxlan_flow, dns_check, http_check and
tcp_check facts.
"""

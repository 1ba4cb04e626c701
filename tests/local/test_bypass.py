"""`mizzen mesh bypass`: the stored switch (Namespace labels) and the pods' nat tables in each state."""
from __future__ import annotations

from mizzen.local.bypass import BYPASS_LABEL, ROOT_NAMESPACE, is_bypassed, namespace_labels, switch_documents
from mizzen.local.netns import capture_rules, inbound_only_rules
from mizzen.local.plainroutes import service_chain


def ns(name: str, **labels: str) -> dict:
    return {"metadata": {"name": name, "labels": labels}}


def test_switch_documents_and_effective_state():
    items = [ns("shop", team="a"), ns("pay", **{BYPASS_LABEL: "true"})]
    assert switch_documents(items, True, "shop") == [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"team": "a", BYPASS_LABEL: "true"}}}]
    # mesh-wide: the root namespace's label, and namespaces' own labels cleared (other labels kept)
    docs = switch_documents(items, False, None)
    assert [(d["metadata"]["name"], d["metadata"]["labels"]) for d in docs] == [
        (ROOT_NAMESPACE, {BYPASS_LABEL: "false"}), ("pay", {})]
    labels = namespace_labels([ns(ROOT_NAMESPACE, **{BYPASS_LABEL: "true"}), ns("pay", **{BYPASS_LABEL: "false"})])
    assert is_bypassed("shop", labels) and not is_bypassed("pay", labels)  # its own label wins
    assert not is_bypassed("shop", namespace_labels([]))


def test_half_way_rules_send_direct_and_capture_what_arrives():
    chain = service_chain({("10.96.0.5", 80): [("10.244.0.7", 8080)]})
    half = inbound_only_rules(services=chain)
    assert "-A OUTPUT -p tcp -j MIZZEN_SERVICES" in half and "REDIRECT --to-ports 15006" in half
    assert "15001" not in half and "-d 10.96.0.5/32 -p tcp --dport 80 -j DNAT --to-destination 10.244.0.7:8080" in half
    full = capture_rules(services=chain)
    assert "REDIRECT --to-ports 15001" in full and "-A OUTPUT -p tcp -j MIZZEN_SERVICES" not in full

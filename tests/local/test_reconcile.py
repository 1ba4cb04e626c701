"""The runner's reconcile plan: which workloads to start, scale or stop to match the store."""
from __future__ import annotations

from mizzen.local.reconcile import desired_replicas, plan


def test_desired_replicas_defaults_to_one_and_default_namespace() -> None:
    items = [{"metadata": {"name": "a"}, "spec": {}},
             {"metadata": {"name": "b", "namespace": "shop"}, "spec": {"replicas": 3}}]
    assert desired_replicas(items) == {("default", "a"): 1, ("shop", "b"): 3}


def test_plan_starts_new_scales_changed_stops_deleted_and_leaves_the_rest() -> None:
    desired = {("default", "same"): 2, ("default", "new"): 1, ("default", "more"): 3, ("shop", "zero"): 0}
    running = {("default", "same"): 2, ("default", "more"): 1, ("default", "gone"): 2, ("shop", "zero"): 1}
    assert plan(desired, running) == [(("default", "gone"), 0), (("default", "more"), 3),
                                      (("default", "new"), 1), (("shop", "zero"), 0)]
    assert plan(desired, {**running, ("default", "gone"): 0, ("default", "more"): 3, ("default", "new"): 1,
                          ("shop", "zero"): 0}) == []

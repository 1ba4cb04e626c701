"""`mizzen chaos`: failure drills on a running local mesh (see docs/chaos.md).

    spec.py       faults as data: durations, percentages, rates, `Selection`, the `Fault` record (pure)
    targets.py    what a fault hits, chosen from the runner's status with a seed (pure)
    records.py    the records in STATE/chaos/<id>.json
    engine.py     `Chaos(state_dir)`: kill, network, partition, stress, list, stop; `stop_all` for teardown
    keeper.py     the process that holds one fault and undoes it on expiry or SIGTERM
    actions.py    undo actions (iptables chains/jumps, qdiscs, helper processes, frozen processes)
    netfault.py   latency/jitter/loss/bandwidth/partition in a pod's namespace (netem, else relay+iptables+tbf)
    relay.py      the delaying TCP relay used for latency where the kernel has no netem
    procfault.py  kills, the control-plane freeze, CPU stress
    scenario.py   `ChaosScenario` files (mizzen.dev/v1): parse and validate (pure)
    load.py       the scenario's HTTP load, run inside a pod: per-request records, per-second buckets
    verdict.py    steady-state checks → a verdict with the numbers (pure)
    run.py        `mizzen chaos run FILE`: load + fault schedule + checks → timeline and verdict
    soak.py       the chaos soak (e2e test and `make bench`)
"""

"""Will the run fit? Before any actor starts: the nodes (a live Ray cluster or a description),
where each actor goes, and each role's memory against what its node and GPUs hold.

    nodes.py      the nodes: from a live Ray cluster or from a cluster file
    placement.py  each actor (role, index) → a node, its CPUs, GPUs and GPU slots
    memory.py     each role's memory: weights, trainable states under ZeRO, activations, KV cache
    plan.py       both together: the plan `osp plan` prints and `osp train` obeys, or its refusals
"""

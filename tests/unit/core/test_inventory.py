"""Node declarations (what a configured node tells Ray) and ``node_view`` (reading one back)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from nodes.accelerators import accelerator, cpu_accelerator
from scheduler.config import GearshiftConfig, NodeGroup
from scheduler.framework.placement import NodeView
from scheduler.inventory import (
    CPU_SLOT_RESOURCE,
    ROLE_HEAD,
    ROLE_WORKER,
    declare_fleet,
    declare_group,
    declare_node,
    groups_of_joined_nodes,
    node_view,
)
from scheduler.placement.shapes import group_accelerator
from scheduler.types import (
    LABEL_ACCELERATOR,
    LABEL_ACCELERATOR_MEMORY_GIB,
    LABEL_CPU_CORES,
    LABEL_GROUP,
    LABEL_NODE_ID,
    LABEL_OWNERSHIP,
    LABEL_PRICE_PER_HOUR,
    LABEL_ROLE,
    LABEL_SIMULATED,
    Ownership,
)

Resources = Callable[..., dict[str, float]]


@pytest.mark.parametrize(
    ("group", "ray_type", "memory", "price"),
    [
        (
            NodeGroup(name="h100", accelerator="H100-SXM", accelerators_per_node=8, nodes=2),
            "H100",
            "79.1",
            f"{2.69 * 8:g}",
        ),
        (
            NodeGroup(
                name="a100",
                accelerator="a100 80gb",
                nodes=1,
                price_per_node_hour=1.1,
                ownership=Ownership.OWNED,
            ),
            "A100",
            "79.2",
            "1.1",
        ),
        (
            NodeGroup(
                name="l4",
                accelerator="L4",
                accelerators_per_node=2,
                nodes=3,
                price_per_node_hour=0.58,
                ownership=Ownership.SPOT,
            ),
            "L4",
            "22",
            "0.58",
        ),
        (NodeGroup(name="rtx", accelerator="4090", nodes=1), "GeForce-RTX-4090", "23.6", "0.6"),
    ],
    ids=["h100x8", "a100-alias", "l4x2", "rtx-4090"],
)
def test_declare_gpu_group(group: NodeGroup, ray_type: str, memory: str, price: str) -> None:
    declarations = declare_group(group)

    assert [d.node_id for d in declarations] == group.node_ids()
    for declaration in declarations:
        assert declaration.num_gpus == group.accelerators_per_node
        assert declaration.num_cpus == 1
        assert declaration.resources == {f"accelerator_type:{ray_type}": 1.0}
        assert CPU_SLOT_RESOURCE not in declaration.resources
        assert declaration.labels == {
            LABEL_NODE_ID: declaration.node_id,
            LABEL_GROUP: group.name,
            LABEL_ACCELERATOR: group.accelerator,
            LABEL_ACCELERATOR_MEMORY_GIB: memory,
            LABEL_PRICE_PER_HOUR: price,
            LABEL_OWNERSHIP: group.ownership.value,
            LABEL_ROLE: ROLE_WORKER,
            LABEL_SIMULATED: "true",
            "ray.io/accelerator-type": ray_type,
        }


def test_declare_cpu_group() -> None:
    group = NodeGroup(
        name="cpu",
        accelerator="CPU",
        nodes=2,
        price_per_node_hour=0.06,
        ownership=Ownership.OWNED,
        cpu={"cores": 32, "memory_gib": 128},
    )
    declarations = declare_group(group)
    assert [d.node_id for d in declarations] == ["cpu-0", "cpu-1"]
    for declaration in declarations:
        assert declaration.num_gpus == 0
        assert declaration.resources == {CPU_SLOT_RESOURCE: 1.0}
        assert not any(key.startswith("accelerator_type:") for key in declaration.resources)
        assert "ray.io/accelerator-type" not in declaration.labels
        assert declaration.labels[LABEL_ACCELERATOR] == "CPU"
        assert declaration.labels[LABEL_ACCELERATOR_MEMORY_GIB] == "128"  # from the cpu spec
        assert declaration.labels[LABEL_PRICE_PER_HOUR] == "0.06"
        assert declaration.labels[LABEL_ROLE] == ROLE_WORKER
        assert declaration.labels[LABEL_CPU_CORES] == "32"


def test_group_labels_are_carried_but_cannot_override_gearshifts() -> None:
    group = NodeGroup(
        name="l4",
        accelerator="L4",
        nodes=1,
        labels={"zone": "eu-west-1a", LABEL_NODE_ID: "spoofed", LABEL_ROLE: ROLE_HEAD},
    )
    labels = declare_group(group)[0].labels
    assert labels["zone"] == "eu-west-1a"
    assert labels[LABEL_NODE_ID] == "l4-0"
    assert labels[LABEL_ROLE] == ROLE_WORKER


def test_a_group_with_zero_nodes_declares_nothing() -> None:
    assert declare_group(NodeGroup(name="l4", accelerator="L4", nodes=0)) == []


def test_declare_fleet_covers_every_demo_node(demo: GearshiftConfig) -> None:
    ids = [d.node_id for d in declare_fleet(demo)]
    assert ids == ["h100-0", "a100-0", "a100-1", "l4-0", "l4-1", "cpu-0"]
    assert sum(d.num_gpus for d in declare_fleet(demo)) == 5


def test_node_view_round_trips_every_demo_declaration(
    demo: GearshiftConfig, make_ray_resources: Resources
) -> None:
    groups = {g.name: g for g in demo.fleet.node_groups}
    for declaration in declare_fleet(demo):
        resources = make_ray_resources(
            declaration.num_cpus, declaration.num_gpus, declaration.resources
        )
        view = node_view(declaration.labels, resources, True)
        group = groups[declaration.labels[LABEL_GROUP]]
        assert view == NodeView(
            node_id=declaration.node_id,
            group=group.name,
            accelerator=group.accelerator,
            accelerator_count=group.accelerators_per_node,
            accelerator_memory_gib=group_accelerator(group).memory_gib,
            price_per_hour=group.node_price_per_hour(),
            ownership=group.ownership,
            alive=True,
            labels=declaration.labels,
        )


def test_node_view_of_a_multi_gpu_node(make_ray_resources: Resources) -> None:
    group = NodeGroup(name="big", accelerator="H100-SXM", accelerators_per_node=8, nodes=1)
    declaration = declare_group(group)[0]
    view = node_view(declaration.labels, make_ray_resources(1, 8, declaration.resources), False)
    assert view is not None
    assert (view.accelerator_count, view.alive) == (8, False)
    assert view.price_per_accelerator_hour == pytest.approx(2.69)
    assert view.accelerator_memory_gib == pytest.approx(79.1)


def test_node_view_of_a_cpu_node_counts_one_engine_slot(
    demo: GearshiftConfig, make_ray_resources: Resources
) -> None:
    declaration = next(d for d in declare_fleet(demo) if d.node_id == "cpu-0")
    resources = make_ray_resources(16, 0, declaration.resources)
    assert "GPU" not in resources
    view = node_view(declaration.labels, resources, True)
    assert view is not None
    assert (view.accelerator, view.accelerator_count, view.accelerator_memory_gib) == (
        "CPU",
        1,
        64.0,
    )


@pytest.mark.parametrize(
    "labels",
    [
        pytest.param({LABEL_ROLE: ROLE_HEAD}, id="head"),
        pytest.param({}, id="unlabelled-ray-node"),
        pytest.param({"ray.io/node-id": "abc"}, id="foreign-node"),
        pytest.param({LABEL_ROLE: ROLE_WORKER}, id="worker-without-node-id"),
        pytest.param({LABEL_ROLE: ROLE_HEAD, LABEL_NODE_ID: "head"}, id="head-with-node-id"),
    ],
)
def test_node_view_is_none_for_head_and_unknown_nodes(
    labels: dict[str, str], make_ray_resources: Resources
) -> None:
    assert node_view(labels, make_ray_resources(1, 0, {}), True) is None


def test_node_view_is_none_for_a_head_even_with_full_worker_labels(
    demo: GearshiftConfig, make_ray_resources: Resources
) -> None:
    declaration = declare_fleet(demo)[0]
    labels = {**declaration.labels, LABEL_ROLE: ROLE_HEAD}
    resources = make_ray_resources(1, declaration.num_gpus, declaration.resources)
    assert node_view(labels, resources, True) is None
    assert node_view(declaration.labels, resources, True) is not None  # the control


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (LABEL_PRICE_PER_HOUR, "cheap"),
        (LABEL_ACCELERATOR_MEMORY_GIB, "lots"),
        (LABEL_OWNERSHIP, "borrowed"),
        (LABEL_ACCELERATOR, None),
        (LABEL_OWNERSHIP, None),
    ],
)
def test_node_view_is_none_for_malformed_labels(
    demo: GearshiftConfig, make_ray_resources: Resources, key: str, value: str | None
) -> None:
    declaration = declare_fleet(demo)[0]
    labels = dict(declaration.labels)
    if value is None:
        del labels[key]
    else:
        labels[key] = value
    resources = make_ray_resources(1, declaration.num_gpus, declaration.resources)
    assert node_view(labels, resources, True) is None


def test_joined_nodes_form_groups_the_config_does_not_name() -> None:
    config = GearshiftConfig.model_validate(
        {"fleet": {"node_groups": [{"name": "l4", "accelerator": "L4", "nodes": 1}]}}
    )
    joined = [
        declare_node(
            f"box-{index}",
            "h100-sxm-x8",
            accelerator("H100-SXM"),
            8,
            21.5,
            Ownership.OWNED,
            simulated=False,
        )
        for index in range(2)
    ] + [
        declare_node(
            "cpu-box",
            "cpu-box",
            cpu_accelerator(32, 128.0),
            1,
            0.4,
            Ownership.SPOT,
            simulated=False,
        ),
    ]
    views = [
        view
        for d in [*declare_group(config.fleet.node_groups[0]), *joined]
        if (view := node_view(d.labels, {"GPU": d.num_gpus, **d.resources}, True)) is not None
    ]
    groups = {g.name: g for g in groups_of_joined_nodes(config, views)}
    assert set(groups) == {"h100-sxm-x8", "cpu-box"}  # the configured l4 group is not repeated
    h100 = groups["h100-sxm-x8"]
    assert (h100.accelerator, h100.accelerators_per_node, h100.nodes) == ("H100-SXM", 8, 2)
    assert h100.node_price_per_hour() == 21.5 and not h100.simulated
    cpu = groups["cpu-box"]
    assert cpu.cpu is not None and (cpu.cpu.cores, cpu.cpu.memory_gib) == (32, 128.0)
    assert cpu.ownership is Ownership.SPOT

"""The registries: build by name, membership, and the one-line error for an unknown type."""

from __future__ import annotations

import pytest

from unigrpo_kit.registry import (
    ADVANTAGES,
    ALL_REGISTRIES,
    LOSSES,
    REGULARIZERS,
    SAMPLERS,
    UnknownComponentError,
)

REGISTERED = [
    (key, name) for key, registry in ALL_REGISTRIES.items() for name in registry.known_names()
]


def test_every_registry_lists_something() -> None:
    for key, registry in ALL_REGISTRIES.items():
        assert registry.known_names(), f"the {key} registry has no registered component"


@pytest.mark.parametrize(("key", "name"), REGISTERED, ids=[f"{k}:{n}" for k, n in REGISTERED])
def test_each_registered_name_builds_by_name(key: str, name: str) -> None:
    registry = ALL_REGISTRIES[key]
    component = registry.get(name)
    # a policy may be registered under its model's name (TinyUnifiedPolicy as "TinyUnified")
    assert name in (component.__name__, component.__name__.removesuffix("Policy"))
    try:
        built = registry.build(dict(type=name))
    except TypeError as error:  # a required constructor argument (e.g. TinyUnified's vocab_size)
        if "required" not in str(error):
            raise
        pytest.skip(f"{name} needs constructor arguments: {error}")
    assert type(built) is component


@pytest.mark.parametrize(
    ("registry", "name", "attribute", "default"),
    [
        (SAMPLERS, "FlowSDE", "noise_level", 0.7),
        (ADVANTAGES, "GroupNorm", "clip", None),
        (LOSSES, "GRPOLoss", "agg", "seq-mean-token-mean"),
        (REGULARIZERS, "VelocityMSE", "weight", 1.5e-5),
    ],
)
def test_core_components_build_by_name_with_their_defaults(
    registry, name: str, attribute: str, default: object
) -> None:
    built = registry.build(dict(type=name))
    assert type(built).__name__ == name
    assert getattr(built, attribute) == default


def test_build_passes_keyword_arguments() -> None:
    assert SAMPLERS.build(dict(type="FlowSDE", noise_level=0.3)).noise_level == 0.3
    assert LOSSES.build(dict(type="GRPOLoss", agg="token-mean")).agg == "token-mean"


def test_unknown_type_fails_with_one_line_naming_the_registry_and_the_closest_name() -> None:
    with pytest.raises(UnknownComponentError) as error:
        SAMPLERS.build(dict(type="FlowSDEE"))
    message = str(error.value)
    assert "\n" not in message
    assert "sampler" in message
    assert "FlowSDE" in message
    assert "'FlowSDEE'" in message


@pytest.mark.parametrize(("key", "typo"), [("losses", "GRPOLos"), ("advantages", "GroupNrom")])
def test_unknown_type_suggests_a_close_name_in_other_registries(key: str, typo: str) -> None:
    registry = ALL_REGISTRIES[key]
    with pytest.raises(UnknownComponentError) as error:
        registry.build(dict(type=typo))
    message = str(error.value)
    assert "\n" not in message and registry.name in message
    assert {"GRPOLos": "GRPOLoss", "GroupNrom": "GroupNorm"}[typo] in message


def test_unknown_component_error_is_a_key_error_without_quotes() -> None:
    with pytest.raises(KeyError) as error:
        LOSSES.get("Nope")
    assert not str(error.value).startswith(("'", '"'))


def test_membership() -> None:
    assert "FlowSDE" in SAMPLERS
    assert "Nope" not in SAMPLERS
    assert "GroupNorm" in ADVANTAGES
    assert "GroupNorm" not in SAMPLERS

"""The stand-in's call model is composed of one mixin per FreeSWITCH concept. Two mixins that
define the same method name either hook it on purpose (and call super()) or silently replace
one another: an eavesdrop predicate named like the state machine's "media up" action once took
the codec events off every SIP leg. This keeps every shared name deliberate."""

import inspect

from channelsd.standin.channels.base import ModelBase
from channelsd.standin.channels.model import CallModel


def test_a_method_defined_by_two_mixins_is_a_hook_that_calls_the_next_one() -> None:
    mixins = [c for c in CallModel.__mro__ if c not in (CallModel, ModelBase, object)]
    owners: dict[str, list[type]] = {}
    for cls in mixins:
        for name, value in vars(cls).items():
            method = callable(value) or isinstance(value, staticmethod | classmethod | property)
            if method and not (name.startswith("__") and name.endswith("__")):
                owners.setdefault(name, []).append(cls)
    for name, classes in owners.items():
        if len(classes) < 2:
            continue
        # All but the last (the one every hook ends at) must pass the call on.
        for cls in classes[:-1]:
            source = inspect.getsource(vars(cls)[name])
            assert f"super().{name}(" in source, (
                f"{cls.__name__}.{name} hides {classes[-1].__name__}.{name}: rename one, "
                "or make it a hook that calls super()"
            )

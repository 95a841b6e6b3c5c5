"""Which provider and model a turn uses: the one place that decides (the session's pin, else the live default)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import msgspec

from actors.providers.base import Provider

Pin = tuple[str | None, str | None]  # a session's own (provider, model); None: follow the gateway default
NO_PIN: Pin = (None, None)


class Chosen(msgspec.Struct, frozen=True):
    """The outcome for one turn: the provider by name, and the model to ask for (None: the provider's own)."""

    name: str
    provider: Provider
    model: str | None

    @property
    def model_name(self) -> str:
        """The model the turn runs on, naming the provider's own default when no model was chosen."""
        return self.model or self.provider.info().default_model or ""


Choose = Callable[[Pin], Chosen]


class AgentChoice(msgspec.Struct):
    """The gateway default (`provider`: the config file's, until `POST /api/app-config/llm`) and the providers.

    Every reader (the session actor at a turn's start, the REST views, `/ws`'s `auth_ok`) asks `resolve`, so
    what a session reports and what its next turn runs on cannot disagree (issue 13 item 3, issue 15 item 1).
    """

    provider: str
    providers: Mapping[str, Provider]

    def resolve(self, pin: Pin = NO_PIN) -> Chosen:
        """The pin where set; else the default as it is now. A pin to a provider no longer configured is ignored
        whole (its model means nothing to another provider); a model pinned alone applies to the default."""
        name, model = pin
        if name is not None and name in self.providers:
            return Chosen(name, self.providers[name], model)
        if name is not None:
            model = None
        return Chosen(self.provider, self.providers[self.provider], model)


def following(provider: Callable[[], Provider], name: str = "default") -> Choose:
    """A chooser for a router that knows one provider (tests): pins of a provider name are not honoured."""
    return lambda pin: Chosen(name, provider(), pin[1] if pin[0] is None else None)

"""What the delivery worker process needs of the configuration: each profile's webhooks (secrets
included) and command, resolved as Config resolves them, sent down its pipe as JSON at the start and
after each reload. The worker has no config file of its own to read: the daemon's may come from the
environment or be embedded."""

from __future__ import annotations

from typing import Any

from ..config import CommandHookConfig, Config, WebhookConfig

DEFAULT = "default"


def settings_of(config: Config) -> dict[str, Any]:
    """{profile: {"webhooks": [...], "command": {...} | None}}, "default" for every other profile."""

    def one(profile: str) -> dict[str, Any]:
        command = config.command_hook(profile)
        return {
            "webhooks": [
                {
                    **hook.model_dump(exclude={"secret"}),
                    "secret": hook.secret.get_secret_value() if hook.secret else None,
                }
                for hook in config.webhooks(profile)
            ],
            "command": command.model_dump() if command is not None else None,
        }

    return {profile: one(profile) for profile in {DEFAULT, *config.profiles}}


def has_targets(config: Config) -> bool:
    """Whether any profile has a webhook or a command."""
    return any(entry["webhooks"] or entry["command"] for entry in settings_of(config).values())


class Settings:
    """The worker's side: answers as Config.webhooks and Config.command_hook do."""

    def __init__(self, document: dict[str, Any] | None = None) -> None:
        self._webhooks: dict[str, list[WebhookConfig]] = {}
        self._commands: dict[str, CommandHookConfig | None] = {}
        for profile, entry in (document or {}).items():
            self._webhooks[profile] = [WebhookConfig.model_validate(hook) for hook in entry.get("webhooks") or []]
            command = entry.get("command")
            self._commands[profile] = CommandHookConfig.model_validate(command) if command else None

    def webhooks(self, profile: str) -> list[WebhookConfig]:
        return self._webhooks.get(profile, self._webhooks.get(DEFAULT, []))

    def command_hook(self, profile: str) -> CommandHookConfig | None:
        return self._commands.get(profile, self._commands.get(DEFAULT))

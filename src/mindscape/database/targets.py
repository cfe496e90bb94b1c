"""Decide where to connect from the settings: an external URL, or the embedded server."""

from __future__ import annotations

from mindscape.config.settings import Settings
from mindscape.database.embedded import start_embedded
from mindscape.database.urls import Targets


async def resolve_targets(settings: Settings) -> Targets:
    if settings.database_url is None:
        return await start_embedded(settings.data_dir)
    runtime = settings.database_url.get_secret_value()
    owner = settings.owner_database_url.get_secret_value() if settings.owner_database_url else runtime
    return Targets(runtime=runtime, owner=owner, embedded=False)

"""Argument types shared by several tools: one spelling of each, as short as it can be exactly.

Descriptions are paid for by every agent on every turn (app.schemas): an argument whose name,
type and limits say what it is has none.
"""

# No `from __future__ import annotations`: the SDK reads these annotations at registration.
import uuid
from typing import Annotated

from pydantic import Field

from mindscape.app.validation import record_id

# With max_length=64 this accepts exactly the slugs config.settings.SLUG_PATTERN does (no dash at
# either end: a word boundary there), in 17 characters instead of 41; tests/app/test_tool_list.py
# checks they agree.
SLUG_ARGUMENT_PATTERN = r"^\b[a-z0-9-]+\b$"

Slug = Annotated[str, Field(pattern=SLUG_ARGUMENT_PATTERN, max_length=64)]
CampaignId = Annotated[uuid.UUID, record_id("campaign", "create_campaign or list_campaigns")]
TaskId = Annotated[uuid.UUID, record_id("task", "create_task or list_tasks")]
MemoryId = Annotated[uuid.UUID, record_id("memory", "remember or recall")]
Version = Annotated[int, Field(ge=1, le=2_147_483_647)]  # the tools' descriptions say what it is
Limit = Annotated[int, Field(ge=1, le=100)]
Cursor = Annotated[str, Field(max_length=512)]  # a page's next_cursor

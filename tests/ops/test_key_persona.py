"""API keys bound to a persona (migration 0009): the binding reaches the verified token."""

from __future__ import annotations

import pytest

from mindscape.app.identity import PERSONA, caller_from_token
from mindscape.database.pool import create_pool
from mindscape.database.targets import Targets
from mindscape.errors import NotFound
from mindscape.ops import keys as key_ops
from mindscape.tenancy.caller import Caller
from mindscape.transports.http.auth.api_keys import ApiKeyVerifier

pytestmark = [pytest.mark.anyio, pytest.mark.office("ada", prefix="keyp")]


async def test_a_key_acts_as_its_persona(office: Caller, targets: Targets) -> None:
    with pytest.raises(NotFound, match="no persona 'nobody'"):
        await key_ops.create_key(
            targets, tenant_slug=office.tenant_slug, name="", scope="write", lifetime=None, persona="nobody"
        )
    key, token = await key_ops.create_key(
        targets, tenant_slug=office.tenant_slug, name="", scope="write", lifetime=None, persona="ada"
    )
    plain, plain_token = await key_ops.create_key(
        targets, tenant_slug=office.tenant_slug, name="", scope="read", lifetime=None
    )
    pool = await create_pool(targets.runtime, min_size=1, max_size=1, pooled=targets.pooled)
    try:
        verifier = ApiKeyVerifier(pool)
        bound = await verifier.verify_token(token)
        unbound = await verifier.verify_token(plain_token)
    finally:
        await pool.close()
    assert (key.persona, plain.persona) == ("ada", None)
    assert (bound.claims or {})[PERSONA] == "ada"
    assert caller_from_token(bound).persona == "ada"
    assert caller_from_token(unbound).persona is None

"""Password hashing (argon2id, at most `auth.hash_concurrency` at once) and who counts as the owner."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from gateway.errors import OwnerOnlyError
from gateway.http.credentials import PasswordHasher
from gateway.http.principal import ADMIN_TOKEN, Principal, require_owner


async def test_hashes_run_at_most_concurrency_at_once() -> None:
    hasher = PasswordHasher(2)
    results: list[str] = []

    async def one(i: int) -> None:
        results.append(await hasher.hash(f"password number {i}"))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for i in range(6):
                nursery.start_soon(one, i)
            # Every task has reached the limiter: two hash in worker threads, the others wait their turn.
            await trio.testing.wait_all_tasks_blocked()
            stats = hasher.statistics()
            assert stats.total_tokens == 2 and stats.borrowed_tokens == 2
            assert stats.tasks_waiting >= 1
    assert len(results) == 6 and all(h.startswith("$argon2id$") for h in results)
    assert hasher.statistics().borrowed_tokens == 0


async def test_verify_accepts_the_password_only_and_spends_a_hash_on_unknown_users() -> None:
    hasher = PasswordHasher(1)
    with trio.fail_after(60):
        stored = await hasher.hash("correct horse battery")
        assert await hasher.verify(stored, "correct horse battery")
        assert not await hasher.verify(stored, "wrong horse battery")
        assert not await hasher.verify(None, "correct horse battery")
        assert not await hasher.verify("not-a-hash", "x")


def test_only_the_gateway_token_is_the_owner() -> None:
    assert ADMIN_TOKEN.is_owner and ADMIN_TOKEN.is_admin
    admin_account = Principal("u1", "super_admin")
    assert admin_account.is_admin and not admin_account.is_owner
    assert not Principal("u2", "user").is_owner
    require_owner(ADMIN_TOKEN, "running a command")
    with pytest.raises(OwnerOnlyError) as caught:
        require_owner(admin_account, "running a command")
    assert caught.value.status == 403 and caught.value.code == "OWNER_ONLY"
    assert "gateway token" in caught.value.message

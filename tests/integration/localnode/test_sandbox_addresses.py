"""Two `kaito local` agents on one machine share the host's route table: the pod address one of
them routes first is refused to the other, which then takes the next free one."""

from __future__ import annotations

import uuid

import pytest

from kaito.localnode.sandbox import AddressPool, AddressTaken, PodNetwork


def _link() -> str:
    return "kt" + uuid.uuid4().hex[:12]


async def test_an_address_routed_by_another_agent_is_refused_and_skipped() -> None:
    pool_a, pool_b = AddressPool(), AddressPool()
    ip = pool_a.take()
    first = await PodNetwork.create(ip, _link())
    try:
        # agent B checked the route table before A's route existed (the race): it holds the same address
        with pytest.raises(AddressTaken, match=ip):
            await PodNetwork.create(ip, _link())
        # with A's route in place, B's pool hands out another address, which works
        other = pool_b.take()
        assert other != ip
        second = await PodNetwork.create(other, _link())
        await second.destroy()
    finally:
        await first.destroy()
        pool_a.give_back(ip)

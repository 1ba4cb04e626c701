"""The agent's REST client (`mizzen.client.aio.AsyncApiClient`) fails over between control-plane replicas
(real HTTP servers on unix sockets)."""
from __future__ import annotations

import asyncio

from mizzen.agent.registration import instance_of
from mizzen.client.aio import AsyncApiClient
from mizzen.agent.config import AgentConfig

from .helpers import FakeApi


def test_calls_go_to_the_next_replica_when_one_is_down(tmp_path):
    async def main() -> None:
        a, b = FakeApi(str(tmp_path / "api.sock")), FakeApi(str(tmp_path / "api-1.sock"))
        await a.start()
        await b.start()
        cfg = AgentConfig.from_dict({"pod": "web-0", "workDir": str(tmp_path), "ports": [80],
                                     "apiAddress": [f"unix:{a.socket_path}", f"unix:{b.socket_path}"]})
        client = AsyncApiClient(cfg.api_addresses)
        try:
            await client.put_instance(instance_of(cfg))
            assert [e[1] for e in a.events] == ["PUT"] and b.events == []
            await a.stop()  # replica 0 dies (its socket file may stay: connection refused)
            await client.put_instance(instance_of(cfg), timeout=3.0)
            await client.delete_instance(cfg.instance_id, timeout=3.0)
            assert [e[1] for e in b.events] == ["PUT", "DELETE"]
            assert [e[1] for e in a.events] == ["PUT"]
        finally:
            await client.close()
            await b.stop()

    asyncio.run(main())

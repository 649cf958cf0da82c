"""An A2A 0.3 client, run by `test_a2a_v03.py` with a2a-sdk 0.3 in an environment of its own.

    python a2a_v03_client.py BASE_URL TOKEN SKILL JSON

Resolves the agent's card with the 0.3 resolver (which validates it against the 0.3 card
model), builds a client from it with the 0.3 factory, sends one message with a data part and
prints one JSON object: the card's 0.3 fields and the events the client yielded.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid

import httpx
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.types import DataPart, Message, Part, Role


async def main(base: str, token: str, skill: str, data: object) -> None:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"},
                                 timeout=30) as http:
        card = await A2ACardResolver(http, base).get_agent_card()
        client = ClientFactory(ClientConfig(httpx_client=http, streaming=False)).create(card)
        message = Message(role=Role.user, message_id=uuid.uuid4().hex,
                          parts=[Part(root=DataPart(data=data))])  # type: ignore[arg-type]
        events = []
        async for event in client.send_message(message, request_metadata={"skill": skill}):
            item = event[0] if isinstance(event, tuple) else event
            events.append(item.model_dump(mode="json", exclude_none=True))
        print(json.dumps({"card": {"url": card.url, "protocolVersion": card.protocol_version,
                                   "preferredTransport": card.preferred_transport,
                                   "name": card.name,
                                   "skills": [s.id for s in card.skills]},
                          "events": events}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])))

"""A2A tasks kept in the hub's store, so they outlive a hub restart.

An a2a-sdk `TaskStore` over the store contract's KV: one bucket, `a2a-tasks`, keys
`<served agent>/<owner>/<task id>`, so every task is scoped to the identity that created it (the
bearer token's agent) exactly as a2a-sdk's own stores scope by owner. Listing reuses a2a-sdk's
in-memory filtering and paging over the owner's tasks, so ListTasks behaves the same.
"""

from __future__ import annotations

from a2a.server.context import ServerCallContext
from a2a.server.owner_resolver import resolve_user_scope
from a2a.server.tasks import InMemoryTaskStore, TaskStore
from a2a.types import ListTasksRequest, ListTasksResponse, Task
from google.protobuf.json_format import MessageToJson, Parse

from ..store import KV

TASKS_BUCKET = "a2a-tasks"


class StoredTaskStore(TaskStore):
    def __init__(self, kv: KV, agent: str) -> None:
        self.kv = kv
        self.agent = agent

    def _key(self, context: ServerCallContext, task_id: str = "") -> str:
        return f"{self.agent}/{resolve_user_scope(context)}/{task_id}"

    async def save(self, task: Task, context: ServerCallContext) -> None:
        await self.kv.put(self._key(context, task.id), MessageToJson(task).encode())

    async def get(self, task_id: str, context: ServerCallContext) -> Task | None:
        if not task_id or "/" in task_id:
            return None
        entry = await self.kv.get(self._key(context, task_id))
        return Parse(entry.value, Task()) if entry and entry.value else None

    async def list(self, params: ListTasksRequest,
                   context: ServerCallContext) -> ListTasksResponse:
        view = InMemoryTaskStore()
        for entry in await self.kv.items(self._key(context)):
            await view.save(Parse(entry.value or b"{}", Task()), context)
        return await view.list(params, context)

    async def delete(self, task_id: str, context: ServerCallContext) -> None:
        if await self.get(task_id, context) is not None:
            await self.kv.delete(self._key(context, task_id))

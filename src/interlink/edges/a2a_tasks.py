"""A2A tasks kept in the hub's store, so they outlive a hub restart.

An a2a-sdk `TaskStore` over the store contract's KV: one bucket, `a2a-tasks`, keys
`<served agent>/<owner>/<task id>`, so every task is scoped to the identity that created it (the
bearer token's agent) exactly as a2a-sdk's own stores scope by owner. Listing reuses a2a-sdk's
in-memory filtering and paging over the owner's tasks, so ListTasks behaves the same.
"""

from __future__ import annotations

import time

from a2a.server.context import ServerCallContext
from a2a.server.owner_resolver import resolve_user_scope
from a2a.server.tasks import InMemoryTaskStore, TaskStore
from a2a.types import ListTasksRequest, ListTasksResponse, Message, Part, Role, Task, TaskState
from google.protobuf.json_format import MessageToJson, Parse

from ..store import KV

TASKS_BUCKET = "a2a-tasks"


RUNNING = (TaskState.TASK_STATE_SUBMITTED, TaskState.TASK_STATE_WORKING)


class StoredTaskStore(TaskStore):
    """Tasks in the store. A task is written when it is created and whenever it leaves the
    running states (completed, failed, input required, ...); the updates while it runs
    (WORKING, artifact chunks) are kept in memory and folded into the next write. After a
    crash the stored task is the one that was created, still running: `get` reports it failed
    (nobody is left to finish it) — what it would have reported with every update written."""

    def __init__(self, kv: KV, agent: str, *, started: float | None = None) -> None:
        self.kv = kv
        self.agent = agent
        self.started = time.time() if started is None else started
        """When this hub process started: a task still running from before it has no one
        left to finish it, and is reported failed."""
        self._running: dict[str, Task] = {}
        """Running tasks whose latest update is not written yet, by key."""

    def _key(self, context: ServerCallContext, task_id: str = "") -> str:
        return f"{self.agent}/{resolve_user_scope(context)}/{task_id}"

    async def save(self, task: Task, context: ServerCallContext) -> None:
        key = self._key(context, task.id)
        if task.status.state == TaskState.TASK_STATE_WORKING and (
                key in self._running or await self.kv.get(key) is not None):
            latest = Task()
            latest.CopyFrom(task)
            self._running[key] = latest  # written with the task's next state change
            return
        self._running.pop(key, None)
        await self.kv.put(key, MessageToJson(task).encode())

    async def get(self, task_id: str, context: ServerCallContext) -> Task | None:
        if not task_id or "/" in task_id:
            return None
        running = self._running.get(self._key(context, task_id))
        if running is not None:
            task = Task()
            task.CopyFrom(running)
            return task
        entry = await self.kv.get(self._key(context, task_id))
        if entry is None or not entry.value:
            return None
        task = Parse(entry.value, Task())
        if task.status.state in RUNNING and entry.ts < self.started:
            task = await self._orphaned(task, context)
        return task

    async def _orphaned(self, task: Task, context: ServerCallContext) -> Task:
        task.status.state = TaskState.TASK_STATE_FAILED
        task.status.message.CopyFrom(Message(
            role=Role.ROLE_AGENT, message_id=f"{task.id}:restart", task_id=task.id,
            context_id=task.context_id, parts=[Part(text=(
                "the hub restarted while this task ran, so nobody is left to finish it; its "
                "mesh call may still have completed: send the message again"))]))
        task.status.timestamp.GetCurrentTime()
        await self.save(task, context)
        return task

    async def list(self, params: ListTasksRequest,
                   context: ServerCallContext) -> ListTasksResponse:
        view = InMemoryTaskStore()
        for entry in await self.kv.items(self._key(context)):
            running = self._running.get(entry.key)
            task = running if running is not None else Parse(entry.value or b"{}", Task())
            if running is None and task.status.state in RUNNING and entry.ts < self.started:
                task = await self._orphaned(task, context)
            await view.save(task, context)
        return await view.list(params, context)

    async def delete(self, task_id: str, context: ServerCallContext) -> None:
        self._running.pop(self._key(context, task_id), None)
        if await self.get(task_id, context) is not None:
            await self.kv.delete(self._key(context, task_id))

"""An OpenAPI 3.1 description of the hub's HTTP surface, served at `/openapi.json`: health and
identity, Agent Cards, the A2A edge (JSON-RPC and the REST binding's send and get), the ACP
edge's runs and agents, and the operator's endpoint. It describes what a client may send; the
protocols' own specifications (A2A 1.0, ACP) remain the reference for their bodies. The test
suite drives the hub from it with schemathesis (`tests/e2e/test_openapi_fuzz.py`)."""

from __future__ import annotations

from typing import Any

_AGENT = {"name": "agent", "in": "path", "required": True,
          "schema": {"type": "string", "pattern": "^[a-z][a-z0-9_-]{0,62}$"}}
_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
_ERROR = {"description": "refused, with the reason"}
_JSON_OBJECT = {"type": "object"}

_PART = {"type": "object", "properties": {
    "text": {"type": "string"}, "data": {}, "url": {"type": "string"},
    "mediaType": {"type": "string"}}}
_MESSAGE = {"type": "object", "required": ["messageId", "role", "parts"], "properties": {
    "messageId": {"type": "string"}, "role": {"enum": ["ROLE_USER", "ROLE_AGENT"]},
    "parts": {"type": "array", "items": _PART}, "taskId": {"type": "string"},
    "contextId": {"type": "string"}}}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Interlink hub", "version": "1",
             "description": "The hub's HTTP edges. Agents speak the WebSocket protocol at /ws "
                            "(not described here)."},
    "components": {"securitySchemes": {
        "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                   "description": "`interlink token AGENT` (edges) or an operator token"}}},
    "paths": {
        "/healthz": {"get": {"summary": "Liveness, connections, tasks and the policy in "
                                        "force (SHA-256 of mesh.yaml)",
                             "responses": {"200": {"description": "ok"}}}},
        "/.well-known/interlink-hub.json": {"get": {
            "summary": "The hub's identity and public key",
            "responses": {"200": {"description": "ok"}}}},
        "/.well-known/agent-card.json": {"get": {
            "summary": "The hub's own A2A card (every agent.skill)",
            "responses": {"200": {"description": "ok"}}}},
        "/a2a/{agent}/.well-known/agent-card.json": {"get": {
            "summary": "An agent's signed A2A card", "parameters": [_AGENT],
            "responses": {"200": {"description": "ok"}, "404": _ERROR}}},
        "/a2a/{agent}": {"post": {
            "summary": "A2A JSON-RPC (SendMessage, GetTask, ...)", "parameters": [
                _AGENT, {"name": "A2A-Version", "in": "header", "required": False,
                         "schema": {"type": "string"}}],
            "security": _BEARER,
            "requestBody": _json_body({
                "type": "object", "required": ["jsonrpc", "method"], "properties": {
                    "jsonrpc": {"const": "2.0"}, "id": {"type": ["string", "integer"]},
                    "method": {"type": "string"},
                    "params": {"type": "object", "properties": {
                        "message": _MESSAGE, "metadata": _JSON_OBJECT,
                        "id": {"type": "string"}}}}}),
            "responses": {"200": {"description": "a JSON-RPC result or error"},
                          "401": _ERROR, "404": _ERROR, "415": _ERROR}}},
        "/a2a/{agent}/message:send": {"post": {
            "summary": "A2A REST binding: send a message", "parameters": [_AGENT],
            "security": _BEARER,
            "requestBody": _json_body({"type": "object", "required": ["message"],
                                       "properties": {"message": _MESSAGE,
                                                      "metadata": _JSON_OBJECT}}),
            "responses": {"200": {"description": "a task or a message"}, "400": _ERROR,
                          "401": _ERROR, "404": _ERROR}}},
        "/a2a/{agent}/tasks/{task}": {"get": {
            "summary": "A2A REST binding: a task", "security": _BEARER,
            "parameters": [_AGENT, {"name": "task", "in": "path", "required": True,
                                    "schema": {"type": "string"}}],
            "responses": {"200": {"description": "the task"}, "401": _ERROR,
                          "404": _ERROR}}},
        "/acp/ping": {"get": {"summary": "ACP ping",
                              "responses": {"200": {"description": "ok"}}}},
        "/acp/agents": {"get": {"summary": "ACP agent manifests",
                                "responses": {"200": {"description": "ok"}}}},
        "/acp/agents/{agent}": {"get": {
            "summary": "One ACP agent manifest", "parameters": [_AGENT],
            "responses": {"200": {"description": "ok"}, "404": _ERROR}}},
        "/acp/runs": {"post": {
            "summary": "Start an ACP run (a mesh call)", "security": _BEARER,
            "requestBody": _json_body({
                "type": "object", "required": ["agent_name", "input"], "properties": {
                    "agent_name": {"type": "string"},
                    "mode": {"enum": ["sync", "async", "stream"]},
                    "session_id": {"type": "string"},
                    "input": {"type": "array", "items": {"type": "object", "properties": {
                        "role": {"type": "string"},
                        "parts": {"type": "array", "items": {"type": "object", "properties": {
                            "content": {"type": "string"},
                            "content_type": {"type": "string"}}}}}}}}}),
            "responses": {"200": {"description": "the run"}, "202": {"description": "started"},
                          "401": _ERROR, "403": _ERROR, "404": _ERROR, "409": _ERROR,
                          "422": _ERROR}}},
        "/acp/runs/{run}": {"get": {
            "summary": "An ACP run", "security": _BEARER,
            "parameters": [{"name": "run", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"200": {"description": "the run"}, "401": _ERROR, "404": _ERROR}}},
        "/admin/agents/{agent}/clear-taint": {"post": {
            "summary": "Forget an agent's context taint (operator; audited)",
            "parameters": [_AGENT], "security": _BEARER,
            "requestBody": _json_body({"type": "object", "properties": {
                "by": {"type": "string"}, "reason": {"type": "string"}}}),
            "responses": {"200": {"description": "cleared"}, "400": _ERROR, "401": _ERROR,
                          "403": _ERROR, "404": _ERROR, "413": _ERROR}}},
    },
}

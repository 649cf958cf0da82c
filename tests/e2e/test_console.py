"""The web console in a real browser: Debian's chromium, headless, driven by playwright,
against a running hub with traffic — agents, a conversation's diagram, a refused flow, a held
call approved from the page (the caller gets its answer; the audit names the console) — plus
what a stranger or a hostile agent can send it. Screenshots go to `test-artifacts/`."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from interlink import CallError, GateDenied, connect
from interlink.server import RunningHub, background_hub

from ..helpers import audit_records
from ..security.test_overrides import build, team

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
HOSTILE = '<img src=x onerror="window.pwned=1">"><script>window.pwned=2</script>'


@pytest.fixture
async def busy(tmp_path: Path) -> AsyncIterator[tuple[RunningHub, Any, asyncio.Future[Any]]]:
    """A hub with traffic: calls, a refusal, a held payment, and an agent whose card says
    something hostile."""
    home = build(tmp_path / "home")
    async with background_hub(home) as running:
        agents = team(home, running.url)
        outsider = agents[2]
        outsider.description = HOSTILE
        async with agents[0], agents[1], outsider, connect(
                "reader", credential=home.credential_path("reader"), hub=running.url) as reader:
            assert await reader.call("outsider", "note", None, conversation="note-1") == "noted"
            invoice = await reader.call("web", "fetch", {}, conversation="bill-1")
            with pytest.raises(GateDenied):
                await reader.call("officer", "anything", None, conversation="denied-1")
            paying = asyncio.ensure_future(reader.call(
                "bank", "pay", invoice, conversation="bill-1", call_id="pay-1", timeout=60))

            async def held() -> bool:
                return any(r.id == "pay-1" for r in await running.hub.calls.held())
            for _ in range(100):
                if await held():
                    break
                await asyncio.sleep(0.1)
            assert running.hub.traces is not None
            await running.hub.traces.flush()
            yield running, home, paying


def console_url(running: RunningHub) -> str:
    return f"http://127.0.0.1:{running.port}/console"


async def test_the_console_shows_the_mesh_and_approves_a_held_call(
        busy: tuple[RunningHub, Any, asyncio.Future[Any]]) -> None:
    from playwright.async_api import async_playwright
    running, home, paying = busy
    ARTIFACTS.mkdir(exist_ok=True)
    dialogs: list[str] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM,
                                          args=["--no-sandbox", "--headless=new"])
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1800})
            page.on("dialog", lambda d: (dialogs.append(d.message), asyncio.ensure_future(
                d.dismiss())))
            await page.goto(f"{console_url(running)}#token={running.hub.console_token}")
            # the token leaves the address bar
            await page.wait_for_selector("#graph [data-agent='bank']", timeout=15_000)
            assert "token=" not in page.url
            for agent in ("reader", "bank", "web", "outsider"):
                assert await page.locator(f"#graph [data-agent='{agent}']").count() == 1
            await page.wait_for_selector("#refused tbody tr", timeout=10_000)
            refused = await page.locator("#refused tbody").inner_text()
            assert "officer" in refused and "authorize" in refused
            held = page.locator("#held tbody tr", has_text="bank.pay")
            await held.wait_for(timeout=10_000)
            assert "needs_approval" in await held.inner_text()
            await page.wait_for_selector("#feed tbody tr", timeout=10_000)
            assert (await page.locator("#audit").inner_text()).startswith("✓ verified")
            await page.screenshot(path=str(ARTIFACTS / "console-overview.png"), full_page=True)

            # a conversation, as a sequence diagram
            await page.locator("#feed tbody tr[data-conversation='note-1']").first.click()
            await page.wait_for_selector("#diagram text.step", timeout=10_000)
            steps = await page.locator("#diagram text.step").all_text_contents()
            assert "call note" in steps and "reply" in steps
            await page.screenshot(path=str(ARTIFACTS / "console-conversation.png"),
                                  full_page=True)

            # approve the held payment from the page: the caller gets its answer
            await held.locator("button.approve").click()
            result = await asyncio.wait_for(paying, 20)
            assert result["paid"] == "ACME Ltd" and "approved:console" in result["trusted_by"]
            await page.wait_for_selector("#held-empty:not([hidden])", timeout=10_000)

            # hostile strings are shown as text, never run or parsed
            title = await page.locator("#graph [data-agent='outsider'] title").text_content()
            assert HOSTILE in title
            assert await page.evaluate("window.pwned") is None
            assert await page.locator("#graph img, #main img, #main script").count() == 0
            assert dialogs == []
        finally:
            await browser.close()
    await running.hub.durable()
    decided = [r for r in await audit_records(home) if r.get("event") == "approval"]
    assert decided and decided[-1]["by"] == "console" and decided[-1]["approved"] is True


async def test_the_console_api_refuses_strangers_and_bad_requests(
        busy: tuple[RunningHub, Any, asyncio.Future[Any]]) -> None:
    running, _, paying = busy
    base = f"{console_url(running)}/api"
    async with httpx.AsyncClient(timeout=10) as http:
        page = await http.get(console_url(running))
        assert page.status_code == 200 and "content-security-policy" in page.headers
        assert "script-src 'self'" in page.headers["content-security-policy"]
        bare = await http.get(f"{base}/overview")
        assert bare.status_code == 401 and "log in" in bare.json()["error"]["reason"]
        wrong = await http.get(f"{base}/overview", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "bad_token"
        good = {"Authorization": f"Bearer {running.hub.console_token}"}
        missing = await http.get(f"{base}/conversation/no-such-thing", headers=good)
        assert missing.status_code == 404 and "no spans" in missing.json()["error"]["reason"]
        hostile = await http.get(f"{base}/conversation/%3Cscript%3E", headers=good)
        assert hostile.status_code == 400
        bad = await http.post(f"{base}/held/pay-1", headers=good, content=b"{not json")
        assert bad.status_code == 400
        odd = await http.post(f"{base}/held/pay-1", headers=good,
                              content=json.dumps({"decision": "maybe"}))
        assert odd.status_code == 400
        stranger = await http.post(f"{base}/held/pay-1", content=json.dumps(
            {"decision": "approve"}))
        assert stranger.status_code == 401
        assert not paying.done()  # none of that decided anything
        nothing = await http.post(f"{base}/held/not-held", headers=good,
                                  content=json.dumps({"decision": "refuse"}))
        assert nothing.status_code == 409
        refused = await http.post(f"{base}/held/pay-1", headers=good,
                                  content=json.dumps({"decision": "refuse", "reason": "no"}))
        assert refused.status_code == 200
        asset = await http.get(f"{console_url(running)}/assets/..%2Fhub.py")
        assert asset.status_code == 404
    with pytest.raises(CallError, match="console refused this call: no"):
        await asyncio.wait_for(paying, 20)


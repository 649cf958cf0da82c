"""Two agents of a blog team, run against a hub started with `interlink serve`.

    interlink init
    interlink agent add ideator --call drafter.draft
    interlink agent add drafter --call editor.review
    interlink agent add editor
    interlink serve &                       # the hub
    interlink example blog-team &           # the drafter and the editor (this file)
    interlink call ideator drafter draft '{"topic": "agent meshes"}'

`interlink example blog-team --source > blog_team.py` gives a copy to change; run it with
`python blog_team.py` (the credentials come from `$INTERLINK_HOME`, else `./.interlink`).
"""

from __future__ import annotations

import asyncio
import sys

from pydantic import BaseModel

from interlink import Agent, GateDenied, SkillContext


class DraftRequest(BaseModel):
    topic: str


class Draft(BaseModel):
    title: str
    text: str
    review: dict[str, str]


class ReviewRequest(BaseModel):
    text: str


class Review(BaseModel):
    verdict: str


drafter = Agent("drafter", description="Writes drafts and gets them reviewed.")
editor = Agent("editor", description="Reviews drafts.")


@drafter.skill("draft", input_schema=DraftRequest, output_schema=Draft)
async def draft(ctx: SkillContext, req: DraftRequest) -> Draft:
    """Write a short draft on a topic and have the editor review it."""
    text = f"{req.topic.title()}: why agents need a mesh to talk to each other."
    review = await ctx.call("editor", "review", {"text": text})
    return Draft(title=req.topic.title(), text=text, review=review)


@editor.skill("review", input_schema=ReviewRequest, output_schema=Review)
async def review(ctx: SkillContext, req: ReviewRequest) -> Review:
    """Approve short texts; ask for cuts on long ones."""
    return Review(verdict="approved" if len(req.text) < 400 else "cut it down")


async def main() -> None:
    print("drafter and editor: joining the mesh (waiting for the hub if it is not up yet); "
          "Ctrl-C stops them", flush=True)
    await asyncio.gather(drafter.serve_forever(), editor.serve_forever())


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    except GateDenied as exc:  # the hub will not take one of them (back): say why, exit 1
        print(f"blog team: stopped: {exc}", file=sys.stderr)
        raise SystemExit(1) from None

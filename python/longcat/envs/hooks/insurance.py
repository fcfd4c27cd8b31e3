"""Insurance hooks: adjuster assignment keeps the adjuster's case count in step; paying a claim
schedules a payout of exactly the approved amount."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import ToolError, register_hook

if TYPE_CHECKING:  # annotations only: hooks need not import the runtime
    from ..toolgen import ToolContext


@register_hook("insurance.assign_adjuster")
def assign_adjuster(ctx: ToolContext, args: dict) -> dict:
    adj = ctx.require("adjuster", args["adjuster_id"])
    if adj["open_cases"] >= 50:
        raise ToolError("the adjuster's queue is full")
    ctx.update("adjuster", adj["adjuster_id"], {"open_cases": adj["open_cases"] + 1})
    return ctx.update("claim", args["claim_id"], {"adjuster_id": adj["adjuster_id"], "status": "under_review"})


@register_hook("insurance.pay_claim")
def pay_claim(ctx: ToolContext, args: dict) -> dict:
    claim = ctx.require("claim", args["claim_id"])
    if claim["amount_approved"] is None:
        raise ToolError("the claim has no approved amount")
    ctx.update("claim", claim["claim_id"], {"status": "paid"})
    return ctx.insert("payout", {"claim_id": claim["claim_id"], "amount": claim["amount_approved"],
                                 "method": args["method"], "status": "scheduled"})

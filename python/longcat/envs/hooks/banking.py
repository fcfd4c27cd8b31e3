"""Banking hooks: money movements that change several rows at once (two balances and a transfer
row, a loan and its account) and refuse what the balance cannot cover."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import ToolError, register_hook

if TYPE_CHECKING:  # annotations only: hooks need not import the runtime
    from ..toolgen import ToolContext


def _debit(ctx: ToolContext, account: dict, amount: float) -> None:
    if account["status"] != "open":
        raise ToolError(f"account {account['account_id']} is not open")
    if account["balance"] < amount:
        raise ToolError(f"insufficient funds in account {account['account_id']}")
    ctx.update("account", account["account_id"], {"balance": account["balance"] - amount})


@register_hook("banking.internal_transfer")
def internal_transfer(ctx: ToolContext, args: dict) -> dict:
    src = ctx.require("account", args["from_account_id"])
    dst = ctx.require("account", args["to_account_id"])
    if src["account_id"] == dst["account_id"]:
        raise ToolError("the two accounts are the same")
    _debit(ctx, src, args["amount"])
    dst = ctx.require("account", dst["account_id"])
    ctx.update("account", dst["account_id"], {"balance": dst["balance"] + args["amount"]})
    return ctx.insert("transfer", {"from_account_id": src["account_id"], "to_account_id": dst["account_id"],
                                   "payee_id": None, "amount": args["amount"], "memo": args.get("memo"),
                                   "status": "completed", "created_at": ctx.now})


@register_hook("banking.pay_payee")
def pay_payee(ctx: ToolContext, args: dict) -> dict:
    src = ctx.require("account", args["from_account_id"])
    payee = ctx.require("payee", args["payee_id"])
    _debit(ctx, src, args["amount"])
    return ctx.insert("transfer", {"from_account_id": src["account_id"], "to_account_id": None,
                                   "payee_id": payee["payee_id"], "amount": args["amount"],
                                   "memo": args.get("memo"), "status": "completed", "created_at": ctx.now})


@register_hook("banking.reverse_transfer")
def reverse_transfer(ctx: ToolContext, args: dict) -> dict:
    """Credits the source account back; an internal transfer is also taken back from its target."""
    t = ctx.require("transfer", args["transfer_id"])
    if t["to_account_id"] is not None:
        dst = ctx.require("account", t["to_account_id"])
        if dst["balance"] < t["amount"]:
            raise ToolError("the receiving account cannot cover the reversal")
        ctx.update("account", dst["account_id"], {"balance": dst["balance"] - t["amount"]})
    src = ctx.require("account", t["from_account_id"])
    ctx.update("account", src["account_id"], {"balance": src["balance"] + t["amount"]})
    return ctx.update("transfer", t["transfer_id"], {"status": "reversed"})


@register_hook("banking.disburse_loan")
def disburse_loan(ctx: ToolContext, args: dict) -> dict:
    loan = ctx.require("loan", args["loan_id"])
    acct = ctx.require("account", loan["account_id"])
    ctx.update("account", acct["account_id"], {"balance": acct["balance"] + loan["principal"]})
    return ctx.update("loan", loan["loan_id"], {"status": "active"})


@register_hook("banking.repay_loan")
def repay_loan(ctx: ToolContext, args: dict) -> dict:
    loan = ctx.require("loan", args["loan_id"])
    amount = args["amount"]
    if amount > loan["outstanding"]:
        raise ToolError("the amount exceeds what is owed")
    _debit(ctx, ctx.require("account", loan["account_id"]), amount)
    left = loan["outstanding"] - amount
    ctx.update("loan", loan["loan_id"], {"outstanding": left, "status": "repaid" if left <= 0 else "active"})
    return ctx.insert("repayment", {"loan_id": loan["loan_id"], "amount": amount, "paid_at": ctx.now})

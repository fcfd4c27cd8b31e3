"""Clinic hooks: appointments and their slots change together (a slot holds one appointment)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import ToolError, register_hook

if TYPE_CHECKING:  # annotations only: hooks need not import the runtime
    from ..toolgen import ToolContext


def _take_slot(ctx: ToolContext, slot_id) -> dict:
    slot = ctx.require("slot", slot_id)
    if slot["status"] != "free":
        raise ToolError(f"slot {slot_id} is not free")
    return ctx.update("slot", slot_id, {"status": "booked"})


@register_hook("clinic.book")
def book(ctx: ToolContext, args: dict) -> dict:
    slot = _take_slot(ctx, args["slot_id"])
    return ctx.insert("appointment", {"patient_id": args["patient_id"], "slot_id": slot["slot_id"],
                                      "reason": args["reason"], "status": "scheduled"})


@register_hook("clinic.reschedule")
def reschedule(ctx: ToolContext, args: dict) -> dict:
    appt = ctx.require("appointment", args["appointment_id"])
    if appt["slot_id"] == args["slot_id"]:
        raise ToolError("the appointment is already in this slot")
    _take_slot(ctx, args["slot_id"])
    ctx.update("slot", appt["slot_id"], {"status": "free"})
    return ctx.update("appointment", appt["appointment_id"], {"slot_id": args["slot_id"]})


@register_hook("clinic.cancel")
def cancel(ctx: ToolContext, args: dict) -> dict:
    appt = ctx.require("appointment", args["appointment_id"])
    ctx.update("slot", appt["slot_id"], {"status": "free"})
    return ctx.update("appointment", appt["appointment_id"], {"status": "cancelled"})

"""The CDR variables a leg gets when it reports (CHANNEL_HANGUP_COMPLETE).

Mirrors FreeSWITCH's ``switch_channel_set_timestamps`` (``switch_channel.c``): the ``*_stamp``,
``*_epoch``/``*_uepoch``, duration/billing variables and ``last_app``/``last_arg``, computed
from the leg's timestamps and set in the order the captures show.
"""

from __future__ import annotations

import time

from .. import templates
from ..events import now_us
from .leg import Channel
from .tables import CAUSES

# Order FreeSWITCH adds the CDR variables in at reporting time (from the captures).
_CDR_RANK = {name: i for i, name in enumerate(templates.load()["cdr_variables"])}


def cdr_variables(ch: Channel, cause: str) -> list[tuple[str, str]]:
    """The CDR variables of ``ch`` hanging up with ``cause``, in FreeSWITCH's order."""
    return sorted(_cdr_vars(ch, cause), key=lambda kv: _CDR_RANK.get(kv[0], 1000))


def _cdr_vars(ch: Channel, cause: str) -> list[tuple[str, str]]:
    t = ch.times
    start = t["Channel-Created-Time"]
    end = t.get("Channel-Hangup-Time") or now_us()
    answered = t.get("Channel-Answered-Time", 0)
    progress = t.get("Channel-Progress-Time", 0)
    pmedia = t.get("Channel-Progress-Media-Time", 0)
    bridged = t.get("Channel-Bridged-Time", 0)

    def stamp(us: int) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(us // 1_000_000))

    out: list[tuple[str, str]] = [
        ("hangup_cause", cause),
        ("hangup_cause_q850", str(CAUSES.get(cause, 0))),
        ("digits_dialed", "none"),
        ("start_stamp", stamp(start)),
        ("profile_start_stamp", stamp(start)),
    ]
    if answered:
        out.append(("answer_stamp", stamp(answered)))
    if progress:
        out.append(("progress_stamp", stamp(progress)))
    if bridged:
        out.append(("bridge_stamp", stamp(bridged)))
    if pmedia:
        out.append(("progress_media_stamp", stamp(pmedia)))
    out.append(("end_stamp", stamp(end)))
    for name, us in (
        ("start", start),
        ("profile_start", start),
        ("answer", answered),
        ("bridge", bridged),
        ("last_hold", t.get("Channel-Last-Hold", 0)),
    ):
        out += [(f"{name}_epoch", str(us // 1_000_000)), (f"{name}_uepoch", str(us))]
    accum = t.get("Channel-Hold-Accum", 0)
    out += [
        ("hold_accum_seconds", str(accum // 1_000_000)),
        ("hold_accum_usec", str(accum)),
        ("hold_accum_ms", str(accum // 1000)),
    ]
    for name, us in (
        ("resurrect", 0),
        ("progress", progress),
        ("progress_media", pmedia),
        ("end", end),
    ):
        out += [(f"{name}_epoch", str(us // 1_000_000)), (f"{name}_uepoch", str(us))]
    last = ch.last_app
    if last is not None:
        out.append(("last_app", last[0]))
        if last[1]:
            out.append(("last_arg", last[1]))
    name = ch.profile.get("Caller-ID-Name", "")
    num = ch.profile.get("Caller-ID-Number", "")
    out.append(("caller_id", f'"{name}" <{num}>' if name else num))
    dur = end - start
    bill = end - answered if answered else 0
    prog = progress - start if progress else 0
    ans = answered - start if answered else 0
    wait = ans
    pm = pmedia - start if pmedia else 0
    for suffix, div in (("sec", 1_000_000), ("msec", 1000), ("usec", 1)):
        first = (
            "duration" if suffix == "sec" else {"msec": "mduration", "usec": "uduration"}[suffix]
        )
        out += [
            (first, str(dur // div)),
            (f"bill{suffix}", str(bill // div)),
            (f"progress{suffix}", str(prog // div)),
            (f"answer{suffix}", str(ans // div)),
            (f"wait{suffix}", str(wait // div)),
            (f"progress_media{suffix}", str(pm // div)),
            (f"flow_bill{suffix}", str(dur // div)),
        ]
    if ch.profile.get("Source") == "mod_loopback":
        out.append(("is_loopback", "1"))
    return out

"""DTMF a leg receives: ``uuid_recv_dtmf`` and ``bind_digit_action``'s digit machine.

Mirrors FreeSWITCH's ``switch_channel_queue_dtmf_string`` / ``switch_core_session_recv_dtmf``
(``switch_channel.c``, ``switch_core_io.c``), the digit machine of ``switch_ivr_async.c``
(``switch_ivr_dmachine_feed`` / ``_check_match``) and ``mod_dptools``' ``bind_digit_action``.

None of this was verified on a real switch; it follows FreeSWITCH's code and documentation:

* A digit a phone sends is fed to the leg's digit machine first, when it has one
  (``bind_digit_action`` made it).  A digit that may still complete a binding is held back; a
  completed binding runs its action (``api:<command>`` with its value as the argument line);
  digits that can no longer match are queued on again, past the machine.  A held-back prefix
  waits for FreeSWITCH's digit timeout (1.5 s), which the model has no clock for: it waits for
  the next digit instead.
* ``uuid_recv_dtmf <uuid> <digits>`` queues the digits *past* the digit machine
  (DTMF_FLAG_SKIP_PROCESS); with a leading ``~`` they go through it, as a phone's do.  Either
  way the digits then reach the application the leg runs: att_xfer's keys (att_xfer.py).
* Only the ``self`` DTMF target (the digits the leg receives) is modelled; ``exec:`` actions
  are not modelled.
* ``clear_digit_action <realm>`` drops the realm's bindings, and the machine is left without
  a realm in use when it was that one (``switch_ivr_dmachine_clear_realm``).
"""

from __future__ import annotations

from .dialplan import dialplan_app
from .fire import FireMixin
from .leg import Channel

# switch_utils.h is_dtmf(): the digits, A-D, and the W/F pause and flash marks
DTMF_CHARS = frozenset("0123456789ABCDabcd#*WwFf")


class DtmfMixin(FireMixin):
    """``uuid_recv_dtmf`` and the ``bind_digit_action`` application."""

    @dialplan_app("bind_digit_action")
    def _app_bind_digit_action(self, ch: Channel, data: str) -> bool:
        self._execute(ch, "bind_digit_action", data)
        self._bind_digit_action(ch, data)
        self._execute_complete(ch)
        return False

    def _bind_digit_action(self, ch: Channel, data: str) -> None:
        """``<realm>,<digits>,<command>[,<value>][,<dtmf target>][,<event target>]``; binding
        the same digits in a realm again replaces the action, and the realm bound last is
        the one the machine uses (switch_ivr_dmachine_bind)."""
        argv = data.split(",", 5)
        if len(argv) < 3 or not all(argv[:3]):
            return  # mod_dptools logs a usage error and binds nothing
        realm, digits, command = argv[:3]
        value = argv[3] if len(argv) > 3 else ""
        bindings = [b for b in ch.digit_bindings.get(realm, []) if b[0] != digits]
        ch.digit_bindings[realm] = [*bindings, (digits, command, value)]
        ch.digit_realm = realm

    @dialplan_app("clear_digit_action")
    def _app_clear_digit_action(self, ch: Channel, data: str) -> bool:
        self._execute(ch, "clear_digit_action", data)
        self._clear_digit_action(ch, data)
        self._execute_complete(ch)
        return False

    def _clear_digit_action(self, ch: Channel, data: str) -> None:
        """``<realm>|all[,<target>]`` (self only is modelled): the realm's bindings go; if it
        was the realm in use, none is (switch_ivr_dmachine_clear_realm), so digits pass the
        machine untouched; ``all`` (or nothing) drops the machine."""
        realm = data.partition(",")[0]
        if not realm or realm.lower() == "all":
            ch.digit_bindings.clear()
            ch.digit_realm = None
        else:
            ch.digit_bindings.pop(realm, None)
            if ch.digit_realm == realm:
                ch.digit_realm = None
        ch.digit_buffer = ""

    def recv_dtmf(self, uid: str, digits: str) -> None:
        """uuid_recv_dtmf: ``digits`` arrive as if the leg's phone pressed them (see above)."""
        ch = self.get(uid)
        through_machine = digits.startswith("~")
        for group in digits.lstrip("~").split("+"):
            for digit in group.partition("@")[0]:  # <digits>@<ms>: a duration
                if digit not in DTMF_CHARS or not ch.alive:
                    continue
                if through_machine and ch.digit_realm is not None:
                    self._dmachine_feed(ch, digit)
                else:
                    self._attxfer_dtmf(ch, digit)

    def _dmachine_feed(self, ch: Channel, digit: str) -> None:
        ch.digit_buffer += digit
        held = ch.digit_buffer
        bindings = ch.digit_bindings.get(ch.digit_realm or "", [])
        exact = [b for b in bindings if b[0] == held]
        longer = [b for b in bindings if b[0] != held and b[0].startswith(held)]
        if longer:
            return  # a binding may still match: the digits are held back
        ch.digit_buffer = ""
        if exact:
            _, command, value = exact[0]
            self._digit_action(ch, held, command, value)
            return
        # no binding can match any more: the digits go on, past the machine
        ch.set_var("last_non_matching_digits", held)
        for d in held:
            if ch.alive:
                self._attxfer_dtmf(ch, d)

    def _digit_action(self, ch: Channel, digits: str, command: str, value: str) -> None:
        ch.set_var("last_matching_digits", digits)
        if command[:4].lower() == "api:" and self.api_hook is not None:
            result = self.api_hook(command[4:], value)
            ch.set_var("bind_digit_action_api_result", result)

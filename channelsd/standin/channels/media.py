"""Media on a leg: playback, ``uuid_broadcast``, ``uuid_break`` and ``uuid_record``.

Mirrors FreeSWITCH's ``switch_ivr_play_say.c`` (``playback``: EXECUTE, PLAYBACK_START ..
PLAYBACK_STOP, EXECUTE_COMPLETE), ``switch_ivr_broadcast`` (an ``app::args`` path runs that
app nested on top of whatever the leg runs; with no leg word the partner hears its own
``hold_music`` meanwhile, reference §5.1/§2.3), ``uuid_break`` (the playback ends with
PLAYBACK_STOP, the interrupted app or the dialplan goes on, s3_break) and the recording media
bug of ``switch_ivr_async.c`` (RECORD_START / RECORD_STOP).
"""

from __future__ import annotations

from urllib.parse import unquote

from .. import replies
from .dialplan import dialplan_app
from .fire import FireMixin
from .leg import Channel, SwitchError

# The capture switch's global hold_music; reference §2.3/§4.4: it was not a playable stream there.
GLOBAL_HOLD_MUSIC = "local_stream://moh"
# Apps a uuid_broadcast ``app::args`` path runs.  Any other ``x::y`` is still read as a file to
# play: the reference and the captures say nothing about an unknown app in a broadcast.
BROADCAST_APPS = frozenset(
    {"playback", "speak", "say", "att_xfer", "bind_digit_action", "clear_digit_action"}
)


def parse_vars_block(text: str) -> dict[str, str]:
    """``{a=1,b=2}`` (URL-decoded first, as uuid_record does) as a dict; anything else: {}."""
    text = unquote(text.strip())
    if not (text.startswith("{") and text.endswith("}")):
        return {}
    pairs = (item.partition("=") for item in text[1:-1].split(","))
    return {k.strip().lower(): v for k, sep, v in pairs if sep and k.strip()}


def split_broadcast(path: str) -> tuple[str, str]:
    """``app::args`` of a uuid_broadcast path; a plain path means playback of that path."""
    app, sep, data = path.partition("::")
    if sep and app in BROADCAST_APPS:
        return app, data
    return "playback", path


class MediaMixin(FireMixin):
    """Playback, broadcast, break and record on a leg."""

    def playable(self, path: str) -> bool:
        """Whether the switch can play ``path``: not the reference switch's global hold_music
        (§2.3, §4.4), nor what a test declared missing (``missing_media``, §5.1), nor a file
        of a directory whose files are listed (``media_files``) that is not among them."""
        if path == GLOBAL_HOLD_MUSIC or path in self.missing_media:
            return False
        directory, _, name = path.rpartition("/")
        files = self.media_files.get(directory + "/")
        return files is None or name in files

    @dialplan_app("playback")
    def _app_playback(self, ch: Channel, data: str) -> bool:
        return self._play(ch, data)

    def _play(self, ch: Channel, path: str) -> bool:
        """EXECUTE playback and PLAYBACK_START; it runs until it is broken or the leg hangs up
        (the model has no clock to end it).  A file the switch cannot play ends at once with
        EXECUTE_COMPLETE FILE NOT FOUND and no PLAYBACK_* events (reference §5.1).  True
        while it plays."""
        self._execute(ch, "playback", path)
        # the playback code re-sets current_application (it moves to the end, as captured)
        ch.set_var("current_application", "playback")
        if not self.playable(path):
            self._execute_complete(ch, "FILE NOT FOUND")
            return False
        ch.playing = path
        self._playback_event(ch, "PLAYBACK_START", path, None)
        return True

    def broadcast(self, uid: str, path: str, leg: str | None = "aleg") -> None:
        """uuid_broadcast <uuid> <path> [leg] (reference §5.1).  ``app::args`` runs that app
        (playback, speak, say, att_xfer, bind_digit_action); no leg word means aleg plus the
        partner held with its hold_music; an unknown leg word plays nothing."""
        ch = self.get(uid)
        partner = self._partner(ch)
        hold: Channel | None = None
        if leg is None:
            targets, hold = [ch], partner
        elif leg in ("aleg", "holdb"):
            targets = [ch]
        elif leg == "bleg":
            targets = [partner] if partner else []
        elif leg == "both":
            targets = [ch] + ([partner] if partner else [])
        else:
            return  # an unknown leg word answers +OK Message sent and plays nothing
        app, data = split_broadcast(path)
        for t in targets:
            self._run_broadcast(t, app, data, hold if t is ch else None)

    def execute_app(self, uid: str, app: str, data: str) -> None:
        """sendmsg call-command: execute; the reference saw the same events for att_xfer as
        ``uuid_broadcast <uuid> att_xfer::<data> aleg``."""
        self._run_broadcast(self.get(uid), app, data, None)

    def _run_broadcast(self, t: Channel, app: str, data: str, hold: Channel | None) -> None:
        if t.playing is not None and t.app_stack:
            # a broadcast is playing: this one waits for it (uuid_break all drops the queue)
            t.broadcast_queue.append((app, data, hold.uuid if hold else None))
            return
        hold_ok = self._start_hold(t, hold) if hold is not None else False
        if app == "att_xfer":
            if hold is not None and not hold_ok and self.attxfer_late_start > 0:
                # reference §2.3: with unplayable hold music att_xfer often started late
                # (about 10.6 s in 2 of 6 runs)
                self.later(self.attxfer_late_start, lambda: self._late_att_xfer(t, data))
                return
            self._att_xfer(t, data, hold_ok)
            return
        # A dialplan playback pauses under the broadcast, which plays nested (reference §5.1);
        # its path is kept as the nested app's data.
        t.playing = None
        t.nest_app()
        if app == "playback":
            if not self._broadcast_play(t, data):
                self._media_done(t)  # FILE NOT FOUND: over at once
            return  # else it runs until uuid_break or hangup
        # speak / say / the digit actions: EXECUTE then EXECUTE_COMPLETE and no PLAYBACK_*
        # events (those come from switch_ivr_play_file only).  The model has no clock, so they
        # end at once, as a missing file's broadcast does (reference §5.1).
        self._execute(t, app, data)
        if app == "bind_digit_action":
            self._bind_digit_action(t, data)
        elif app == "clear_digit_action":
            self._clear_digit_action(t, data)
        self._execute_complete(t)
        self._media_done(t)

    def _late_att_xfer(self, t: Channel, data: str) -> None:
        if t.alive:
            self._att_xfer(t, data, False)

    def _resume_paused(self, ch: Channel) -> bool:
        """Back from a nested broadcast: a dialplan playback it paused plays on."""
        if ch.app == "playback" and ch.app_running and ch.playing is None:
            ch.playing = ch.app_data
            return True
        return False

    def _media_done(self, ch: Channel) -> None:
        """A broadcast app on ``ch`` returned: back to what it interrupted, the partner's hold
        music stops, the next queued broadcast runs or the dialplan goes on."""
        if ch.app_stack:
            ch.unnest_app()
        self._resume_paused(ch)
        self._release_hold(ch)
        if ch.broadcast_queue:
            app, data, hold = ch.broadcast_queue.pop(0)
            self._run_broadcast(ch, app, data, self._partner(ch) if hold else None)
        elif not ch.app_running and not ch.parked:
            self._continue(ch)

    def _broadcast_play(self, ch: Channel, path: str) -> bool:
        ch.set_var("current_loop", "1")
        ch.set_var("total_loops", "1")
        return self._play(ch, path)

    def _start_hold(self, ch: Channel, partner: Channel, stream: str | None = None) -> bool:
        """The partner hears hold music while ``ch``'s broadcast runs or ``ch`` is held:
        ``stream``, else the partner's own hold_music (reference §2.3, §4.4).  Returns whether
        it played.  The global default was not playable on the reference switch: its playback
        "failed at once" -- shaped like the captured missing-file broadcast (§5.1): EXECUTE,
        EXECUTE_COMPLETE FILE NOT FOUND, no PLAYBACK_*."""
        if not partner.alive or partner.playing is not None:
            return False
        stream = stream or str(partner.variables.get("hold_music") or GLOBAL_HOLD_MUSIC)
        partner.nest_app()
        if not self.playable(stream):
            self._execute(partner, "playback", stream)
            self._execute_complete(partner, "FILE NOT FOUND")
            partner.unnest_app()
            return False
        ch.holding = partner.uuid
        self._broadcast_play(partner, stream)
        return True

    def _release_hold(self, ch: Channel) -> None:
        """``ch``'s broadcast (or hold) is over: the hold music its partner hears stops."""
        uid, ch.holding = ch.holding, None
        partner = self.channels.get(uid or "")
        if partner is None or not partner.alive or partner.playing is None:
            return
        self._stop_playback(partner, "break")
        self._media_done(partner)

    def _stop_playback(self, ch: Channel, status: str) -> None:
        """PLAYBACK_STOP + EXECUTE_COMPLETE playback, as s3_break (break) / s3's 9005 (hangup)."""
        path, ch.playing = ch.playing or "", None
        self._playback_stop_vars(ch)
        self._playback_event(ch, "PLAYBACK_STOP", path, status)
        self._execute_complete(ch, "PLAYBACK ERROR" if status == "done" else "FILE PLAYED")

    def _playback_stop_vars(self, ch: Channel) -> None:
        ch.set_var("playback_last_offset_pos", "8160")
        ch.set_var("playback_seconds", "1")
        ch.set_var("playback_ms", "1000")
        ch.set_var("playback_samples", "8000")

    def break_media(self, uid: str, all_: bool = False) -> None:
        """uuid_break: stop the current playback; the dialplan moves on (s3_break).  A
        broadcast nested in a dialplan playback stops both, and the dialplan goes on to its
        next app (reference §5.2)."""
        ch = self.get(uid)
        if all_:
            ch.broadcast_queue.clear()
        if ch.playing is None:
            return
        self._stop_playback(ch, "break")
        top = ch.app_stack[-1] if ch.app_stack else None
        if top is not None and top[0] == "playback" and top[3]:
            ch.unnest_app()
            self._resume_paused(ch)
            self._release_hold(ch)
            self._stop_playback(ch, "break")
            self._continue(ch)
            return
        self._media_done(ch)

    def record(
        self, uid: str, action: str, path: str, limit: str = "", variables: str = ""
    ) -> None:
        """uuid_record start|stop|mask|unmask|pause|resume <path> [<limit> [<{vars}>]];
        RECORD_START/STOP events (shape derived from PLAYBACK_START/STOP: no capture has
        them).  A start into a directory that does not exist still answers +OK (the switch
        creates it, reference §5.4); a limit stops the recording by itself (success-maxtime).
        Read in FreeSWITCH's code, not run on the reference switch: a start of a path already
        being recorded answers +OK and changes nothing (switch_ivr_record_session_event:
        "Already recording"), and the {…} block's variables are this recording's own
        (record_min_sec, record_answer_req, …), kept in ``recording_vars``."""
        ch = self.get(uid, replies.CANNOT_LOCATE_SESSION)
        if action == "start":
            if path in ch.recordings:
                return
            ch.recording_vars[path] = parse_vars_block(variables)
            ch.recordings.append(path)
            self._ev(ch, "RECORD_START", post=[("Record-File-Path", path)])
            if limit.isdigit() and int(limit) > 0:
                self.later(int(limit), lambda: self._record_limit(ch, path))
            return
        if action == "stop":
            paths = list(ch.recordings) if path == "all" else [path]
            if not paths or any(p not in ch.recordings for p in paths):
                raise SwitchError(replies.CANNOT_STOP_RECORD)
            for p in paths:
                self._record_stop(ch, p)
            return
        if path not in ch.recordings:
            raise SwitchError(replies.cannot_record(action))

    def _record_stop(self, ch: Channel, path: str) -> None:
        ch.recordings.remove(path)
        ch.recording_vars.pop(path, None)
        post = [("Record-File-Path", path), ("Record-Completion-Cause", "success-maxtime")]
        self._ev(ch, "RECORD_STOP", post=post)

    def _record_limit(self, ch: Channel, path: str) -> None:
        if ch.alive and path in ch.recordings:
            self._record_stop(ch, path)

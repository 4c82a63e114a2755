"""Rate limits: the user's, the server's and what 429s teach, per (endpoint, key) bucket.

Each (endpoint, key) pair has its own ``RateBucket``, which holds at once:

- the user's ``max_requests_per_minute``/``max_tokens_per_minute``: token buckets holding a
  minute's quota, as providers meter them, so a batch smaller than the quota goes out at once
  and a longer one settles to the rate. A user-set limit always holds.
- what the server says in its headers (``serverlimits``): the quota remaining now, the
  limit and its refill rate. The stricter of the user's and the server's applies.
- without headers, what 429s teach, when they depend on the pace (``_LearnedRate``): a crowd
  of 429s cuts the pace to what the server let through; once they stop, the pace before is
  tried again with a small burst: a limit refuses it at once and the cut stays (then speeds up
  a little with each success), a server refusing at random does not and the cut is undone. A
  429 that states its wait (Retry-After) is obeyed, never learned from.

A request reserves its send time (``RateBucket.reserve``), so concurrent workers queue up in
order; a request waiting for its turn is woken when the learned pace changes, and takes a new
turn under it (a cut undone frees what it held). State is plain floats, so it lives across
``generate`` calls and event loops.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from .images import image_tokens, is_image_part
from .serverlimits import Quota, ServerLimits

if TYPE_CHECKING:  # asyncio is imported when a request first waits: `import dataformer_nb` stays light
    import asyncio

MAX_RESET_SECONDS = 86400.0  # a stated reset is clamped to a day
WAIT_SHOWN_SECONDS = 1.0  # a wait shorter than this is pacing, not worth a word on the progress bar
MIN_LEARNED_RATE = 1 / 60  # requests a second: a 429-only server is still asked once a minute
_DECREASE_EVERY = 0.25  # seconds: the 429s of one wave in flight are one signal, not 64
_INCREASE = 0.1  # the learned rate grows by this share of itself a second while requests succeed
_RECENT_REPLIES = 48  # the replies whose share of 429s decides whether to slow down
# Random 429s at 30 % fill 60 % of 24-48 replies, or come ten in a row, about once in 10^4-10^5 draws.
_CROWDED_SHARE = 0.6
_IN_A_ROW = 10
_TRIAL_REPLIES = 16  # replies to requests sent under a cut, and seconds, that decide whether it stays
_TRIAL_SECONDS = 2.0
# A learned rate grows on a success only up to this much above the pace the request went at. A
# request goes at the pace of its reservation, made a queue of slots earlier: a rate that grew on
# those successes alone ran 2.5x past a real limit (in 14 s) before any reply to it came back,
# and the 429s then came in waves (20 % of the replies after learning, 5-9 % with the cap:
# tests/test_limits.py's token buckets, benchmarks/limits_sim.py).
_GROWTH_AHEAD = 1.1
_REFUSING_SECONDS = 2.0  # refusals must fill this long, not just a hiccup, to back off further
# The probe: once a request sent under a cut succeeds, this many are sent at once (and as many
# more as a limit of the pace that got through would have refilled since the cut); half of them
# refused confirm a limit. A token bucket paced near its rate has nothing to spare for them; a
# server refusing at random lets a burst through unless a hiccup is under way (and one begun
# just before shows in the replies still coming back: see ``_LearnedRate._reply``). Small,
# because each is a request sent past a limit (tests/test_rate_limits.py allows a burst's worth).
_PROBE_REQUESTS = 2
_PROBE_SPARE = 14  # at most this many more
# Under a known limit, 2 to 5 429s in the last 8 replies to requests paced at most 1.1x the pace
# it let through unmask a probe that met a hiccup (or a limit that fell): a limit refuses none of
# them, random 429s at 15 % refuse two of eight a third of the time.
_NEAR, _NEAR_REPLIES, _NEAR_REFUSED = 1.1, 8, 2
# The pace a cut kept is what got through while it held, when it held this long (a bucket with a
# few requests to spare lets a pace past its rate through for a while).
_HOLD_SECONDS = 1.0
_HALVE_AFTER = 1.0  # seconds of 429s with nothing let through before a held cut is halved


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate (about four characters a token, as BPE vocabularies give
    English): no encoding to download, and every reply corrects it with real usage."""
    return (len(text) + 3) // 4


def content_tokens(content: Any) -> int:
    """The estimated tokens of a message's ``content``: text by ``estimate_tokens``, image parts
    as their provider bills them (``images``), anything else as its JSON text."""
    if content is None:
        return 0
    if isinstance(content, str):
        return estimate_tokens(content)
    if isinstance(content, list):
        return sum(
            estimate_tokens(part["text"]) if isinstance(part, dict) and isinstance(part.get("text"), str)
            else image_tokens(part) if is_image_part(part)  # as billed: its base64 is not text
            else estimate_tokens(json.dumps(part, default=str))
            for part in content
        )
    return estimate_tokens(json.dumps(content, default=str))


def estimate_request_tokens(body: Mapping[str, Any]) -> int:
    """Prompt tokens plus the completion budget, as providers count them against TPM."""
    prompt, budget = estimate_prompt_and_budget(body)
    return prompt + budget


def estimate_prompt_and_budget(body: Mapping[str, Any]) -> tuple[int, int]:
    """The estimated prompt tokens of ``body``, and its completion budget (``max_tokens`` x ``n``;
    0 when it sets none)."""
    if "messages" in body:
        prompt = sum(4 + content_tokens(m.get("content")) for m in body["messages"])
        prompt += content_tokens(body.get("system"))
    elif "input" in body:  # embeddings: the input is all there is
        return content_tokens(body["input"]), 0
    else:
        prompt = content_tokens(body.get("prompt"))
    options = body.get("options") or {}
    budget = body.get("max_tokens") or body.get("max_completion_tokens") or options.get("num_predict") or 0
    n = body.get("n") or 1
    return (prompt, int(budget) * int(n)) if isinstance(budget, int) and isinstance(n, int) else (prompt, 0)


class _TokenBucket:
    """``capacity`` units refilled at ``rate`` a second; with no rate, whole again at ``reset_at``.

    ``level`` is what may be spent at time ``at``; reservations move ``at`` into the future.
    """

    def __init__(self, capacity: float | None, rate: float | None, level: float | None = None) -> None:
        self.capacity, self.rate = capacity, rate
        self.level = capacity if level is None else level
        self.at = 0.0
        self.reset_at: float | None = None
        self.spent = 0.0  # all units ever reserved: what a reply's "remaining" does not yet count

    def level_at(self, t: float) -> float:
        if self.level is None:
            return float("inf")
        if self.rate:
            level = self.level + self.rate * max(t - self.at, 0.0)
            return level if self.capacity is None else min(self.capacity, level)
        if self.reset_at is not None and t >= self.reset_at:
            return float("inf") if self.capacity is None else self.capacity
        return self.level

    def reserve(self, cost: float, now: float) -> float:
        """Spend ``cost`` at the first time it is available (from ``now``); return that time."""
        if self.capacity is not None:
            cost = min(cost, self.capacity)  # larger than the whole quota: it goes when the quota is whole
        t = max(now, self.at)
        level = self.level_at(t)
        if level < cost:
            if self.rate:
                t += (cost - level) / self.rate
            elif self.reset_at is not None and self.reset_at > t:
                t = self.reset_at
            level = max(self.level_at(t), cost)  # with no refill known, send: a 429 will teach
        if self.reset_at is not None and t >= self.reset_at:
            self.reset_at = None  # that window is over; the next reply tells of the new one
        self.level = level - cost if level != float("inf") else None
        self.at = t
        self.spent += cost
        return t

    def state(self) -> tuple[float | None, float, float | None, float]:
        return self.level, self.at, self.reset_at, self.spent

    def restore(self, state: tuple[float | None, float, float | None, float]) -> None:
        self.level, self.at, self.reset_at, self.spent = state

    def refund(self, cost: float) -> None:
        if self.level is not None:
            self.level += cost


def _users_bucket(per_minute: float | None, per_second: bool, smallest: float = 0.0) -> _TokenBucket | None:
    """A user's limit: a bucket holding a minute's quota, or a second's (dataformer's ``max_rps``)."""
    if not per_minute:
        return None
    return _TokenBucket(max(per_minute / 60, smallest) if per_second else per_minute, per_minute / 60)


class _ServerQuota(_TokenBucket):
    """A quota the server stated, kept current by every reply."""

    def __init__(self) -> None:
        super().__init__(None, None, None)
        self.stated: Quota | None = None
        self._heard_at = float("-inf")

    def observe(self, quota: Quota, sent_at: float, spent_before: float) -> None:
        """Adopt ``quota``, stated in reply to a request sent at ``sent_at`` when ``spent_before``
        units had been reserved (it included): what was reserved since, the server had not yet counted."""
        if sent_at < self._heard_at or quota.remaining is None:
            return  # an older request's reply, overtaken by a newer one
        self._heard_at = sent_at
        self.stated = quota
        self.capacity, self.rate = quota.limit, quota.rate
        self.level = quota.remaining - (self.spent - spent_before)
        self.at = sent_at
        # A reset past a day is garbled (1000000000 s held a client for decades): a day at most.
        self.reset_at = None if quota.reset is None else sent_at + min(max(quota.reset, 0.0), MAX_RESET_SECONDS)


@dataclass
class _Trial:
    """A cut on probation. Until the server's 429s stop (the hold), the cut stands; then the pace
    before it is tried again (the probe): if the server refuses it again at once, its 429s depend
    on our pace and the cut stays; if not, they were noise and the cut is undone. For a server
    already known to limit the pace, a cut is judged instead by the share of 429s it leaves."""

    since: float  # the latest cut of this trial
    after: float  # replies to requests reserved after this many reservations count
    share_before: float  # the 429 share of the replies in the seconds before the first cut
    rate_before: float | None  # what the rate goes back to if the cut is undone
    replies: int = 0
    limited: int = 0
    held: float | None = None  # while the pace before the cut is probed: the rate that stopped the 429s
    held_after: float = 0.0  # while probing: replies to requests reserved after this were sent under the cut
    probe: int = 0  # the probe's requests


class _LearnedRate:
    """A request rate learned from 429s alone, only when they depend on how fast we send.

    Random 429s (a busy server refusing a share of requests whatever the pace, or refusing every
    request for a moment) are waits, not a limit: cutting the rate for them only slows the run.
    Yet a real limit must be learned within a few dozen replies (a loopback server empties a
    bucket in milliseconds), and the first replies cannot tell the two apart. So:

    - a crowd of 429s (60 % of the last 48, or ten in a row) cuts the rate at once to 0.9 of
      what got through in the last second, and deeper while 429s crowd the replies to requests
      sent under the cut and something still gets through (a limit lets its refill through; a
      moment of refusals lets nothing through, so the rate then holds, and halves only after a
      second of it);
    - the cut holds until a request sent under it succeeds: then the pace before it is probed,
      with two requests at once (more if a limit would have refilled more meanwhile). A limit
      refuses them, as it would any pace past it: the cut is kept. A server refusing at random
      lets them through: the cut is undone, and crowding must be twice as long to cut again.
      A refusal of a request sent just before the probe means the refusals had not stopped:
      the cut holds again;
    - once a cut is kept, the server is known to limit the pace: a third of the recent replies
      is enough for the next cut, kept if it leaves a third of the share of 429s seen before it,
      and the rate grows with each success. But six 429s in a row (a limit lets its refill
      through), or 429s among requests paced at or near the kept rate, mean the limit was not
      what it seemed (a probe that met a moment of refusals, or a limit that fell): everything
      starts over, with a new cut on trial.
    """

    def __init__(self) -> None:
        self.rate: float | None = None
        self.version = 0  # a new pace (a cut, a probe, a cut kept or undone), where reservations start over
        self._recent: deque[bool] = deque(maxlen=_RECENT_REPLIES)  # True: rate-limited
        self._timeline: deque[tuple[float, bool]] = deque(maxlen=10_000)  # (reply time, rate-limited)
        self._last_cut = float("-inf")
        self._last_look = float("-inf")  # the latest time crowding was weighed for a cut
        self._in_a_row = 0
        self._in_a_row_needed = _IN_A_ROW
        self._trial: _Trial | None = None
        self._confirmed = False  # a cut lowered the 429s: this server limits our pace
        self._passed = 0.0  # the latest rate kept: under a known limit, the server let it through
        self._near: deque[bool] = deque(maxlen=_NEAR_REPLIES)  # replies paced near _passed: refused?
        self.undone = 0  # cuts undone: 429s that did not depend on the pace

    @property
    def burst(self) -> int:
        """Requests that may go at once at the start of the current pace: a probe's, else one."""
        trial = self._trial
        return trial.probe if trial is not None and trial.held is not None else 1

    def succeeded(self, now: float, order: float, sent_at_rate: float | None = None, reserved: float = 0.0) -> None:
        """A success; ``order`` counts the reservations made up to the request's own;
        ``sent_at_rate``: the learned rate it was paced by (None: not paced by one);
        ``reserved``: all reservations made so far."""
        self._reply(False, now, order, reserved, sent_at_rate)
        self._in_a_row = 0
        if self.rate is not None and self._trial is None:  # a cut on trial holds until judged
            grown = self.rate * (1 + _INCREASE / max(self.rate, 1.0))
            if sent_at_rate is not None:
                grown = max(self.rate, min(grown, _GROWTH_AHEAD * sent_at_rate))
            self.rate = grown

    def rate_limited(self, now: float, order: float, reserved: float, sent_at_rate: float | None = None) -> bool:
        """Count a 429 (``order``, ``sent_at_rate`` and ``reserved`` as for ``succeeded``); cut
        the rate if 429s crowd the recent replies (once a wave). True if the rate changed (cut,
        cut undone or kept)."""
        changed = self._reply(True, now, order, reserved, sent_at_rate)
        trial = self._trial
        if trial is not None and (order <= trial.after or trial.held is not None):
            return changed  # reserved before the latest cut (says nothing of its pace), or the probe's
        self._in_a_row += 1
        recent = self._recent
        if self._confirmed:  # a limit is known: the first signs of crowding are worth a (tried) cut
            crowded = self._in_a_row >= 6 or (len(recent) >= 16 and sum(recent) * 3 >= len(recent))
        else:
            crowded = self._in_a_row >= self._in_a_row_needed or (
                len(recent) >= _RECENT_REPLIES // 2 and sum(recent) >= _CROWDED_SHARE * len(recent))
        if now - max(self._last_cut, self._last_look) < _DECREASE_EVERY or not crowded:
            return changed
        self._last_look = now
        if self._confirmed and trial is None and (self._in_a_row >= 6 or (self.rate or 0.0) <= self._passed):
            # Refused at a pace the server let through, or every request for a while when a limit lets
            # its refill through: not the limit we took it for.
            self._doubt(now, reserved)
            return True
        return self._cut(now, reserved) or changed

    def waited(self, now: float) -> None:
        """A 429 that stated its wait: counted for ``refusing``, never a reason to cut."""
        self._timeline.append((now, True))

    def refusing(self) -> bool:
        """Whether 429s are three quarters or more of the replies of the last two seconds (at
        least 16): a server refusing most requests. Not of the last 32 replies: a hiccup refuses
        every request for a moment, and backing off for it held the requests it refused twice
        for up to 16 s, the tail of a 2 s run (benchmarks/limits_sim.py); and at the end of a run
        the few requests left are the refused ones (a server refusing them all is paced by the
        rate learned from its 429s)."""
        if not self._timeline:
            return False
        start = self._timeline[-1][0] - _REFUSING_SECONDS
        window = list(itertools.takewhile(lambda reply: reply[0] >= start, reversed(self._timeline)))
        return len(window) >= 16 and 4 * sum(limited for _, limited in window) >= 3 * len(window)

    def _reply(self, limited: bool, now: float, order: float, reserved: float,
               sent_at_rate: float | None = None) -> bool:
        """Record a reply; move the trial on if it has seen enough. True if the rate changed."""
        self._recent.append(limited)
        self._timeline.append((now, limited))
        if self._confirmed and sent_at_rate is not None and sent_at_rate <= _NEAR * self._passed:
            near = self._near
            near.append(limited)
            if len(near) == near.maxlen and _NEAR_REFUSED <= sum(near) < 3 * len(near) // 4:
                # A limit lets through the pace it let through before; this server refuses a share
                # of it: its limit is lower than we took it for, or its 429s never depended on the
                # pace (the probe met a hiccup). (One refusing nearly all is left to its learned
                # rate: hammering it gains nothing.)
                self._doubt(now, reserved)
                return True
        trial = self._trial
        if trial is not None and trial.held is not None and limited and trial.held_after < order <= trial.after:
            # Sent under the cut just before the probe, and refused: the server refuses again whatever
            # the pace, and the probe's 429s would say nothing. Hold the cut until they stop again.
            self.rate, trial.held, trial.after, trial.replies = trial.held, None, reserved, 0
            self.version += 1
            return True
        if trial is None or order <= trial.after:  # reserved before the cut: not paced by it
            return False
        if trial.held is not None:
            return self._probed(trial, limited, now)
        if not self._confirmed:
            if limited:
                return False  # the cut holds
            self._probe(trial, now, reserved)  # the 429s stopped under the cut: try the pace before it
            return True
        trial.replies += 1
        trial.limited += limited
        if trial.replies < _TRIAL_REPLIES or now - trial.since < _TRIAL_SECONDS:
            return False
        self._trial = None
        if trial.limited / trial.replies <= trial.share_before / 3:
            self._passed = self.rate or 0.0
            return False  # the cut lowered the 429s: it stays
        self.rate = trial.rate_before
        self._confirmed = self.rate is not None
        self.version += 1
        self._undone()
        return True

    def _probe(self, trial: _Trial, now: float, reserved: float) -> None:
        rate = self.rate or MIN_LEARNED_RATE
        if now - trial.since >= _HOLD_SECONDS:
            rate = min(rate, 0.95 * self._let_through(trial.since, now))
        # What a limit of the pace that got through (0.9 of it was the cut) refilled since the cut,
        # less what was used, the server would let through first.
        spare = rate / 0.9 * (now - trial.since) - self._successes_since(trial.since)
        trial.probe = _PROBE_REQUESTS + min(round(max(spare, 0.0)), _PROBE_SPARE)
        trial.held, trial.held_after, trial.after, trial.replies, trial.limited = rate, trial.after, reserved, 0, 0
        self.version += 1  # the probe's requests go at once; after them, at the cut's pace until it is judged

    def _probed(self, trial: _Trial, limited: bool, now: float) -> bool:
        """A reply to a request of the probe (or sent after it, at the cut's pace)."""
        trial.replies += 1
        trial.limited += limited
        if trial.replies < trial.probe:
            return False
        self._trial = None
        self.version += 1
        if 2 * trial.limited >= trial.probe:  # refused again at once: the 429s depend on the pace
            self.rate, self._confirmed, self._passed = trial.held, True, trial.held or 0.0
            self._last_cut = now
            self._recent.clear()
            self._in_a_row = 0
        else:  # the burst went through: the cut was for noise
            self.rate = trial.rate_before
            self._undone()
        return True

    def _doubt(self, now: float, reserved: float) -> None:
        """The known limit failed to explain the 429s: start over, with a cut on trial against the
        pace before any (to half the pace that passed if nothing got through lately), probed as any."""
        self._confirmed, self.rate, self._trial = False, None, None
        self.version += 1
        self._near.clear()
        self._cut(now, reserved, floor=0.5 * self._passed)

    def _undone(self) -> None:
        self._near.clear()
        self.undone += 1
        self._in_a_row_needed = min(2 * self._in_a_row_needed, 1_000)
        self._recent.clear()

    def _successes_since(self, since: float) -> int:
        return sum(not limited for _, limited in itertools.takewhile(lambda reply: reply[0] >= since,
                                                                      reversed(self._timeline)))

    def _let_through(self, since: float, now: float) -> float:
        """Successes a second since ``since`` (over at least ``_DECREASE_EVERY``)."""
        return self._successes_since(since) / max(now - since, _DECREASE_EVERY)

    def _cut(self, now: float, reserved: float, floor: float = 0.0) -> bool:
        # Measured over the last second, or since the last cut if sooner: a burst the server let
        # through long ago says nothing of its rate now. (At the start of a run, over a second
        # all the same: a bucket emptied in 10 ms is not a rate of 2,000 a second.)
        since = max(self._last_cut, now - 1.0)
        let_through = self._let_through(since, now)
        if self.rate is None:
            if not let_through and not floor:
                return False  # nothing got through yet: no rate to learn, the server's wait is all we know
            cut = 0.9 * let_through or floor  # a floor only when nothing got through (a moment's refusals)
        elif let_through:
            cut = min(0.9 * self.rate, 0.95 * let_through)
        elif now - self._last_cut >= _HALVE_AFTER:
            cut = 0.5 * self.rate
        else:
            return False  # nothing through since the cut: a moment of refusals, or a slow refill; wait
        if self._trial is None:
            self._trial = _Trial(now, reserved, self._share_since(now - _TRIAL_SECONDS), self.rate)
        else:  # a deeper cut while on trial: judged from now, against the share before the first
            self._trial.since, self._trial.after, self._trial.replies, self._trial.limited = now, reserved, 0, 0
        self.rate = max(cut, MIN_LEARNED_RATE)
        self.version += 1
        self._last_cut = now
        self._recent.clear()
        return True

    def _share_since(self, start: float) -> float:
        replies = list(itertools.takewhile(lambda reply: reply[0] >= start, reversed(self._timeline)))
        return sum(limited for _, limited in replies) / len(replies) if replies else 1.0


class Ticket(NamedTuple):
    """A reservation: when the request may go, and the bucket state a reply is measured against."""

    start: float
    tokens: int
    spent_requests: float
    spent_tokens: float
    learned_rate: float | None = None  # the rate learned from 429s that paced it, if any
    unlearned_start: float = 0.0  # when it could go if no rate were learned from 429s
    pace: int = 0  # the learned pace it was reserved under (see ``RateBucket.due``)
    order: float = 0.0  # the reservations made up to its own (or to its latest turn under a new pace)


class RateBucket:
    """The limits of one (endpoint, key) pair."""

    def __init__(
        self,
        max_requests_per_minute: float | None,
        max_tokens_per_minute: float | None,
        max_concurrent_requests: int,
        clock: Callable[[], float] = time.monotonic,
        per_second: bool = False,
    ) -> None:
        self.max_concurrent_requests = max_concurrent_requests
        self.max_requests_per_minute = max_requests_per_minute
        self.max_tokens_per_minute = max_tokens_per_minute
        self._requests = _users_bucket(max_requests_per_minute, per_second, smallest=1.0)
        self._tokens = _users_bucket(max_tokens_per_minute, per_second)
        self._server_requests = _ServerQuota()
        self._server_tokens = _ServerQuota()
        self._learned = _LearnedRate()
        self._learned_bucket: _TokenBucket | None = None
        self._learned_version = 0  # the learned pace's version the bucket follows
        self._pace = 0  # counts the learned paces: a reservation under an older one is made again
        self._turns = 0  # reservations made, and made again under a new pace: a ticket's order
        self._sleepers: dict[asyncio.Future[None], float] = {}  # waits for a turn, woken by a new pace
        self._retrying: dict[asyncio.Future[None], float] = {}  # refused requests' waits -> their order
        self._clock = clock
        self.rate_limited = 0  # 429s (and 503s that said when to come back) received

    # Reserving

    def reserve(self, tokens: int) -> Ticket:
        """Reserve the time at which a request of ``tokens`` may be sent."""
        now = self._clock()
        start = now
        # Spelled out, not looped over a tuple of pairs: this runs for every request sent.
        if self._requests is not None:
            start = max(start, self._requests.reserve(1, now))
        if self._tokens is not None:
            start = max(start, self._tokens.reserve(tokens, now))
        server_requests, server_tokens = self._server_requests, self._server_tokens
        if server_requests.stated is None:  # nothing to pace by yet: only count what is sent
            server_requests.spent += 1
        else:
            start = max(start, server_requests.reserve(1, now))
        if server_tokens.stated is None:
            server_tokens.spent += tokens
        else:
            start = max(start, server_tokens.reserve(tokens, now))
        unlearned = start
        learned = None
        self._turns += 1
        if self._learned_bucket is not None:
            start = max(start, self._learned_bucket.reserve(1, now))
            learned = self._learned_bucket.rate
        return Ticket(start, tokens, server_requests.spent, server_tokens.spent, learned, unlearned, self._pace,
                      self._turns)

    def due(self, ticket: Ticket) -> Ticket:
        """``ticket``, its place in the learned pace made again if that pace changed since (a cut
        undone frees the requests it held; a deeper one holds them longer)."""
        if ticket.pace == self._pace:
            return ticket
        start, learned = ticket.unlearned_start, None
        if self._learned_bucket is not None:
            start = max(start, self._learned_bucket.reserve(1, self._clock()))
            learned = self._learned_bucket.rate
        self._turns += 1
        return ticket._replace(start=start, learned_rate=learned, pace=self._pace, order=self._turns)

    async def wait_turn(self, tokens: int, on_wait: Callable[[float], None] | None = None,
                        max_wait: float = float("inf")) -> Ticket | None:
        """Sleep until a request of ``tokens`` may go, and return its ticket; None at once if that
        is more than ``max_wait`` seconds away. ``on_wait(seconds)`` is told of a wait long
        enough to mention."""
        buckets = [b for b in (self._requests, self._tokens, self._server_requests, self._server_tokens,
                               self._learned_bucket) if b is not None]
        before = [b.state() for b in buckets]
        ticket = self.reserve(tokens)
        delay = ticket.start - self._clock()
        if delay > max_wait:  # not sent: the buckets stay as they were
            for bucket, state in zip(buckets, before, strict=True):
                bucket.restore(state)
            return None
        if on_wait is not None and delay >= WAIT_SHOWN_SECONDS:
            on_wait(delay)
        while delay > 0:
            await self._sleep(delay, self._sleepers, ticket.order)
            ticket = self.due(ticket)
            delay = ticket.start - self._clock()
        return ticket

    async def retry_after(self, seconds: float, ticket: Ticket | None) -> None:
        """Sleep ``seconds`` before retrying the request of ``ticket``, refused with a 429 that
        stated no wait: or less, as soon as a request reserved after it succeeds. The server
        serves again, so its refusal was a moment's (a 0.2 s hiccup held its requests 0.25-0.5 s),
        or a limit's refill, which the learned pace then shares out."""
        await self._sleep(seconds, self._retrying, self._order(ticket))

    @staticmethod
    async def _sleep(seconds: float, waiters: dict[asyncio.Future[None], float], order: float) -> None:
        """Sleep ``seconds``, or until woken from ``waiters``, where it waits under ``order``."""
        import asyncio

        woken = asyncio.get_running_loop().create_future()
        timer = woken.get_loop().call_later(seconds, _wake, woken)
        waiters[woken] = order
        try:
            await woken
        finally:
            timer.cancel()
            del waiters[woken]

    # Learning from replies

    def observe(self, ticket: Ticket, limits: ServerLimits | None) -> None:
        """Adopt what a reply to the request of ``ticket`` said of the server's limits."""
        if limits is None:
            return
        sent_at = ticket.start
        if limits.requests is not None:
            self._server_requests.observe(limits.requests, sent_at, ticket.spent_requests)
            self._learned_bucket = None  # the server says its limit: nothing to guess
        if limits.tokens is not None:
            self._server_tokens.observe(limits.tokens, sent_at, ticket.spent_tokens)

    def settle(self, estimated: int, actual: int | None) -> None:
        """Correct the user's token budget by the real usage of a reply (``actual``: a plausible
        count, as ``dataformer_nb._usage.token_count`` reads it, or None)."""
        if self._tokens and actual is not None:
            self._tokens.refund(estimated - actual)

    def succeeded(self, ticket: Ticket | None = None) -> None:
        """A reply came back: the learned rate (if any) grows; ``ticket`` is its reservation."""
        now = self._clock()
        order = self._order(ticket)
        self._learned.succeeded(now, order, None if ticket is None else ticket.learned_rate, self._turns)
        self._sync_learned(now)
        if self._retrying:
            for waiting, refused_order in self._retrying.items():
                if refused_order < order:
                    _wake(waiting)

    def told_to_wait(self, rate_limited: bool, ticket: Ticket | None = None, stated_wait: bool = False) -> None:
        """A 429 (``rate_limited``) or a 503 asked to come back later. The request itself waits
        as asked; the bucket slows down only when 429s depend on its pace (see
        ``_LearnedRate``), and only for a server that states neither its limit (one that does
        is paced by what it states) nor a wait (``stated_wait``: Retry-After). A stated wait is
        obeyed: a pace learned from such 429s would only slow a server that refuses at random
        (429s in bursts of ~8 requests, 15 %, Retry-After 1 s: 17.9 and 65.1 s against the
        openai SDK's 3.5 s), and a limit that states its waits is kept to by waiting them."""
        self.rate_limited += 1
        if stated_wait:
            self._learned.waited(self._clock())
        elif rate_limited and self._server_requests.stated is None:
            now = self._clock()
            if self._learned.rate_limited(now, self._order(ticket), self._turns,
                                          None if ticket is None else ticket.learned_rate):
                self._sync_learned(now)

    def _order(self, ticket: Ticket | None) -> float:
        """Where a request's reservation stands among all made (the latest, without a ticket)."""
        return self._turns if ticket is None else ticket.order

    def refusing(self) -> bool:
        """Whether most recent replies were 429s (see ``_LearnedRate.refusing``)."""
        return self._learned.refusing()

    def _sync_learned(self, now: float) -> None:
        learned = self._learned
        if learned.rate is None or self._server_requests.stated is not None:
            if self._learned_bucket is None:
                return
            self._learned_bucket = None  # the cut undone, or the server states its limit
        elif self._learned_bucket is not None and self._learned_version == learned.version:
            self._learned_bucket.rate = learned.rate  # grown: the reservations made stand
            return
        else:
            burst = learned.burst  # a probe's requests at once; after a cut, the first a step later
            self._learned_bucket = _TokenBucket(burst, learned.rate, burst if burst > 1 else 0.0)
            self._learned_bucket.at = now
        self._learned_version = learned.version
        # A new pace: the requests waiting for their turn under the old one take a turn under it.
        self._pace += 1
        for sleeper in self._sleepers:
            _wake(sleeper)

    def seconds_to_send(self, requests: int, tokens: int) -> float | None:
        """About how long ``requests`` costing ``tokens`` take to be let through from now, under
        what this bucket knows (your limits, the server's, what 429s taught); None if nothing limits it."""
        now = self._clock()
        waits = []
        for bucket, cost in ((self._requests, requests), (self._tokens, tokens), (self._server_requests, requests),
                             (self._server_tokens, tokens), (self._learned_bucket, requests)):
            if bucket is not None and bucket.rate:
                waits.append(max(cost - bucket.level_at(now), 0.0) / bucket.rate)
            elif bucket is not None and bucket.reset_at is not None and bucket.level_at(now) < cost:
                waits.append(bucket.reset_at - now)  # a window of unknown length: whole again at its reset
        return max(waits) if waits else None

    # Telling

    def describe(self) -> BucketLimits:
        """What this bucket knows of its limits, for the summary and ``llm.limits()``."""
        return BucketLimits(
            self.max_requests_per_minute, self.max_tokens_per_minute, self.max_concurrent_requests,
            self._server_requests.stated, self._server_tokens.stated,
            None if self._learned_bucket is None else self._learned.rate, self.rate_limited,
        )


def _wake(sleeper: asyncio.Future[None]) -> None:
    if not sleeper.done():
        sleeper.set_result(None)


@dataclass(frozen=True)
class BucketLimits:
    """What one (endpoint, key) bucket knows of its limits."""

    max_requests_per_minute: float | None
    max_tokens_per_minute: float | None
    max_concurrent_requests: int
    server_requests: Quota | None
    server_tokens: Quota | None
    learned_requests_per_second: float | None
    rate_limited_replies: int

    def __str__(self) -> str:
        yours = [f"{x:,.0f} {unit}/min" for x, unit in ((self.max_requests_per_minute, "req"),
                                                        (self.max_tokens_per_minute, "tokens")) if x]
        yours.append(f"{self.max_concurrent_requests} at once")
        server = [q.describe(unit) + ("" if q.remaining is None else f" ({q.remaining:,.0f} left)")
                  for q, unit in ((self.server_requests, "req"), (self.server_tokens, "tokens")) if q is not None]
        if self.learned_requests_per_second is not None:
            server.append(f"~{self.learned_requests_per_second * 60:,.0f} req/min learned from 429s")
        told = f" · {self.rate_limited_replies} said to wait (429, 503)" if self.rate_limited_replies else ""
        return f"yours: {', '.join(yours)} · server: {', '.join(server) or 'said nothing'}{told}"

    def learned(self) -> str:
        """What the server taught, for a summary line ("" if nothing)."""
        parts = [q.describe(unit) for q, unit in ((self.server_requests, "req"), (self.server_tokens, "tokens"))
                 if q is not None and q.limit is not None]
        if self.learned_requests_per_second is not None:
            parts.append(f"~{self.learned_requests_per_second * 60:,.0f} req/min learned from 429s")
        return ", ".join(parts)


class RateLimiter:
    """The buckets of one AsyncLLM, keyed by (endpoint, key fingerprint)."""

    def __init__(
        self,
        max_requests_per_minute: float | None,
        max_tokens_per_minute: float | None,
        max_concurrent_requests: int,
        per_second: bool = False,
    ) -> None:
        self._limits = (max_requests_per_minute, max_tokens_per_minute, max_concurrent_requests)
        self._per_second = per_second
        self._buckets: dict[tuple[str, str], RateBucket] = {}

    def bucket(self, endpoint: str, key_fingerprint: str) -> RateBucket:
        """The bucket of (``endpoint``, key fingerprint), made on first use with the user's limits."""
        key = (endpoint, key_fingerprint)
        if key not in self._buckets:
            self._buckets[key] = RateBucket(*self._limits, per_second=self._per_second)
        return self._buckets[key]

    def report(self) -> LimitsReport:
        """What each bucket knows, by endpoint (a key is never shown: one entry per key)."""
        known = LimitsReport()
        for (endpoint, _), bucket in self._buckets.items():
            known.setdefault(endpoint, []).append(bucket.describe())
        return known


class LimitsReport(dict[str, list[BucketLimits]]):
    """Endpoint -> what each of its keys' buckets knows; prints as one line a bucket."""

    def __str__(self) -> str:
        if not self:
            return "no request sent yet: nothing known of the servers' limits"
        return "\n".join(f"{endpoint}{f' (key {i} of {len(buckets)})' if len(buckets) > 1 else ''}: {b}"
                         for endpoint, buckets in self.items() for i, b in enumerate(buckets, 1))

    def __repr__(self) -> str:
        return str(self)

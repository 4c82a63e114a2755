"""The rate limiter, on a fake clock: no sleeping, no timing assertions."""

from __future__ import annotations

import itertools

import pytest

from dataformer_nb.limits import RateBucket, estimate_request_tokens
from dataformer_nb.serverlimits import MINUTE, Quota, ServerLimits


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def starts(bucket: RateBucket, n: int, tokens: int = 1) -> list[float]:
    return [round(bucket.reserve(tokens).start - 100, 9) for _ in range(n)]


def test_a_minutes_quota_goes_at_once_then_the_rate_holds() -> None:
    bucket = RateBucket(max_requests_per_minute=60, max_tokens_per_minute=None, max_concurrent_requests=8,
                        clock=Clock())
    times = starts(bucket, 63)
    assert times[:60] == [0.0] * 60  # a batch smaller than the quota does not wait
    assert times[60:] == [1.0, 2.0, 3.0]


def test_rpm_and_tpm_hold_together() -> None:
    bucket = RateBucket(max_requests_per_minute=60, max_tokens_per_minute=600, max_concurrent_requests=8,
                        clock=Clock())
    # 100 tokens at 10 tokens/s: six fit the minute's 600 tokens, then one every 10 s
    assert starts(bucket, 8, tokens=100) == [0.0] * 6 + [10.0, 20.0]


def test_a_request_larger_than_the_whole_quota_still_goes() -> None:
    bucket = RateBucket(None, 600, 8, clock=Clock())
    assert starts(bucket, 2, tokens=5000) == [0.0, 60.0]


def test_real_usage_corrects_the_token_estimate() -> None:
    bucket = RateBucket(None, 600, 8, clock=Clock())
    bucket.reserve(600)
    bucket.settle(estimated=600, actual=40)  # 560 tokens come back
    assert starts(bucket, 1, tokens=560) == [0.0]
    assert starts(bucket, 1, tokens=10) == [1.0]


def server(remaining: float, limit: float = 300, reset: float | None = None, window: float | None = MINUTE,
           tokens: Quota | None = None) -> ServerLimits:
    return ServerLimits(Quota(limit, remaining, reset, window), tokens, "test")


def test_the_quota_the_server_reports_goes_at_once_then_its_rate() -> None:
    bucket = RateBucket(None, None, 64, clock=Clock())
    first = bucket.reserve(1)
    bucket.observe(first, server(remaining=4))  # 300/min: one every 0.2 s once the 4 are spent
    assert starts(bucket, 6) == [0.0, 0.0, 0.0, 0.0, 0.2, 0.4]


def test_requests_reserved_after_one_are_not_in_its_reply_yet() -> None:
    bucket = RateBucket(None, None, 64, clock=Clock())
    first = bucket.reserve(1)
    starts(bucket, 3)  # sent after the first: its reply's "remaining" does not count them
    bucket.observe(first, server(remaining=5))
    assert starts(bucket, 3) == [0.0, 0.0, 0.2]


def test_an_older_reply_does_not_overrule_a_newer_one() -> None:
    clock = Clock()
    bucket = RateBucket(None, None, 64, clock=clock)
    old = bucket.reserve(1)
    clock.now += 1
    new = bucket.reserve(1)
    bucket.observe(new, server(remaining=0))
    bucket.observe(old, server(remaining=250))
    assert starts(bucket, 1) == [1.2]


def test_the_stricter_of_the_users_limit_and_the_servers_holds() -> None:
    strict_user = RateBucket(6, None, 64, clock=Clock())
    strict_user.observe(strict_user.reserve(1), server(remaining=299))
    assert starts(strict_user, 6) == [0.0] * 5 + [10.0]
    strict_server = RateBucket(600, None, 64, clock=Clock())
    strict_server.observe(strict_server.reserve(1), server(remaining=2, limit=60))
    assert starts(strict_server, 4) == [0.0, 0.0, 1.0, 2.0]


def test_a_window_of_unknown_length_waits_for_its_reset() -> None:
    bucket = RateBucket(None, None, 64, clock=Clock())
    bucket.observe(bucket.reserve(1), server(remaining=2, limit=20, reset=30.0, window=None))
    assert starts(bucket, 4) == [0.0, 0.0, 30.0, 30.0]


def test_a_server_token_quota_paces_by_tokens() -> None:
    bucket = RateBucket(None, None, 64, clock=Clock())
    tokens = Quota(6000, 1000, None, MINUTE)  # 100 tokens a second
    bucket.observe(bucket.reserve(500), ServerLimits(None, tokens, "test"))
    assert starts(bucket, 3, tokens=500) == [0.0, 0.0, 5.0]


def cut_for_a_crowd_of_429s(clock: Clock) -> tuple[RateBucket, float]:
    """A bucket that saw five requests a second get through for ten seconds, then 16 429s."""
    bucket = RateBucket(None, None, 64, clock=clock)
    for _ in range(50):
        clock.now += 0.2
        bucket.succeeded(bucket.reserve(1))
    for _ in range(16):
        bucket.told_to_wait(rate_limited=True)
    learned = bucket.describe().learned_requests_per_second
    assert learned is not None and 4 <= learned <= 5
    return bucket, learned


def probe_after_the_429s_stop(bucket: RateBucket, clock: Clock) -> list:
    """A request sent under the cut succeeds: the 429s stopped, so the pace before the cut is
    tried again with two requests at once (a limit of the pace that got through would have
    nothing to spare for them)."""
    clock.now += 0.2
    bucket.succeeded(bucket.reserve(1))
    probe = [bucket.reserve(1) for _ in range(2)]
    assert [ticket.start for ticket in probe] == [clock.now] * 2
    return probe


def test_429s_alone_teach_the_rate_the_server_lets_through() -> None:
    clock = Clock()
    bucket, learned = cut_for_a_crowd_of_429s(clock)
    times = starts(bucket, 3)
    assert times[1] - times[0] == pytest.approx(1 / learned) and times[2] - times[1] == pytest.approx(1 / learned)
    for ticket in probe_after_the_429s_stop(bucket, clock):  # refused at once: the 429s depend on the pace
        bucket.told_to_wait(rate_limited=True, ticket=ticket)
    kept = bucket.describe().learned_requests_per_second
    assert kept is not None and kept <= learned  # kept: what got through while it held, if less
    times = starts(bucket, 2)
    assert times[1] - times[0] == pytest.approx(1 / kept)
    for _ in range(20):
        clock.now += 0.25
        bucket.succeeded(bucket.reserve(1))
    assert bucket.describe().learned_requests_per_second > kept  # successes speed it back up


def test_a_cut_whose_probe_goes_through_is_undone() -> None:
    # The 429s were a moment's refusals, not a limit: three requests at once at the old pace pass
    clock = Clock()
    bucket, _ = cut_for_a_crowd_of_429s(clock)
    for ticket in probe_after_the_429s_stop(bucket, clock):
        bucket.succeeded(ticket)
    assert bucket.describe().learned_requests_per_second is None
    assert starts(bucket, 5) == [round(clock.now - 100, 9)] * 5  # nothing held back
    assert bucket._learned.undone == 1


def test_requests_held_by_a_cut_go_as_soon_as_it_is_undone() -> None:
    # Waiting for their turn under a slow pace, they are woken when the pace changes: without it,
    # a cut undone still held the requests queued under it, 16 of them at 2 a second for 8 s.
    # Here 400 wait, the last a minute and a half away: without waking them the test would not
    # end within its timeout.
    import asyncio

    clock = Clock()
    bucket, _ = cut_for_a_crowd_of_429s(clock)

    async def main() -> list[float]:
        sent: list[float] = []

        async def request(i: int) -> None:
            ticket = await bucket.wait_turn(1)
            assert ticket is not None
            sent.append(ticket.start)

        waiting = [asyncio.create_task(request(i)) for i in range(400)]
        await asyncio.sleep(0)  # all have their turns, 0.22 s apart
        clock.now += 0.2
        bucket.succeeded()  # under the cut, a request goes through again: the pace before is probed
        for ticket in [bucket.reserve(1) for _ in range(2)]:
            bucket.succeeded(ticket)  # and goes through: the cut is undone
        await asyncio.wait_for(asyncio.gather(*waiting), timeout=30)
        return sent

    sent = asyncio.run(main())
    assert len(sent) == 400 and max(sent) <= clock.now


def test_a_refusal_just_before_the_probe_holds_the_cut_again() -> None:
    # A request sent under the cut, still in flight when the probe went, comes back refused: the
    # server's refusals had not stopped, so the probe's own 429s would say nothing of a limit.
    clock = Clock()
    bucket, learned = cut_for_a_crowd_of_429s(clock)
    in_flight = bucket.reserve(1)
    probe = probe_after_the_429s_stop(bucket, clock)
    bucket.told_to_wait(rate_limited=True, ticket=in_flight)
    assert bucket.describe().learned_requests_per_second == pytest.approx(learned)  # held again
    for ticket in probe:  # and what the probe meets no longer confirms a limit
        bucket.told_to_wait(rate_limited=True, ticket=ticket)
    assert not bucket._learned._confirmed


def test_a_refused_request_is_retried_as_soon_as_a_later_one_succeeds() -> None:
    # A 429 that states no wait is retried after retry_base_delay, or sooner once the server serves
    # a request sent after it: a 0.2 s hiccup held its requests 0.25-0.5 s. The wait here is a
    # minute: without the wake-up the test would not end within its timeout.
    import asyncio

    bucket = RateBucket(None, None, 16, clock=Clock())

    async def main() -> None:
        refused = bucket.reserve(1)
        bucket.told_to_wait(rate_limited=True, ticket=refused)
        earlier = bucket.reserve(1)  # reserved after it: its success wakes it
        retry = asyncio.create_task(bucket.retry_after(60, refused))
        await asyncio.sleep(0)
        bucket.succeeded(earlier)
        await asyncio.wait_for(retry, timeout=30)

    asyncio.run(main())


def test_a_success_of_a_request_sent_before_the_refused_one_does_not_wake_it() -> None:
    import asyncio

    bucket = RateBucket(None, None, 16, clock=Clock())

    async def main() -> bool:
        before = bucket.reserve(1)
        refused = bucket.reserve(1)
        bucket.told_to_wait(rate_limited=True, ticket=refused)
        retry = asyncio.create_task(bucket.retry_after(60, refused))
        await asyncio.sleep(0)
        bucket.succeeded(before)  # sent before the refusal: says nothing of the server now
        for _ in range(5):
            await asyncio.sleep(0)
        waiting = not retry.done()
        retry.cancel()
        return waiting

    assert asyncio.run(main())


def test_a_moment_of_refusals_early_in_a_run_is_not_taken_for_a_limit() -> None:
    # Every request refused for a quarter of a second, 50 ms into the run (a server's hiccup): the
    # cut it causes is probed once the refusals stop, and undone; the run then goes at full pace.
    simulation = Simulation(lambda t: 100.05 <= t < 100.3, wait=0.3)
    simulation.run(3_000)
    assert sum(refused for _, refused in simulation.replies) > 10  # the hiccup was met
    assert simulation.rates[-1] is None
    assert simulation.bucket._learned.undone >= 1 or set(simulation.rates) == {None}
    late = [t for t, _ in simulation.replies if t >= 101]
    assert len(late) >= 0.9 * 32 / 0.02 * (simulation.clock.now - 101)  # unpaced: 32 at a time, 20 ms each


def test_a_few_429s_among_successes_do_not_slow_the_bucket() -> None:
    clock = Clock()
    bucket = RateBucket(None, None, 64, clock=clock)
    for i in range(200):  # 15 % refused at random, as a busy server does
        clock.now += 0.01
        if i % 7 == 3:
            bucket.told_to_wait(rate_limited=True)
        else:
            bucket.succeeded()
    assert bucket.describe().learned_requests_per_second is None
    assert starts(bucket, 3) == [round(clock.now - 100, 9)] * 3  # nothing held back


def test_429s_before_any_success_teach_no_rate() -> None:
    bucket = RateBucket(None, None, 64, clock=Clock())
    for _ in range(10):
        bucket.told_to_wait(rate_limited=True)
    assert bucket.describe().learned_requests_per_second is None
    assert bucket.describe().rate_limited_replies == 10


def test_a_server_that_states_its_limit_needs_no_learning() -> None:
    clock = Clock()
    bucket = RateBucket(None, None, 64, clock=clock)
    bucket.observe(bucket.reserve(1), server(remaining=100))
    bucket.succeeded()
    clock.now += 1
    for _ in range(10):
        bucket.told_to_wait(rate_limited=True)
    assert bucket.describe().learned_requests_per_second is None


def test_token_estimate_counts_prompt_and_completion_budget() -> None:
    body = {"messages": [{"role": "user", "content": "x" * 40}], "max_tokens": 100, "n": 2}
    assert estimate_request_tokens(body) == 4 + 10 + 200
    assert estimate_request_tokens({"prompt": "abcd", "options": {"num_predict": 5}}) == 6


def test_the_report_shows_every_bucket_without_its_key() -> None:
    bucket = RateBucket(60, None, 8, clock=Clock())
    bucket.observe(bucket.reserve(1), server(remaining=299))
    text = str(bucket.describe())
    assert text == "yours: 60 req/min, 8 at once · server: 300 req/min (299 left)"
    assert all(a <= b for a, b in itertools.pairwise(starts(bucket, 5)))


# Workers on a fake clock against a model of a server: what the learned rate does under noise
# (429s that do not depend on the pace) and under a real, undisclosed token bucket.

class Simulation:
    """``workers`` clients sending through one bucket, each reply ``latency`` after its send;
    ``refuse(t)`` says whether the server answers 429 to a request arriving at ``t``. A refused
    request waits ``wait`` seconds (the server's retry-after) and is sent again."""

    def __init__(self, refuse, workers: int = 32, latency: float = 0.02, wait: float = 1.0) -> None:
        self.clock = Clock()
        self.bucket = RateBucket(None, None, workers, clock=self.clock)
        self.refuse, self.workers, self.latency, self.wait = refuse, workers, latency, wait
        self.replies: list[tuple[float, bool]] = []  # (time, refused)
        self.rates: list[float | None] = []  # the learned rate after each reply
        self.refusing: list[bool] = []  # whether the bucket took the server to be refusing most requests

    def run(self, requests: int) -> None:
        import heapq

        events = [(self.clock.now, i, "send", None) for i in range(self.workers)]
        done = 0
        waiting = {}  # worker -> the ticket it waits with (RateBucket.wait_turn), woken by a new pace
        pace = self.bucket._pace
        while events and done < requests:
            at, worker, what, ticket = heapq.heappop(events)
            if what == "turn" and waiting.get(worker) is not ticket:
                continue  # superseded: the worker was woken to take a new turn
            self.clock.now = max(self.clock.now, at)
            if what == "send":
                ticket = self.bucket.reserve(1)
                if ticket.start > self.clock.now:
                    waiting[worker] = ticket
                    heapq.heappush(events, (ticket.start, worker, "turn", ticket))
                else:
                    heapq.heappush(events, (self.clock.now + self.latency, worker, "reply", ticket))
            elif what == "turn":
                del waiting[worker]
                heapq.heappush(events, (self.clock.now + self.latency, worker, "reply", ticket))
            else:
                refused = self.refuse(at - self.latency)
                self.replies.append((at, refused))
                if refused:
                    self.bucket.told_to_wait(rate_limited=True, ticket=ticket)
                    heapq.heappush(events, (at + self.wait, worker, "send", None))
                else:
                    self.bucket.succeeded(ticket)
                    done += 1
                    heapq.heappush(events, (at, worker, "send", None))
                self.rates.append(self.bucket.describe().learned_requests_per_second)
                self.refusing.append(self.bucket.refusing())
            if self.bucket._pace != pace:
                pace = self.bucket._pace
                for waiter, old in list(waiting.items()):
                    waiting[waiter] = new = self.bucket.due(old)
                    heapq.heappush(events, (max(new.start, self.clock.now), waiter, "turn", new))


@pytest.mark.parametrize("share", [0.15, 0.30])
@pytest.mark.parametrize("seed", range(5))
def test_random_429s_never_lower_the_rate(share: float, seed: int) -> None:
    import random

    draw = random.Random(seed)
    simulation = Simulation(lambda t: draw.random() < share)
    simulation.run(5_000)
    refused = sum(r for _, r in simulation.replies)
    assert refused / len(simulation.replies) == pytest.approx(share, abs=0.03)  # the noise was there
    assert set(simulation.rates) == {None}
    assert not any(simulation.refusing)  # so a 429 without Retry-After is retried soon, not backed off


def test_a_server_refusing_nearly_everything_is_backed_off_from() -> None:
    import random

    draw = random.Random(0)
    simulation = Simulation(lambda t: draw.random() < 0.95)  # its workers retry a second after a 429
    simulation.run(50)
    assert any(simulation.refusing)  # so the dispatcher's backoff grows for each refused request
    # and the bucket paces it (a refused burst of three confirmed the limit): not 32 a second
    assert simulation.rates[-1] is not None
    last_minute = [t for t, _ in simulation.replies if t > simulation.clock.now - 60]
    assert len(last_minute) <= 60


def test_a_hiccup_is_not_a_server_refusing_most_requests() -> None:
    # A server answering 320 requests a second refuses every one for 0.2 s: the last 32 replies
    # are all 429s, but not three quarters of the last two seconds'. Backing off for it held the
    # requests it refused twice for up to 16 s.
    clock = Clock()
    bucket = RateBucket(None, None, 16, clock=clock)
    for i in range(700):
        clock.now += 1 / 320
        ticket = bucket.reserve(1)
        if i >= 636:  # the last 0.2 s
            bucket.told_to_wait(rate_limited=True, ticket=ticket, stated_wait=True)
        else:
            bucket.succeeded(ticket)
    assert not bucket.refusing()
    for _ in range(640):  # two seconds of nothing but 429s: it is refusing
        clock.now += 1 / 320
        bucket.told_to_wait(rate_limited=True, ticket=bucket.reserve(1), stated_wait=True)
    assert bucket.refusing()


class TokenBucketServer:
    """An undisclosed limit: ``per_second`` refilled into a bucket of ``burst`` (no headers)."""

    def __init__(self, per_second: float, burst: float) -> None:
        self.rate, self.capacity = per_second, burst
        self.level, self.at = burst, 100.0

    def __call__(self, t: float) -> bool:
        self.level = min(self.capacity, self.level + (t - self.at) * self.rate)
        self.at = t
        if self.level >= 1:
            self.level -= 1
            return False
        return True


@pytest.mark.parametrize(("per_minute", "burst"), [(120, 2), (120, 120), (300, 5), (300, 300)])
def test_a_real_token_bucket_is_learned_within_30_replies_of_its_first_429s(per_minute: int, burst: int) -> None:
    simulation = Simulation(TokenBucketServer(per_minute / 60, burst), wait=0.5)
    simulation.run(burst + per_minute // 2)  # the burst, then half a minute at the rate
    first_429 = next(i for i, (_, refused) in enumerate(simulation.replies) if refused)
    learned_at = next(i for i, rate in enumerate(simulation.rates) if rate is not None)
    assert learned_at - first_429 < 30
    # and it stays learned (no cut undone): paced near the server's rate, the 429s stop crowding
    assert simulation.bucket._learned.undone == 0 and simulation.rates[-1] is not None
    late = [refused for t, refused in simulation.replies if t > simulation.clock.now - 10]
    assert sum(late) <= len(late) / 4
    # The rate grows no faster than replies to it come back: the 429s stay rare once it is
    # learned (20 % of the replies with 300/min before the rate's growth was capped).
    learned_at_time = simulation.replies[learned_at][0]
    after = [refused for t, refused in simulation.replies if t > learned_at_time + 5]
    assert sum(after) <= len(after) / 8
    assert simulation.clock.now - 100 <= 1.25 * (per_minute // 2) / (per_minute / 60)  # the ideal: 30 s


def test_a_cut_made_for_a_burst_of_429s_that_does_not_depend_on_the_pace_is_undone() -> None:
    # Every request arriving in the first 0.3 s of each second is refused (a server's hiccups),
    # whatever the pace: crowded enough to cut, but a slower pace refuses as large a share.
    simulation = Simulation(lambda t: (t % 1.0) < 0.3, wait=0.2)
    simulation.run(3_000)
    assert simulation.bucket._learned.undone >= 1  # a cut was tried, and undone
    assert simulation.rates[-1] is None


def test_429s_that_state_their_wait_teach_no_rate() -> None:
    # Obeyed, never learned from: bursts of them (a server's hiccups) would otherwise cut the pace
    clock = Clock()
    bucket = RateBucket(None, None, 16, clock=clock)
    for i in range(300):
        clock.now += 0.01
        ticket = bucket.reserve(1)
        if i % 40 < 12:  # runs of 12 refusals, each saying Retry-After
            bucket.told_to_wait(rate_limited=True, ticket=ticket, stated_wait=True)
        else:
            bucket.succeeded(ticket)
    assert bucket.describe().learned_requests_per_second is None
    assert bucket.describe().rate_limited_replies == 96  # still counted and shown

"""The limiter against noisy servers and undisclosed limits on a fake clock: hundreds of runs a second.

    python benchmarks/limits_sim.py [--seeds 60]

``benchmarks/chaos.py`` measures the real client against real servers, five seeds a row in
minutes; this models what ``dispatch`` does with a bucket (16 slots freed while a refused
request waits; a 429 without a stated wait retried after 0.25-0.5 s, or as soon as a request
sent after it succeeds, backing off only while the bucket says the server is refusing; a
request waiting for its turn woken when the learned pace changes) and runs
``dataformer_nb.limits.RateBucket`` itself against the same kinds of server, on a fake clock,
so that a change to the limiter can be tried against many seeds in a second. Figures are the
model's, not the client's: confirm a change with ``chaos.py``.

Servers: 429s in stretches of ~0.2 s (hiccups, a share of the time refusing everything) and
independent 429s, at 15 % and 30 %, no Retry-After; undisclosed token buckets (RPM 120 and 300,
one second's or one minute's burst). The reference is the same model with no limiter at all
and the openai SDK's backoff (0.5 s doubling, retried until it succeeds).
"""

from __future__ import annotations

import argparse
import heapq
import random
import statistics
from collections.abc import Callable

from dataformer_nb.limits import RateBucket

Server = Callable[[float], bool]  # True: the request arriving at that time is refused (429)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def hiccups(share: float, mean_seconds: float, seed: int) -> Server:
    """Stretches of refusal (mean ``mean_seconds``) between stretches of service, as
    ``benchmarks/server.py --burst429`` draws them."""
    rng = random.Random(seed)
    state = {"in": False, "switch": 0.0}

    def refused(t: float) -> bool:
        if not state["switch"]:
            state["in"] = rng.random() < share
            state["switch"] = t + rng.expovariate(1 / (mean_seconds if state["in"] else
                                                       mean_seconds * (1 - share) / share))
        while t >= state["switch"]:
            state["in"] = not state["in"]
            mean = mean_seconds if state["in"] else mean_seconds * (1 - share) / share
            state["switch"] += rng.expovariate(1 / mean)
        return bool(state["in"])
    return refused


def independent(share: float, seed: int) -> Server:
    rng = random.Random(seed)
    return lambda t: rng.random() < share


def token_bucket(per_second: float, burst: float) -> Server:
    state = {"level": burst, "at": None}

    def refused(t: float) -> bool:
        at = t if state["at"] is None else state["at"]
        state["level"] = min(burst, state["level"] + (t - at) * per_second)
        state["at"] = t
        if state["level"] >= 1:
            state["level"] -= 1
            return False
        return True
    return refused


def run(server: Server, n: int = 300, slots: int = 16, latency: float = 0.05, seed: int = 0,
        limiter: bool = True) -> tuple[float, int]:
    """Seconds until ``n`` requests succeeded, and the 429s received. ``limiter=False``: the
    openai SDK's way (no pacing, each request backing off 0.5 s doubling up to 8 s)."""
    rng = random.Random(seed + 1000)
    clock = Clock()
    bucket = RateBucket(None, None, slots, clock=clock)
    queue, waits, events = list(range(n)), [0] * n, []
    free, order, refused_count = slots, 0, 0
    waiting: dict[int, object] = {}  # request -> its ticket, while it waits for its turn (RateBucket.wait_turn)
    retrying: dict[int, float] = {}  # refused request -> its order, while a later success may wake it (retry_after)
    retry_event: dict[int, int] = {}  # refused request -> its retry's event (a woken request's earlier one is void)

    def push(at: float, kind: str, request: int, ticket: object = None, sent: float | None = None) -> None:
        nonlocal order
        order += 1
        heapq.heappush(events, (at, order, kind, request, ticket, sent))

    def start() -> None:
        nonlocal free
        while free and queue:
            request = queue.pop(0)
            free -= 1
            ticket = bucket.reserve(1) if limiter else None
            if ticket is not None and ticket.start > clock.now:
                waiting[request] = ticket
                push(ticket.start, "turn", request, ticket)
            else:
                push(clock.now + latency, "reply", request, ticket, clock.now)
    start()
    pace = bucket._pace
    while events:
        at, _, kind, request, ticket, sent = heapq.heappop(events)
        if kind == "turn" and waiting.get(request) is not ticket:
            continue  # woken earlier or later: a newer turn stands
        if kind == "retry" and retry_event.get(request) != ticket:
            continue  # woken earlier: the server served again
        clock.now = at
        if kind == "turn":
            del waiting[request]
            push(at + latency, "reply", request, ticket, at)
        elif kind == "reply":
            free += 1
            if server(sent):
                refused_count += 1
                waits[request] += 1
                if limiter:
                    bucket.told_to_wait(rate_limited=True, ticket=ticket)
                    refusing = bucket.refusing()
                    ceiling = 0.5 * 2 ** ((min(waits[request], 6) if refusing else 1) - 1)
                    delay = ceiling / 2 + rng.uniform(0, ceiling / 2)
                    if not refusing:  # RateBucket.retry_after: sooner if a later request succeeds
                        retrying[request] = ticket.order
                else:
                    delay = min(0.5 * 2 ** (waits[request] - 1), 8.0) * (1 - 0.25 * rng.random())
                retry_event[request] = order + 1
                push(at + delay, "retry", request, order + 1)
            elif limiter:
                bucket.succeeded(ticket)
                for waiter, refused_order in list(retrying.items()):
                    if refused_order < ticket.order:
                        del retrying[waiter]
                        retry_event[waiter] = order + 1
                        push(at, "retry", waiter, order + 1)
        else:
            retrying.pop(request, None)
            del retry_event[request]
            queue.append(request)
        if limiter and bucket._pace != pace:  # the waiting requests are woken to take a turn under it
            pace = bucket._pace
            for waiter, old in list(waiting.items()):
                waiting[waiter] = new = bucket.due(old)
                push(max(new.start, clock.now), "turn", waiter, new)
        start()
    return clock.now - 100.0, refused_count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=60)
    args = parser.parse_args()
    print("| server | 429s | ours: median / p90 / max s | SDK's backoff: median / max s "
          "| slowest of 5 / SDK median of 5: worst, median |\n|---|---:|---|---|---|")
    for name, make in (("hiccups of ~0.2 s", lambda share, s: hiccups(share, 0.2, s)),
                       ("independent", independent)):
        for share in (0.15, 0.30):
            ours = [run(make(share, s), seed=s)[0] for s in range(args.seeds)]
            sdk = [run(make(share, s), seed=s, limiter=False)[0] for s in range(args.seeds)]
            groups = [max(ours[g:g + 5]) / statistics.median(sdk[g:g + 5]) for g in range(0, args.seeds - 4, 5)]
            ranked = sorted(ours)
            print(f"| {name} | {share:.0%} | {statistics.median(ours):.2f} / {ranked[int(0.9 * len(ours))]:.2f} / "
                  f"{ranked[-1]:.2f} | {statistics.median(sdk):.2f} / {max(sdk):.2f} | "
                  f"{max(groups):.2f}, {statistics.median(groups):.2f} |")
    print("\n| undisclosed bucket | burst | x ideal (30 s) | 429s |\n|---|---:|---:|---:|")
    for per_minute, burst in ((120, 2), (120, 120), (300, 5), (300, 300)):
        seconds, refused = run(token_bucket(per_minute / 60, burst), n=burst + per_minute // 2)
        print(f"| {per_minute} req/min | {burst} | {seconds / 30:.2f} | {refused} |")


if __name__ == "__main__":
    main()

"""`python -m benchmarks.chaos` (`make chaos`): replicas and Redis die under load, and every
stream still ends honestly (issue 25).

Two proxy replicas behind nginx share one redis-server and a fake upstream, all on loopback.
N clients send a mix of exact, UTF-8, byte-split, abandoned, failing and resumable streams
while, on a schedule, a replica is SIGKILLed and started again, Redis is restarted (empty)
and Redis is made slow (a Lua script holds its thread past PROXY_REDIS_TIMEOUT). Every
response is judged (benchmarks/chaos_judge.py). The last fault is a Redis restart followed
by a calm stretch of load: afterwards no stream slot may remain in Redis (a killed replica's
slots lapse by design, so none may be killed after it), and no log may hold a traceback.
A probe times the admission script's round trip (the proxy's own RedisStreamCounter)
meanwhile: the figures PROXY_REDIS_TIMEOUT's default rests on. Prints one summary line;
exits 1 on any wrong response, leaked slot or traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis.asyncio as redis

from benchmarks.chaos_clients import MIX, Kills, one_request
from benchmarks.chaos_judge import Tally
from benchmarks.chaos_servers import (
    Service,
    nginx_service,
    redis_service,
    replica_service,
    upstream_service,
)
from proxy.admission.counters import RedisStreamCounter
from proxy.settings import Settings

KEYS = tuple(f"chaos-{i}" for i in range(4))
SLOTS = "llm-stream-proxy:stream-slots:*"
PROBE = "chaos-probe"
# Holds Redis's one thread for ARGV[1] microseconds, as a loaded machine would.
BUSY = """
local start = redis.call('TIME')
repeat
  local now = redis.call('TIME')
until (now[1] - start[1]) * 1000000 + (now[2] - start[2]) >= tonumber(ARGV[1])
return 1
"""


@dataclass(frozen=True, slots=True)
class ChaosConfig:
    duration: float = 75.0
    clients: int = 32
    kill_every: float = 20.0
    redis_every: float = 30.0
    slow_every: float = 10.0
    calm: float = 15.0  # load after the last fault (a Redis restart), before settling
    redis_timeout: float = Settings.model_fields["redis_timeout"].default  # the replicas'

    seed: int = 25


@dataclass(slots=True)
class Servers:
    redis: Service
    upstream: Service
    replicas: list[Service]
    nginx: Service
    folder: Path

    def all(self) -> list[Service]:
        return [self.nginx, *self.replicas, self.upstream, self.redis]


@dataclass(slots=True)
class Faults:
    kills: Kills = field(default_factory=Kills)
    redis_restarts: int = 0
    slow: int = 0
    busy_until: float = 0.0  # the probe's samples meanwhile are not Redis's own speed
    down: bool = False


def start_servers(folder: Path, config: ChaosConfig) -> Servers:
    store, upstream = redis_service(folder), upstream_service(folder)
    env = {
        "PROXY_UPSTREAM_URL": upstream.url,
        "PROXY_REDIS_URL": f"redis://127.0.0.1:{store.port}/0",
        "PROXY_REDIS_TIMEOUT": str(config.redis_timeout),
        "PROXY_RESUME": "true",
        "PROXY_API_KEYS": ",".join(KEYS),
        "PROXY_MAX_STREAMS_PER_KEY": "200",
        "PROXY_IDLE_TIMEOUT": "3",
        "PROXY_TOTAL_TIMEOUT": "60",
        "PROXY_SHUTDOWN_GRACE": "5",
        "PROXY_LOG_FORMAT": "text",
    }
    replicas = [replica_service(i, folder, env) for i in range(2)]
    nginx = nginx_service([replica.port for replica in replicas], folder)
    return Servers(store, upstream, replicas, nginx, folder)


async def schedule(servers: Servers, config: ChaosConfig, faults: Faults, start: float) -> None:
    """The faults, until the calm stretch: then one last Redis restart."""
    clock = asyncio.get_running_loop().time
    calm_from = start + config.duration - config.calm
    due = {"kill": config.kill_every, "redis": config.redis_every, "slow": config.slow_every}
    next_at = {name: start + every for name, every in due.items()}
    while True:
        name = min(next_at, key=lambda fault: next_at[fault])
        if next_at[name] >= calm_from:
            break
        await asyncio.sleep(max(0.0, next_at[name] - clock()))
        next_at[name] += due[name]
        if name == "kill":
            await kill_a_replica(servers, faults)
        elif name == "redis":
            await restart_redis(servers, faults)
        else:
            await slow_redis(servers, config, faults)
    await asyncio.sleep(max(0.0, calm_from - clock()))
    await restart_redis(servers, faults)


async def kill_a_replica(servers: Servers, faults: Faults) -> None:
    victim = servers.replicas[faults.kills.count % len(servers.replicas)]
    faults.kills.note(time.monotonic())
    victim.kill()
    await asyncio.sleep(1.0)
    await asyncio.to_thread(victim.start)
    faults.kills.note_back(time.monotonic())


async def restart_redis(servers: Servers, faults: Faults) -> None:
    faults.down = True
    servers.redis.kill()
    await asyncio.to_thread(servers.redis.start)
    faults.redis_restarts += 1
    faults.down = False


async def slow_redis(servers: Servers, config: ChaosConfig, faults: Faults) -> None:
    client = redis.Redis(port=servers.redis.port, socket_timeout=10)
    busy = config.redis_timeout + 0.5
    faults.busy_until = time.monotonic() + busy + 0.5
    try:
        await client.eval(BUSY, 0, int(busy * 1_000_000))
        faults.slow += 1
    except (redis.RedisError, OSError):
        pass  # restarted meanwhile
    finally:
        await client.aclose()


async def probe(port: int, faults: Faults, stop_at: float, samples: list[float]) -> None:
    """The admission script's round trip, every 20 ms, while nothing slows Redis on purpose."""
    client = redis.Redis(port=port, socket_timeout=5, socket_connect_timeout=1)
    counter = RedisStreamCounter(client, expiry=60)
    try:
        while time.monotonic() < stop_at:
            began = time.monotonic()
            try:
                await counter.acquire(PROBE, 1_000_000)
                took = time.monotonic() - began
                await counter.release(PROBE)
            except (redis.RedisError, OSError):
                took = None
            if took is not None and not faults.down and began > faults.busy_until:
                samples.append(took)
            await asyncio.sleep(0.02)
    finally:
        await counter.aclose()
        await client.aclose()


async def client_loop(
    number: int, url: str, stop_at: float, tally: Tally, kills: Kills, seed: int
) -> None:
    rng = random.Random(seed * 1000 + number)
    serial = 0
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        while time.monotonic() < stop_at:
            serial += 1
            kind = rng.choice(MIX)
            key = KEYS[number % len(KEYS)]
            for outcome in await one_request(client, kind, f"c{number}-{serial}", key, kills):
                tally.add(outcome)


async def leaked_slots(port: int) -> int:
    """Stream slots still in Redis once every stream has ended (waits up to 10 s)."""
    client = redis.Redis(port=port, socket_timeout=5)
    try:
        for _ in range(100):
            keys = [key async for key in client.scan_iter(SLOTS) if PROBE.encode() not in key]
            held = sum([int(await client.zcard(key)) for key in keys])
            if held == 0:
                return 0
            await asyncio.sleep(0.1)
        return held
    finally:
        await client.aclose()


def tracebacks(folder: Path) -> int:
    return sum(log.read_text(errors="replace").count("Traceback") for log in folder.glob("*.log"))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


@dataclass(slots=True)
class Report:
    tally: Tally
    faults: Faults
    leaked: int
    tracebacks: int
    samples: list[float]
    config: ChaosConfig

    @property
    def ok(self) -> bool:
        return self.tally.verdicts["wrong"] == 0 and self.leaked == 0 and self.tracebacks == 0

    def line(self) -> str:
        s, c = self.samples, self.config
        latency = " ".join(
            f"{name} {percentile(s, q):.1f}"
            for name, q in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999), ("max", 1.0))
        )
        return (
            f"chaos {c.duration:.0f} s, {c.clients} clients, 2 replicas: {self.tally.line()};"
            f" replica kills {self.faults.kills.count}, redis restarts"
            f" {self.faults.redis_restarts}, slow redis {self.faults.slow};"
            f" leaked slots {self.leaked}; tracebacks {self.tracebacks};"
            f" admission round trip ms {latency} ({len(s)} samples): "
            + ("OK" if self.ok else "FAILED")
        )


async def soak(config: ChaosConfig, folder: Path) -> Report:
    servers = await asyncio.to_thread(start_servers, folder, config)
    tally, faults, samples = Tally(), Faults(), list[float]()
    try:
        start, began = asyncio.get_running_loop().time(), time.monotonic()
        stop_at = began + config.duration
        clients = [
            client_loop(n, servers.nginx.url, stop_at, tally, faults.kills, config.seed)
            for n in range(config.clients)
        ]
        await asyncio.gather(
            schedule(servers, config, faults, start),
            probe(servers.redis.port, faults, stop_at, samples),
            *clients,
        )
        leaked = await leaked_slots(servers.redis.port)
    finally:
        for service in servers.all():
            await asyncio.to_thread(service.stop)
    return Report(tally, faults, leaked, tracebacks(folder), samples, config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__)
    defaults = ChaosConfig()
    for name in ChaosConfig.__dataclass_fields__:
        kind = type(getattr(defaults, name))
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=kind, default=getattr(defaults, name)
        )
    parser.add_argument("--logs", type=Path, help="keep the logs here (default: a temp folder)")
    args = parser.parse_args(argv)
    config = ChaosConfig(**{name: getattr(args, name) for name in ChaosConfig.__dataclass_fields__})
    with tempfile.TemporaryDirectory(prefix="chaos-") as temp:
        folder = args.logs or Path(temp)
        folder.mkdir(parents=True, exist_ok=True)
        report = asyncio.run(soak(config, folder))
    for wrong in report.tally.wrong:
        print(f"WRONG {wrong}", file=sys.stderr)
    print(report.line())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

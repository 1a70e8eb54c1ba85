"""Times pyasic's telemetry sweeps (hashrate and power of every miner) over an address range, for
`cargo hashsink-bench fleet`, on the same terms as hashsink's: identification first (not timed),
then a cold sweep, then the best of three warm ones. Prints one JSON line.

usage: sweep.py FIRST_IP COUNT
"""
import asyncio
import ipaddress
import json
import sys
import time

import pyasic


async def main(first, count):
    # hashsink's emulator puts 250 miners in each /24 (.1 to .250).
    ips = []
    base = int(ipaddress.IPv4Address(first)) - 1
    i = 0
    while len(ips) < count:
        host = i % 250 + 1
        subnet = i // 250
        ips.append(str(ipaddress.IPv4Address(base + subnet * 256 + host)))
        i += 1
    # pyasic's get_multiple_miners starts every identification at once, and a thousand at once
    # time out on this machine: identify in batches (not timed).
    miners = []
    for k in range(0, len(ips), 100):
        found = await asyncio.gather(*(pyasic.get_miner(ip) for ip in ips[k:k + 100]))
        miners += [m for m in found if m is not None]
    # The same bound on calls in flight as hashsink's sweep (1024).
    limit = asyncio.Semaphore(1024)

    async def read(m):
        async with limit:
            return await m.get_data(include=["hashrate", "wattage", "hashboards"])

    async def sweep():
        started = time.perf_counter()
        data = await asyncio.gather(*(read(m) for m in miners), return_exceptions=True)
        took = time.perf_counter() - started
        answered = sum(1 for d in data if not isinstance(d, Exception) and d.wattage is not None)
        return took, answered

    cold, cold_answered = await sweep()
    warm = [await sweep() for _ in range(3)]
    best, answered = min(warm)
    print(json.dumps({"identified": len(miners), "cold_seconds": cold,
                      "cold_answered": cold_answered, "seconds": best, "answered": answered}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))

"""pyasic against the emulated fleet: does a real third-party client identify each emulated miner
as the make and firmware it emulates, and read its hashrate and power?

usage: identify.py IP=FIRMWARE [IP=FIRMWARE ...]   (FIRMWARE: luxos | braiins-os | stock-antminer)
Prints one line per miner and exits 1 if any check fails.
"""
import asyncio
import sys

import pyasic

# What pyasic should call each emulated firmware (its MinerData.make / .firmware fields).
EXPECTED = {
    "luxos": ("AntMiner", "LuxOS"),
    "braiins-os": ("AntMiner", "BOS+"),
    "stock-antminer": ("AntMiner", "Stock"),
}
# pyasic 0.79 reads Braiins OS power, hashboards and serial number over gRPC (port 50051), which
# the emulator does not speak (it speaks the REST API that asic-rs and hashsink use); its hashrate
# comes over the cgminer API.
POWER_OVER_GRPC = {"braiins-os"}
# pyasic reads stock Antminer (bmminer) telemetry from the cgminer API, which reports no power
# on an S19j Pro; hashsink reads the model's power from the web interface instead.
POWER_NOT_READ = POWER_OVER_GRPC | {"stock-antminer"}


async def check(ip, firmware):
    miner = await pyasic.get_miner(ip)
    if miner is None:
        return [f"{ip}: pyasic did not identify it"]
    if firmware in POWER_OVER_GRPC:
        include = ["hashrate"]
    else:
        # LuxOS hashrate reaches pyasic 0.79 only through the hashboards (its summary parser
        # returns early), so ask for them.
        include = ["hashrate", "wattage", "hashboards"]
    data = await miner.get_data(include=include)
    make, fw = EXPECTED[firmware]
    problems = []
    if str(data.make) != make:
        problems.append(f"make {data.make!r}, expected {make!r}")
    if str(data.firmware) != fw:
        problems.append(f"firmware {data.firmware!r}, expected {fw!r}")
    hashrate = float(data.hashrate) if data.hashrate is not None else None
    if hashrate is None or hashrate <= 0:
        problems.append(f"hashrate {data.hashrate!r}")
    if firmware not in POWER_NOT_READ and not (data.wattage and data.wattage > 0):
        problems.append(f"wattage {data.wattage!r}")
    print(f"{ip}: {type(miner).__name__} make={data.make} model={data.model} firmware={data.firmware} "
          f"hashrate={hashrate} wattage={data.wattage} {'OK' if not problems else 'FAIL: ' + '; '.join(problems)}")
    return [f"{ip}: {p}" for p in problems]


async def main(pairs):
    results = await asyncio.gather(*(check(ip, fw) for ip, fw in pairs))
    failures = [p for r in results for p in r]
    for f in failures:
        print("FAIL", f, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    pairs = [arg.split("=", 1) for arg in sys.argv[1:]]
    sys.exit(asyncio.run(main(pairs)))

"""The plant's SCADA station for the IEC 60870-5-104 tests: a real c104 server (PyPI; GPL, so it
runs only here, as a separate process, never linked) on 127.0.0.1 with station (common address)
47: IOA 11 is the surplus in kW (M_ME_NC_1, sent every 200 ms and on interrogation), IOA 20 the
plant's trip flag (M_SP_NA_1). The test steers it with JSON lines on standard input:

    {"surplus_kw": 12.5}
    {"trip": true}
    {"invalid": true}          # set the surplus's quality to invalid (false: good again)
    {"wrong_type": true}       # IOA 11 becomes a single point (M_SP_NA_1)

    python3 tests/peers/iec104_server.py --port 12404
"""

import argparse
import json
import sys
import time

import c104


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = c104.Server(ip="127.0.0.1", port=args.port)
    station = server.add_station(common_address=47)
    surplus = station.add_point(io_address=11, type=c104.Type.M_ME_NC_1, report_ms=200)
    surplus.value = 0.0
    trip = station.add_point(io_address=20, type=c104.Type.M_SP_NA_1, report_ms=200)
    trip.value = False
    server.start()
    while not server.is_running:
        time.sleep(0.05)
    print("ready", flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        msg = json.loads(line)
        if "surplus_kw" in msg:
            surplus.value = float(msg["surplus_kw"])
            surplus.transmit(cause=c104.Cot.SPONTANEOUS)
        if "trip" in msg:
            trip.value = bool(msg["trip"])
            trip.transmit(cause=c104.Cot.SPONTANEOUS)
        if "invalid" in msg:
            surplus.quality = c104.Quality.Invalid if msg["invalid"] else c104.Quality()
        if "wrong_type" in msg:
            station.remove_point(11)
            surplus = station.add_point(io_address=11, type=c104.Type.M_SP_NA_1, report_ms=200)
            surplus.value = True
        print("ok", line.strip(), flush=True)


if __name__ == "__main__":
    main()

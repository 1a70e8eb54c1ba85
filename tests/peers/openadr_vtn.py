"""A utility's OpenADR 2.0b VTN for the OpenADR tests: a real openleadr server (PyPI) on
127.0.0.1, plain HTTP. It registers any VEN, asks for its TELEMETRY_USAGE report every second,
and takes commands from the test as JSON lines on standard input:

    {"event": {"signal": "LOAD_DISPATCH", "type": "setpoint",
               "intervals": [[start_in_s, duration_s, value], ...]}}
    {"cancel": "EVENT_ID"}
    {"garbage": true}          # answer every request with malformed XML (false: stop)

It prints what happened as lines on standard output, flushed:
    ready | registered VEN_ID | event EVENT_ID | opt EVENT_ID optIn | report WATTS

    python3 tests/peers/openadr_vtn.py --port 18080
"""

import argparse
import asyncio
import json
import sys
import threading
from datetime import datetime, timedelta, timezone

from aiohttp import web
from openleadr import OpenADRServer, enable_default_logging

GARBAGE = False
VENS = {}


def say(*words):
    print(*words, flush=True)


async def on_create_party_registration(info):
    ven_id = "ven_" + info["ven_name"]
    VENS[ven_id] = {"ven_id": ven_id, "ven_name": info["ven_name"], "registration_id": "reg_" + ven_id}
    say("registered", ven_id)
    return ven_id, "reg_" + ven_id


def ven_lookup(ven_id):
    return VENS.get(ven_id)


def on_report(values):
    for _, value in values:
        say("report", value)


async def on_register_report(ven_id, resource_id, measurement, unit, scale,
                             min_sampling_interval, max_sampling_interval):
    return on_report, timedelta(seconds=1)


def on_opt(ven_id, event_id, opt_type):
    say("opt", event_id, opt_type)


@web.middleware
async def garbage(request, handler):
    if GARBAGE:
        return web.Response(text="<oadrPayload><oadrResponse>not closed", content_type="application/xml")
    return await handler(request)


def command(server, line):
    global GARBAGE
    msg = json.loads(line)
    if "garbage" in msg:
        GARBAGE = bool(msg["garbage"])
        say("garbage", GARBAGE)
    if "event" in msg:
        e = msg["event"]
        now = datetime.now(timezone.utc)
        intervals = [
            {"dtstart": now + timedelta(seconds=start), "duration": timedelta(seconds=length),
             "signal_payload": float(value)}
            for start, length, value in e["intervals"]
        ]
        for ven_id in list(VENS):
            event_id = server.add_event(ven_id=ven_id, signal_name=e["signal"], signal_type=e["type"],
                                        intervals=intervals, callback=on_opt,
                                        event_id=e.get("id"))
            say("event", event_id)
    if "cancel" in msg:
        for ven_id in list(VENS):
            server.cancel_event(ven_id, msg["cancel"])
        say("cancelled", msg["cancel"])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--poll-s", type=float, default=1.0)
    args = parser.parse_args()
    enable_default_logging()
    server = OpenADRServer(vtn_id="test_vtn", http_host="127.0.0.1", http_port=args.port,
                           requested_poll_freq=timedelta(seconds=args.poll_s), ven_lookup=ven_lookup)
    server.app.middlewares.append(garbage)
    server.add_handler("on_create_party_registration", on_create_party_registration)
    server.add_handler("on_register_report", on_register_report)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    def read_stdin():
        for line in sys.stdin:
            if line.strip():
                loop.call_soon_threadsafe(command, server, line)

    threading.Thread(target=read_stdin, daemon=True).start()
    loop.create_task(server.run())
    loop.call_later(0.5, say, "ready")
    loop.run_forever()


if __name__ == "__main__":
    main()

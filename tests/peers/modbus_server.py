"""A plant meter / PLC for the Modbus tests: a real pymodbus TCP server with 200 holding and 200
input registers, all zero at start. The test writes the surplus into it over Modbus (as the
plant's own systems would) and reads back what the daemon writes.

    python3 tests/peers/modbus_server.py --port 15020
"""

import argparse

from pymodbus.datastore import (
    ModbusDeviceContext,
    ModbusSequentialDataBlock,
    ModbusServerContext,
)
from pymodbus.server import StartTcpServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    device = ModbusDeviceContext(
        hr=ModbusSequentialDataBlock(0, [0] * 200),
        ir=ModbusSequentialDataBlock(0, [0] * 200),
    )
    context = ModbusServerContext(devices=device, single=True)
    StartTcpServer(context=context, address=(args.host, args.port))


if __name__ == "__main__":
    main()

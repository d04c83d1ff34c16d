"""An independent SMP client against the station's simulator: Python's `smpclient` uploads a
file over the serial transport, then asks the device for its SHA-256 (fs group hash command)
and reads it back. Prints one JSON line: the bytes sent, the device's hash and the file read
back. Used by tests/smp.rs; run from the virtual environment `make test` creates."""

import asyncio
import hashlib
import json
import sys

from smpclient import SMPClient
from smpclient.generics import error, success
from smpclient.requests.file_management import FileDownload, FileHashChecksum
from smpclient.requests.os_management import EchoWrite
from smpclient.transport.serial import SMPSerialTransport


async def main(port: str, path: str, size: int) -> int:
    data = bytes((i * 7 + 3) % 256 for i in range(size))
    async with SMPClient(SMPSerialTransport(), port, timeout_s=5.0) as client:
        echo = await client.request(EchoWrite(d="smpclient"))
        if not success(echo):
            print(json.dumps({"error": f"echo: {echo}"}))
            return 1
        offsets = [off async for off in client.upload_file(data, path)]
        digest = await client.request(FileHashChecksum(name=path, type="sha256"))
        if error(digest):
            print(json.dumps({"error": f"hash: {digest}"}))
            return 1
        back = await client.request(FileDownload(name=path, off=0))
        if error(back):
            print(json.dumps({"error": f"download: {back}"}))
            return 1
    print(
        json.dumps(
            {
                "echo": echo.r,
                "chunks": len(offsets),
                "sent_sha256": hashlib.sha256(data).hexdigest(),
                "device_sha256": bytes(digest.output).hex(),
                "device_type": digest.type,
                "first_bytes": bytes(back.data[:16]).hex(),
                "len": back.len,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]))))

# ruff: noqa: UP031 - MicroPython code
# The firmware's MQTT client against a real broker, under MicroPython:
# `micropython mp_mqtt.py PORT`, MICROPYPATH = the flash dir. Prints what happened.
import sys
import time

import mqtt

port = int(sys.argv[1])
got = []
c = mqtt.Client("mp-test", "127.0.0.1", port, None, None, keepalive=2, io_timeout=2.0, rx_size=2048)
c.on_message = lambda topic, msg: got.append((bytes(topic), bytes(msg)))
c.subscribe(b"t/echo")
c.subscribe(b"t/from-cpython")
print("connected", c.ensure())
big = bytes(range(256)) * 6
print("published", c.publish(b"t/echo", big), c.publish(b"t/echo", b"qos0", qos=0))
end = time.ticks_add(time.ticks_ms(), 5000)
while len(got) < 2 and time.ticks_diff(end, time.ticks_ms()) > 0:
    c.poll(100)
print("echo", got[:2] == [(b"t/echo", big), (b"t/echo", b"qos0")])
print("ready")  # the CPython side now publishes to t/from-cpython, then waits
end = time.ticks_add(time.ticks_ms(), 8000)
while len(got) < 3 and time.ticks_diff(end, time.ticks_ms()) > 0:
    c.poll(100)
print("from cpython", got[2:3] == [(b"t/from-cpython", b"hello device")])
t = time.ticks_ms()
while time.ticks_diff(time.ticks_ms(), t) < 3000:  # keepalive 2 s: pings keep the link up
    c.poll(100)
print("alive after pings", c.sock is not None and c.connects == 1)
c.disconnect()
print("done")

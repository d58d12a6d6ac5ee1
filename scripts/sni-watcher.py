#!/usr/bin/python3
"""A panel's StatusNotifierWatcher, for scripts/package-test.sh: owns
org.kde.StatusNotifierWatcher on the session bus, prints `registered SERVICE OBJECT` for the
first item that registers and exits 0; exits 1 after TIMEOUT seconds (argv[1], default 60)
without one, 2 if the name is taken. With `stay` (argv[2]) it keeps serving after the first
registration, as a panel does, until killed. Needs python3-gi (Gio)."""
import sys

import gi

gi.require_version("Gio", "2.0")
from gi.repository import Gio, GLib  # noqa: E402

XML = """<node><interface name="org.kde.StatusNotifierWatcher">
<method name="RegisterStatusNotifierItem"><arg name="service" type="s" direction="in"/></method>
<method name="RegisterStatusNotifierHost"><arg name="service" type="s" direction="in"/></method>
<property name="RegisteredStatusNotifierItems" type="as" access="read"/>
<property name="IsStatusNotifierHostRegistered" type="b" access="read"/>
<property name="ProtocolVersion" type="i" access="read"/>
<signal name="StatusNotifierItemRegistered"><arg type="s"/></signal>
</interface></node>"""

timeout = int(sys.argv[1]) if len(sys.argv) > 1 else 60
stay = len(sys.argv) > 2 and sys.argv[2] == "stay"
loop = GLib.MainLoop()
items = []
status = {"code": 1}


def finish(code):
    status["code"] = code
    loop.quit()
    return False


def on_call(conn, sender, path, iface, method, params, invocation):
    if method == "RegisterStatusNotifierItem":
        (service,) = params.unpack()
        # An item may pass its object path only; the sender is then its bus name.
        item = service if not service.startswith("/") else sender + service
        items.append(item)
        invocation.return_value(None)
        conn.emit_signal(None, path, iface, "StatusNotifierItemRegistered",
                         GLib.Variant("(s)", (item,)))
        print(f"registered {sender} {service}", flush=True)
        if stay and len(items) == 1:
            GLib.source_remove(deadline)
        elif not stay:
            # Let the reply and the signal go out before the name disappears.
            GLib.timeout_add(200, finish, 0)
    else:
        invocation.return_value(None)


def on_get(conn, sender, path, iface, prop):
    return {
        "RegisteredStatusNotifierItems": GLib.Variant("as", items),
        "IsStatusNotifierHostRegistered": GLib.Variant("b", True),
        "ProtocolVersion": GLib.Variant("i", 0),
    }[prop]


def on_bus(conn, name):
    node = Gio.DBusNodeInfo.new_for_xml(XML)
    conn.register_object("/StatusNotifierWatcher", node.interfaces[0], on_call, on_get, None)


def on_name(conn, name):
    print(f"watching as {name}", flush=True)


Gio.bus_own_name(Gio.BusType.SESSION, "org.kde.StatusNotifierWatcher",
                 Gio.BusNameOwnerFlags.DO_NOT_QUEUE, on_bus, on_name,
                 lambda conn, name: finish(2))
deadline = GLib.timeout_add_seconds(timeout, finish, 1)
loop.run()
if status["code"] == 1:
    print(f"no StatusNotifierItem registered within {timeout} s", file=sys.stderr)
elif status["code"] == 2:
    print("org.kde.StatusNotifierWatcher is taken or the bus is gone", file=sys.stderr)
sys.exit(status["code"])

#!/usr/bin/python3
"""Closes the X window titled argv[1] as a window manager's close button does (a
WM_DELETE_WINDOW client message), for src-tauri/measure.sh. Exit 1 when no such window is
mapped. Needs python3-xlib and DISPLAY."""
import sys

from Xlib import X, display, protocol

title = sys.argv[1]
d = display.Display()
root = d.screen().root
delete = d.intern_atom("WM_DELETE_WINDOW")
protocols = d.intern_atom("WM_PROTOCOLS")
net_name = d.intern_atom("_NET_WM_NAME")
utf8 = d.intern_atom("UTF8_STRING")


def name(w):
    prop = w.get_full_property(net_name, utf8)
    if prop is not None:
        v = prop.value
        return v.decode() if isinstance(v, bytes) else str(v)
    return w.get_wm_name() or ""


closed = 0
for w in root.query_tree().children:
    try:
        if name(w) != title or w.get_attributes().map_state != X.IsViewable:
            continue
    except Exception:  # a window that went away meanwhile
        continue
    ev = protocol.event.ClientMessage(window=w, client_type=protocols,
                                      data=(32, [delete, X.CurrentTime, 0, 0, 0]))
    w.send_event(ev, event_mask=X.NoEventMask)
    closed += 1
d.flush()
print(f"closed {closed} window(s) titled {title!r}")
sys.exit(0 if closed else 1)

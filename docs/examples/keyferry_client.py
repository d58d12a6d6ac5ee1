#!/usr/bin/env python3
"""A minimal keyferry agent client: Python 3 standard library only (socket, json).

    keyferry_client.py [NAME]            print NAME's token (default: claude) on stdout
    keyferry_client.py --json [NAME]     print get's whole result as JSON (holds the token)
    keyferry_client.py --watch           print the agent's events, one JSON line each

The socket is --socket, else $KEYFERRY_SOCK, else the agent's default path (see
docs/protocol.md). Before sending anything the client asks the kernel (SO_PEERCRED) which
uid serves the socket and refuses any agent that is not running as us.

Exit statuses follow keyferry's: 0 ok, 1 error, 3 not_found, 4 keychain_*, 5 no agent,
6 refused (policy, lock, approval, foreign agent).
"""

import argparse
import json
import os
import socket
import struct
import sys

PROTOCOL_VERSION = 1
MAX_REPLY = 64 * 1024 * 16  # replies can exceed the 64 KiB *request* limit; cap anyway
MAX_SOCKET_PATH = 103

REFUSED = {"agent_locked", "not_allowed", "approval_required", "approval_timeout",
           "denied", "forbidden_user", "foreign_agent", "bad_passphrase"}


class AgentError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message

    def exit_status(self):
        if self.code == "not_found":
            return 3
        if self.code.startswith("keychain_"):
            return 4
        if self.code == "no_agent":
            return 5
        if self.code in REFUSED:
            return 6
        return 1


def default_socket():
    """The agent's own rule, minus the `[agent] socket` config key (pass --socket then)."""
    env = os.environ.get("KEYFERRY_SOCK")
    if env:
        return env
    base = os.environ.get("TMPDIR" if sys.platform == "darwin" else "XDG_RUNTIME_DIR", "")
    if base and os.path.isabs(base) and os.path.isdir(base):
        candidate = os.path.join(base, "keyferry", "agent.sock")
        if len(candidate.encode()) <= MAX_SOCKET_PATH:
            return candidate
    return "/tmp/keyferry-%d/agent.sock" % os.geteuid()


def peer_uid(sock):
    """The uid of the process serving the socket, from the kernel."""
    if not hasattr(socket, "SO_PEERCRED"):
        # macOS: getpeereid()/LOCAL_PEERCRED would be needed; fail closed instead.
        raise AgentError("foreign_agent", "cannot verify the agent's uid on this platform")
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)  # struct ucred { pid_t; uid_t; gid_t; }
    return uid


class Client:
    def __init__(self, path, timeout=120.0):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise AgentError("no_agent", "no keyferry agent is running at %s" % path) from None
        uid = peer_uid(self.sock)
        if uid != os.geteuid():
            self.sock.close()
            raise AgentError("foreign_agent",
                             "%s: the process serving it runs as uid %d, not as you; "
                             "refusing to talk to it" % (path, uid))
        self.rfile = self.sock.makefile("rb")
        self.next_id = 0
        self.events = []  # events that arrived while waiting for a reply
        self.hello = self.call({"op": "hello", "version": PROTOCOL_VERSION,
                                "client": "keyferry_client.py"})

    def _read(self):
        line = self.rfile.readline(MAX_REPLY)
        if not line:
            raise AgentError("io", "the agent closed the connection")
        if not line.endswith(b"\n"):
            raise AgentError("protocol", "reply line too long")
        return json.loads(line)

    def call(self, request):
        self.next_id += 1
        request = dict(request, id=self.next_id)
        self.sock.sendall(json.dumps(request).encode() + b"\n")
        while True:
            msg = self._read()
            if "event" in msg:
                self.events.append(msg["event"])
                continue
            # idle_timeout, line_too_long and forbidden_user carry no id, nor does a
            # bad_request whose line had no readable id: they are about this request too.
            if msg.get("id") not in (None, self.next_id):
                continue
            if not msg.get("ok"):
                err = msg.get("error") or {}
                raise AgentError(err.get("code", "unknown"), err.get("message", "refused"))
            return msg.get("result")

    def next_event(self):
        if self.events:
            return self.events.pop(0)
        self.sock.settimeout(None)  # streams are idle by design
        while True:
            msg = self._read()
            if "event" in msg:
                return msg["event"]

    def close(self):
        self.rfile.close()
        self.sock.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("name", nargs="?", default="claude")
    ap.add_argument("--socket", default=None)
    ap.add_argument("--json", action="store_true", help="print get's whole result")
    ap.add_argument("--watch", action="store_true", help="print events until interrupted")
    args = ap.parse_args()
    try:
        client = Client(args.socket or default_socket())
        if args.watch:
            client.call({"op": "watch"})
            while True:
                print(json.dumps(client.next_event(), ensure_ascii=False), flush=True)
        result = client.call({"op": "get", "name": args.name})
        client.close()
        if args.json:
            print(json.dumps(result, ensure_ascii=False))
        else:
            sys.stdout.write(result["token"] + "\n")
        return 0
    except AgentError as e:
        print("keyferry_client: %s (%s)" % (e.message, e.code), file=sys.stderr)
        return e.exit_status()
    except (OSError, ValueError) as e:  # socket.timeout is an OSError
        print("keyferry_client: %s" % e, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

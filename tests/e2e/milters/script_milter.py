#!/usr/bin/python3
"""A scripted milter on libmilter (Debian's python3-milter): it records what it sees and answers
as its JSON plan says, so that the end-to-end tests can check each milter action against a real
libmilter peer.

    script_milter.py SOCKET PLAN.json RECORD.jsonl

SOCKET is libmilter's form (inet:PORT@127.0.0.1, unix:/path). PLAN keys (all optional):
  "connect" / "helo" / "envfrom" / "envrcpt" / "eoh" / "eom":  "continue" | "accept" | "reject" |
      "tempfail" | "discard" | ["reply", "550", "5.7.1", "text", ...more lines]
  "reject_rcpt": [addresses]         envrcpt rejects these (550 5.7.1), continues the rest
  "edits": [["addheader", name, value], ["insheader", index, name, value],
            ["chgheader", name, index, value], ["delheader", name, index],
            ["replacebody", text], ["quarantine", reason],
            ["addrcpt", address], ["addrcpt_par", address, args], ["delrcpt", address],
            ["chgfrom", address]]                               applied at end of message
  "when_subject": text               only a message whose Subject contains text gets the plan's eom
Each callback appends one JSON line to RECORD: {"event": ..., ...} (headers, body length, macros).
"""
import json
import sys

import Milter

SOCKET, PLAN, RECORD = sys.argv[1], json.load(open(sys.argv[2])), sys.argv[3]
MACROS = ["j", "{daemon_name}", "v", "_", "i", "{mail_addr}", "{rcpt_addr}", "{auth_authen}", "{tls_version}"]


def record(**fields):
    with open(RECORD, "a") as f:
        f.write(json.dumps(fields) + "\n")


def answer(m, what, default="continue"):
    a = PLAN.get(what, default)
    if isinstance(a, list) and a[0] == "reply":
        m.setreply(a[1], a[2], *a[3:])
        return Milter.REJECT if a[1].startswith("5") else Milter.TEMPFAIL
    return {"continue": Milter.CONTINUE, "accept": Milter.ACCEPT, "reject": Milter.REJECT,
            "tempfail": Milter.TEMPFAIL, "discard": Milter.DISCARD}[a]


class Script(Milter.Base):
    def __init__(self):
        self.headers, self.content, self.subject = [], b"", ""

    def macros(self):
        return {name: self.getsymval(name) for name in MACROS if self.getsymval(name)}

    def connect(self, hostname, family, hostaddr):
        record(event="connect", hostname=hostname, addr=str(hostaddr[0]) if hostaddr else None, macros=self.macros())
        return answer(self, "connect")

    def hello(self, name):
        record(event="helo", name=name, macros=self.macros())
        return answer(self, "helo")

    def envfrom(self, sender, *params):
        self.headers, self.content, self.subject = [], b"", ""
        record(event="envfrom", sender=sender, params=list(params), macros=self.macros())
        return answer(self, "envfrom")

    def envrcpt(self, rcpt, *params):
        record(event="envrcpt", rcpt=rcpt, macros=self.macros())
        if rcpt.strip("<>").lower() in [a.lower() for a in PLAN.get("reject_rcpt", [])]:
            self.setreply("550", "5.7.1", f"{rcpt} is not wanted here")
            return Milter.REJECT
        return answer(self, "envrcpt")

    def header(self, name, value):
        self.headers.append([name, value])
        if name.lower() == "subject":
            self.subject = value
        return Milter.CONTINUE

    def eoh(self):
        return answer(self, "eoh")

    def body(self, chunk):
        self.content += chunk
        return Milter.CONTINUE

    def eom(self):
        record(event="eom", headers=self.headers, body=self.content.decode("latin-1"), macros=self.macros())
        if "when_subject" in PLAN and PLAN["when_subject"] not in self.subject:
            return Milter.CONTINUE
        for e in PLAN.get("edits", []):
            if e[0] == "addheader":
                self.addheader(e[1], e[2])
            elif e[0] == "insheader":
                self.addheader(e[2], e[3], e[1])
            elif e[0] == "chgheader":
                self.chgheader(e[1], e[2], e[3])
            elif e[0] == "delheader":
                self.chgheader(e[1], e[2], "")
            elif e[0] == "replacebody":
                self.replacebody(e[1].encode())
            elif e[0] == "quarantine":
                self.quarantine(e[1])
            elif e[0] == "addrcpt":
                self.addrcpt(e[1])
            elif e[0] == "addrcpt_par":
                self.addrcpt(e[1], e[2])
            elif e[0] == "delrcpt":
                self.delrcpt(e[1])
            elif e[0] == "chgfrom":
                self.chgfrom(e[1])
        return answer(self, "eom")

    def abort(self):
        record(event="abort")
        return Milter.CONTINUE

    def close(self):
        return Milter.CONTINUE


Milter.factory = Script
Milter.set_flags(Milter.ADDHDRS | Milter.CHGHDRS | Milter.CHGBODY | Milter.QUARANTINE | Milter.ADDRCPT
                 | Milter.ADDRCPT_PAR | Milter.DELRCPT | Milter.CHGFROM)
Milter.runmilter("script", SOCKET, 60)

"""The log (stderr) has a line for a relay denial and a summary line per transaction."""

import re
import time

from harness import RawSMTP

SUMMARY_KEYS = ("from=<", "to=<", "size=", "status=")


def summary_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if all(k in line for k in SUMMARY_KEYS)]


def test_log_relay_denial_and_summaries(start_mailkeep, capture):
    mk = start_mailkeep(capture.address)
    msgs = {
        "first-sender@client.test": b"Subject: one\r\n\r\n" + b"a" * 500 + b"\r\n",
        "second-sender@client.test": b"Subject: two\r\n\r\n" + b"b" * 3000 + b"\r\n",
    }
    with RawSMTP(mk.host, mk.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<denied-sender@client.test>").code == 250
        assert c.cmd("RCPT TO:<victim@relay-target.test>").code == 550
        assert c.cmd("RSET").code == 250
        for sender, body in msgs.items():
            assert c.send_message(sender, ["user@example.org"], body).code == 250
        c.cmd("QUIT")
    capture.wait_for(2)
    time.sleep(0.5)
    log = mk.log()

    denial = [l for l in log.splitlines() if "victim@relay-target.test" in l]
    assert denial, f"no log line names the denied recipient:\n{log}"
    assert any(re.search(r"reject|denied|refus", l, re.I) for l in denial), denial

    summaries = summary_lines(log)
    for sender, body in msgs.items():
        mine = [l for l in summaries if f"from=<{sender}>" in l]
        assert len(mine) == 1, f"expected one summary for {sender}, got {mine}\n{log}"
        line = mine[0]
        assert "to=<user@example.org>" in line, line
        size = int(re.search(r"size=(\d+)", line).group(1))
        # size of the message as received or as relayed (with Received header)
        assert len(body) <= size <= len(body) + 2000, (size, len(body))


def test_log_summary_for_failed_delivery(start_mailkeep, capture):
    capture.set_data_reply("554 5.7.1 refused by policy")
    mk = start_mailkeep(capture.address)
    with RawSMTP(mk.host, mk.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<refused-sender@client.test>").code == 250
        assert c.cmd("RCPT TO:<user@example.org>").code == 250
        assert c.cmd("DATA").code == 354
        c.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
        assert c.reply().code == 554
    time.sleep(0.5)
    mine = [l for l in summary_lines(mk.log()) if "from=<refused-sender@client.test>" in l]
    assert len(mine) == 1, mk.log()
    status = re.search(r"status=(\S+)", mine[0]).group(1)
    assert not status.lower().startswith(("sent", "ok", "deliver", "accept", "250")), mine[0]

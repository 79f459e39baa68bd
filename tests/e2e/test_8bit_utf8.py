"""8BITMIME bodies, SMTPUTF8 addresses and over-long lines pass through unchanged."""

from harness import RawSMTP, split_received


def relay(mk, mail_cmd: str, rcpts: list[str], msg: bytes):
    with RawSMTP(mk.host, mk.port) as c:
        c.ehlo()
        r = c.cmd(mail_cmd)
        assert r.code == 250, str(r)
        for rcpt in rcpts:
            r = c.cmd(f"RCPT TO:<{rcpt}>")
            assert r.code == 250, str(r)
        assert c.cmd("DATA").code == 354
        c.send(msg + b".\r\n")
        r = c.reply()
        assert r.code == 250, str(r)
        c.cmd("QUIT")


def test_8bitmime_body(mailkeep, capture):
    body = "Grüße aus Köln — ½ €\r\nКириллица и 日本語\r\n".encode("utf-8") + bytes(range(0x80, 0x100)) + b"\r\n"
    msg = (b"From: a@client.test\r\nTo: user@example.org\r\nSubject: 8bit\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + body)
    relay(mailkeep, "MAIL FROM:<a@client.test> BODY=8BITMIME", ["user@example.org"], msg)
    (cap,) = capture.wait_for(1)
    _, rest = split_received(cap.data)
    assert rest == msg
    assert "BODY=8BITMIME" in [o.upper() for o in cap.mail_options], cap.mail_options


def test_smtputf8_addresses(mailkeep, capture):
    sender = "用户@example.org"
    rcpt = "получатель@example.org"
    msg = ("From: 用户 <用户@example.org>\r\nTo: <получатель@example.org>\r\n"
           "Subject: Ünïcödé\r\n\r\nhello\r\n").encode("utf-8")
    relay(mailkeep, f"MAIL FROM:<{sender}> SMTPUTF8", [rcpt], msg)
    (cap,) = capture.wait_for(1)
    assert cap.mail_from == sender
    assert cap.rcpt_tos == [rcpt]
    assert "SMTPUTF8" in [o.upper() for o in cap.mail_options], cap.mail_options
    _, rest = split_received(cap.data)
    assert rest == msg


def test_smtputf8_domain_match_is_on_utf8_address(mailkeep, capture):
    """A UTF-8 local part in one of our domains is accepted; in a foreign domain it is not."""
    with RawSMTP(mailkeep.host, mailkeep.port) as c:
        c.ehlo()
        assert c.cmd("MAIL FROM:<a@client.test> SMTPUTF8").code == 250
        r = c.cmd("RCPT TO:<δοκιμή@other-domain.test>")
        assert r.code == 550 and r.enhanced == "5.7.1", str(r)
        assert c.cmd("RCPT TO:<δοκιμή@example.org>").code == 250


def test_long_lines_pass_unchanged(mailkeep, capture):
    long_line = b"A" * 5000
    header_line = b"X-Long: " + b"h" * 1500
    msg = (b"From: a@client.test\r\nSubject: long\r\n" + header_line + b"\r\n\r\n"
           + long_line + b"\r\nshort\r\n" + b"." + b"b" * 2000 + b"\r\n")
    stuffed = msg.replace(b"\r\n.", b"\r\n..")
    relay(mailkeep, "MAIL FROM:<a@client.test>", ["user@example.org"], stuffed)
    (cap,) = capture.wait_for(1)
    _, rest = split_received(cap.data)
    assert rest == msg

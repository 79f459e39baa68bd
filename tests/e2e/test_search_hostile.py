"""Archive search against hostile and broken mail, end to end: each message is built here and
goes through SMTP into alice's archive while live indexing runs.

- 10,000 MIME parts, 2,000 nested multiparts, a 1 MB header field, 5,000 References, a big
  attachment (BIG_ATTACHMENT_MB), unknown and lying charsets, broken base64 / quoted-printable,
  an unterminated boundary, a garbage Date;
- RFC 2047 subjects in several charsets (found by subject:, decoded in the JSON), RFC 2231
  file names (found by filename:), CJK body text (a two-character word finds it).

The server must keep running and answering SMTP, every accepted message must be searchable
(or its skipping logged), and the gateway's peak RSS stays bounded.
"""

from __future__ import annotations

import base64
import os
import re
import smtplib
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass, field

import pytest

from backup_support import mail_options
from harness import MAILKEEP_BIN, RawSMTP
from index_support import (
    SearchGateway, asan_build, attachments_of, maildir_files, require_binary, sanitizer_report, start_search_gateway,
    stop_search_gateway, vm_hwm_kb, wait_for_count, words,
)

BIG_ATTACHMENT_MB = 20              # the attachment's decoded size; ~27 MB on the wire
MAX_MESSAGE_SIZE = 60 * 1024 * 1024
RSS_LIMIT_MB = 400                  # the gateway's VmHWM after all of it (ASan builds: ASAN_RSS_LIMIT_MB)
ASAN_RSS_LIMIT_MB = 1200            # ASan's shadow memory and quarantine (256 MB) come on top
INDEX_TIMEOUT = 180.0               # seconds for live indexing of all of it
ALICE = "alice@example.org"
SKIP_WORDS = re.compile(r"skip|not index|too (?:large|big|many|deep|long)|truncat|limit", re.I)


# --------------------------------------------------------------------------- the messages

def ew(text: str, charset: str, enc: str = "B") -> str:
    """One RFC 2047 encoded word."""
    raw = text.encode(charset)
    if enc == "B":
        return f"=?{charset}?B?{base64.b64encode(raw).decode()}?="
    q = "".join(chr(b) if (chr(b).isalnum() and b < 128) else ("_" if b == 32 else f"={b:02X}") for b in raw)
    return f"=?{charset}?Q?{q}?="


def head(tag: str, subject: str, extra: str = "", date: str = "Tue, 03 Sep 2002 10:00:00 +0000") -> str:
    return (f"From: Hostile Sender <hostile@attacker.test>\r\nTo: {ALICE}\r\nSubject: {subject}\r\n"
            f"Date: {date}\r\nMessage-ID: <{tag}@hostile.test>\r\nMIME-Version: 1.0\r\n{extra}")


def text_msg(tag: str, subject: str, body: str | bytes, ctype: str = "text/plain; charset=utf-8",
             cte: str = "8bit", extra: str = "") -> bytes:
    b = body.encode("utf-8") if isinstance(body, str) else body
    return (head(tag, subject, extra) + f"Content-Type: {ctype}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n").encode() + b


def many_parts(n: int) -> bytes:
    parts = []
    for i in range(n):
        if i % 100 == 99:
            parts.append(f"--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; "
                         f"filename=\"part{i}.bin\"\r\n\r\nAAAA\r\n")
        else:
            parts.append(f"--b\r\nContent-Type: text/plain\r\n\r\npart {i} hzqpartsbody\r\n")
    return (head("parts10k", "hostile hzqparts ten thousand parts") +
            'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + "".join(parts) + "--b--\r\n").encode()


def deep_nesting(depth: int) -> bytes:
    opening = "".join(f'--n{i}\r\nContent-Type: multipart/mixed; boundary="n{i + 1}"\r\n\r\n' for i in range(depth))
    closing = "".join(f"--n{i}--\r\n" for i in reversed(range(depth + 1)))
    return (head("deep", "hostile hzqdeep nesting") + 'Content-Type: multipart/mixed; boundary="n0"\r\n\r\n'
            + opening + f"--n{depth}\r\nContent-Type: text/plain\r\n\r\nhzqdeepbody at the bottom\r\n" + closing).encode()


def huge_header(size: int) -> bytes:
    line = "x" * 70
    folded = "\r\n ".join([line] * (size // 73))
    return (head("header1mb", "hostile hzqheader one megabyte field", extra=f"X-Huge: {folded}\r\n")
            + "Content-Type: text/plain\r\n\r\nhzqheaderbody\r\n").encode()


def many_references(n: int) -> bytes:
    refs = "\r\n ".join(f"<ref{i}@hostile.test>" for i in range(n))
    return (head("refs5k", "hostile hzqrefs five thousand references", extra=f"References: {refs}\r\n")
            + "Content-Type: text/plain\r\n\r\nbody\r\n").encode()


def big_attachment(mb: int) -> bytes:
    data = os.urandom(mb * 1024 * 1024)
    b64 = base64.encodebytes(data).replace(b"\n", b"\r\n")
    return (head("big", "hostile hzqbig attachment") + 'Content-Type: multipart/mixed; boundary="big"\r\n\r\n'
            + "--big\r\nContent-Type: text/plain\r\n\r\nthe archive is attached\r\n"
            + "--big\r\nContent-Type: application/gzip\r\nContent-Transfer-Encoding: base64\r\n"
              'Content-Disposition: attachment; filename="hzqhuge-archive.tar.gz"\r\n\r\n').encode() + b64 + b"--big--\r\n"


def attachment_msg(tag: str, subject: str, disposition: str, ctype: str = "application/octet-stream") -> bytes:
    return (head(tag, subject) + 'Content-Type: multipart/mixed; boundary="a"\r\n\r\n'
            + "--a\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n"
            + f"--a\r\nContent-Type: {ctype}\r\nContent-Transfer-Encoding: base64\r\n{disposition}\r\n\r\n"
            + base64.b64encode(b"attachment bytes " * 20).decode() + "\r\n--a--\r\n").encode()


@dataclass
class Hostile:
    tag: str                   # Message-ID <tag@hostile.test>
    data: bytes
    marker: str = ""           # an ASCII subject word only this message has
    subject: str | None = None     # the decoded subject the JSON must show
    queries: list[list[str]] = field(default_factory=list)   # each must find this message
    not_queries: list[list[str]] = field(default_factory=list)   # none may find it
    filename: str = ""         # the decoded name of its one attachment (file name tests)


def hostile_messages() -> list[Hostile]:
    out = [
        Hostile("parts10k", many_parts(10_000), "hzqparts", queries=[["has:attachment", "subject:hzqparts"]]),
        Hostile("deep", deep_nesting(2000), "hzqdeep"),
        Hostile("header1mb", huge_header(1024 * 1024), "hzqheader", queries=[["hzqheaderbody"]]),
        Hostile("refs5k", many_references(5000), "hzqrefs"),
        # arrives later: the message refs5k names last (its parent) -- they are one conversation
        Hostile("ref4999", text_msg("ref4999", "hostile hzqrefparent the parent named last", "body\r\n"), "hzqrefparent"),
        Hostile("big", big_attachment(BIG_ATTACHMENT_MB), "hzqbig",
                queries=[[f"larger:{BIG_ATTACHMENT_MB}M", "subject:hzqbig"], ["filename:hzqhuge-archive.tar.gz"],
                         ["has:attachment", "subject:hzqbig"]]),
        # charsets: unknown, lying (Latin-1 bytes declared UTF-8), unknown in an encoded word
        Hostile("badcharset", text_msg("badcharset", "hostile hzqbadcharset unknown charset",
                                       b"caf\xe9 na\xefve hzqbadcharsetbody \xff\xfe\r\n",
                                       ctype='text/plain; charset="x-no-such-charset"'), "hzqbadcharset",
                queries=[["hzqbadcharsetbody"]]),
        Hostile("lyingutf8", text_msg("lyingutf8", "hostile hzqlyingutf8 latin1 declared utf8",
                                      b"Gr\xfc\xdfe aus M\xfcnchen hzqlyingbody\r\n"), "hzqlyingutf8",
                queries=[["hzqlyingbody"]]),
        Hostile("unknownew", text_msg("unknownew", "hostile hzqunknownew " + ew("abc", "us-ascii").replace("us-ascii", "x-unknown"),
                                      "body\r\n"), "hzqunknownew"),
        # raw 8-bit in a header (Latin-1 and UTF-8 bytes), no encoded word
        Hostile("raw8bitsubject", b"From: Hostile Sender <hostile@attacker.test>\r\nTo: alice@example.org\r\n"
                b"Subject: hostile hzqraw8bit \xe4\xf6\xfc \xc3\xa4\r\nDate: Tue, 03 Sep 2002 10:00:00 +0000\r\n"
                b"Message-ID: <raw8bitsubject@hostile.test>\r\nContent-Type: text/plain\r\n\r\nbody\r\n", "hzqraw8bit"),
        Hostile("badb64", text_msg("badb64", "hostile hzqbadb64 broken base64", "aGVsbG8gd29ybGQ=!!**\x01 garbage ===\r\nQUJD\r\n",
                                   ctype="text/plain; charset=utf-8", cte="base64"), "hzqbadb64"),
        Hostile("badqp", text_msg("badqp", "hostile hzqbadqp broken quoted printable",
                                  "soft =\r\nbreak =ZZ =4 =\r\n=E9t=C3=A9 hzqbadqpbody\r\n", cte="quoted-printable"),
                "hzqbadqp", queries=[["hzqbadqpbody"]]),
        Hostile("unterminated", (head("unterminated", "hostile hzqunterminated boundary")
                                 + 'Content-Type: multipart/mixed; boundary="never"\r\n\r\n--never\r\n'
                                   "Content-Type: text/plain\r\n\r\nhzqunterminatedbody and no closing boundary\r\n").encode(),
                "hzqunterminated", queries=[["hzqunterminatedbody"]]),
        Hostile("noboundary", (head("noboundary", "hostile hzqnoboundary multipart without boundary")
                               + "Content-Type: multipart/mixed\r\n\r\njust text hzqnoboundarybody\r\n").encode(), "hzqnoboundary"),
        Hostile("garbagedate", text_msg("garbagedate", "hostile hzqgarbagedate", "body\r\n").replace(
            b"Date: Tue, 03 Sep 2002 10:00:00 +0000", b"Date: 99999999999999999999 Smarch 2002 99:99:99 +9999"),
            "hzqgarbagedate", queries=[["newer_than:2d", "subject:hzqgarbagedate"]]),
        Hostile("html", text_msg("html", "hostile hzqhtml tag soup", "<html>" + "<div><b>" * 20000
                                 + "hzqhtmlbody" + "<" * 50000 + "<script>x</script></html>\r\n", ctype="text/html; charset=utf-8"),
                "hzqhtml"),
        Hostile("empty", (head("empty", "hostile hzqempty no body") + "\r\n").encode(), "hzqempty"),
        Hostile("longline", text_msg("longline", "hostile hzqlongline", "w" * 200_000 + " hzqlonglinebody\r\n"),
                "hzqlongline", queries=[["hzqlonglinebody"]]),
    ]
    # RFC 2047 subjects: the decoded text must be what the JSON shows and what subject: finds
    subjects = [
        ("ew-utf8q", [("Café crème brûlée", "utf-8", "Q")], ["subject:crème", "subject:brûlée"]),
        ("ew-latin1", [("Grüße aus München", "iso-8859-1", "B")], ["subject:münchen"]),
        ("ew-koi8", [("Привет мир", "koi8-r", "B")], ["subject:привет"]),
        ("ew-cp1252", [("Preis €100 Angebot", "windows-1252", "Q")], ["subject:angebot"]),
        ("ew-gb2312", [("中文邮件测试", "gb2312", "B")], ["subject:邮件"]),
        ("ew-iso2022jp", [("会議の議事録", "iso-2022-jp", "B")], ["subject:議事"]),
        # adjacent encoded words: the whitespace between them goes (RFC 2047 6.2)
        ("ew-adjacent", [("Zusammen", "utf-8", "Q"), ("geschrieben", "utf-8", "B")], ["subject:zusammengeschrieben"]),
    ]
    for tag, pieces, queries in subjects:
        marker = "hzq" + re.sub(r"[^a-z0-9]", "", tag)
        decoded = "".join(t for t, _, _ in pieces)
        encoded = " ".join(ew(t, cs, enc) for t, cs, enc in pieces)
        out.append(Hostile(tag, text_msg(tag, f"{marker} {encoded}", "body\r\n"), marker, subject=f"{marker} {decoded}",
                           queries=[[q] for q in queries]))
    # RFC 2231 file names (and the RFC 2047 form mail clients also send)
    names = [
        ("rfc2231-utf8", "报告书.pdf", "Content-Disposition: attachment; filename*=UTF-8''"
         + urllib.parse.quote("报告书.pdf".encode("utf-8")), ["filename:报告书.pdf"]),
        ("rfc2231-cont", "résumé-final.docx", "Content-Disposition: attachment;\r\n filename*0*=UTF-8''"
         + urllib.parse.quote("résumé-".encode("utf-8")) + ";\r\n filename*1=\"final.docx\"",
         ["filename:résumé-final.docx", "filename:docx"]),
        ("rfc2231-latin1", "Grüße aus München.txt", "Content-Disposition: attachment; filename*=iso-8859-1'de'"
         + urllib.parse.quote("Grüße aus München.txt".encode("latin-1")), ["filename:münchen"]),
        ("rfc2047-name", "Präsentation.pptx", 'Content-Disposition: attachment; filename="'
         + ew("Präsentation.pptx", "utf-8", "B") + '"', ["filename:präsentation.pptx"]),
    ]
    for tag, fname, disposition, queries in names:
        marker = "hzq" + re.sub(r"[^a-z0-9]", "", tag)
        out.append(Hostile(tag, attachment_msg(tag, f"hostile {marker}", disposition), marker,
                           queries=[[q] for q in queries], filename=fname))
    # CJK body text: a two-character word in the middle of a sentence finds it, one that is not there does not
    cjk = "会议记录：我们明天讨论数据库的设计。\r\n東京都の天気予報です。\r\n"
    out.append(Hostile("cjk", text_msg("cjk", "hostile hzqcjk", cjk + "hzqcjkbody\r\n"), "hzqcjk",
                       queries=[["数据"], ["天気"], ["讨论"]], not_queries=[["数学"], ["天国"]]))
    return out


# --------------------------------------------------------------------------- the module's world

@dataclass
class HostileWorld:
    sg: SearchGateway
    messages: list[Hostile]
    replies: dict[str, str] = field(default_factory=dict)      # tag -> final SMTP reply
    accepted: list[str] = field(default_factory=list)
    died_after: str | None = None
    live: tuple = ()
    hwm_kb: int = 0
    elapsed: float = 0.0


def _send_one(sg: SearchGateway, msg: bytes) -> str:
    with smtplib.SMTP(sg.gw.host, sg.gw.port, timeout=300) as s:
        s.ehlo("mx.hostile.test")
        try:
            refused = s.sendmail("hostile@attacker.test", [ALICE], msg, mail_options=mail_options(msg))
        except smtplib.SMTPResponseException as exc:
            return f"{exc.smtp_code} {exc.smtp_error.decode('utf-8', 'replace')}"
        except smtplib.SMTPRecipientsRefused as exc:
            return f"refused {exc.recipients}"
        return "250" if not refused else f"refused {refused}"


@pytest.fixture(scope="module")
def hostile():
    require_binary()
    t0 = time.monotonic()
    sg, base = start_search_gateway(users=["alice"], smtp={"max_message_size": MAX_MESSAGE_SIZE, "timeout": 300})
    w = HostileWorld(sg, hostile_messages())
    assert [h.tag for h in w.messages] == TAGS
    try:
        for h in w.messages:
            try:
                reply = _send_one(sg, h.data)
            except (smtplib.SMTPException, OSError) as exc:
                reply = f"connection: {exc!r}"
            w.replies[h.tag] = reply
            if reply == "250":
                w.accepted.append(h.tag)
            if not sg.alive():
                w.died_after = h.tag
                break
        if w.died_after is None:
            w.live = wait_for_count(sg, "alice", len(maildir_files(sg.maildir("alice"))), INDEX_TIMEOUT)
            w.hwm_kb = vm_hwm_kb(sg.mk.pid)
        w.elapsed = time.monotonic() - t0
        print(f"hostile world in {w.elapsed:.1f}s: replies {w.replies}; live {w.live}; VmHWM {w.hwm_kb} kB")
        yield w
    finally:
        stop_search_gateway(sg, base)


def by_tag(w: HostileWorld, tag: str) -> Hostile:
    return next(h for h in w.messages if h.tag == tag)


def find(w: HostileWorld, *query: str) -> list[dict]:
    res = w.sg.search("alice", *query)
    assert res.returncode == 0, f"{query}: exit {res.returncode}: {res.stderr[-800:]}"
    assert not sanitizer_report(res.stderr), res.stderr
    assert not res.bad_utf8, f"{query}: invalid UTF-8 in the output at {res.bad_utf8}"
    return res.messages


def mids(messages: list[dict]) -> set[str]:
    return {m["message_id"] for m in messages}


# --------------------------------------------------------------------------- tests

def test_server_survives_and_still_answers(hostile):
    w = hostile
    assert w.died_after is None, f"mailkeep serve died after the {w.died_after!r} message: {w.sg.gw.log()[-3000:]}"
    assert not sanitizer_report(w.sg.gw.log()), w.sg.gw.log()[-5000:]
    with RawSMTP(w.sg.gw.host, w.sg.gw.port) as c:
        assert c.banner.code == 220
        assert c.ehlo().code == 250
        r = c.send_message("after@sender.test", [ALICE], (
            "From: <after@sender.test>\r\nTo: <alice@example.org>\r\nSubject: hzqafterwards still working\r\n"
            "Message-ID: <afterwards@hostile.test>\r\nDate: Tue, 03 Sep 2002 11:00:00 +0000\r\n\r\nfine\r\n").encode())
        assert r.code == 250, str(r)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not find(w, "subject:hzqafterwards"):
        time.sleep(0.5)
    assert mids(find(w, "subject:hzqafterwards")) == {"afterwards@hostile.test"}, "a normal message after the hostile ones was not indexed"


def test_the_big_ones_were_accepted(hostile):
    """Not required by the spec (a limit may refuse them), but this gateway's limits allow all."""
    refused = {t: r for t, r in hostile.replies.items() if r != "250"}
    assert not refused, f"refused: {refused}"


# the messages are built by the module fixture (the big one takes a moment); their tags, fixed:
TAGS = ["parts10k", "deep", "header1mb", "refs5k", "ref4999", "big", "badcharset", "lyingutf8", "unknownew", "raw8bitsubject",
        "badb64", "badqp", "unterminated", "noboundary", "garbagedate", "html", "empty", "longline",
        "ew-utf8q", "ew-latin1", "ew-koi8", "ew-cp1252", "ew-gb2312", "ew-iso2022jp", "ew-adjacent",
        "rfc2231-utf8", "rfc2231-cont", "rfc2231-latin1", "rfc2047-name", "cjk"]


@pytest.mark.parametrize("tag", TAGS)
def test_accepted_message_is_searchable_or_its_skip_logged(hostile, tag):
    w = hostile
    assert w.died_after is None, f"the server died after {w.died_after!r}"
    if tag not in w.accepted:
        pytest.skip(f"{tag}: not accepted ({w.replies.get(tag)})")
    h = by_tag(w, tag)
    found = find(w, f"rfc822msgid:{tag}@hostile.test")
    if len(found) != 1:
        log = w.sg.gw.log()
        files = [p.name.split(":2,")[0] for p in maildir_files(w.sg.maildir("alice"))]
        skipped = [line for line in log.splitlines() if SKIP_WORDS.search(line)
                   and (f"{tag}@hostile.test" in line or any(f in line for f in files))]
        assert skipped, (f"{tag}: rfc822msgid:{tag}@hostile.test found {len(found)} messages and no log line says it "
                         f"was skipped")
        pytest.skip(f"{tag}: skipped by the indexer, logged: {skipped[0][:200]}")
    assert mids(find(w, f"subject:{h.marker}")) == {f"{tag}@hostile.test"}, f"{tag}: subject:{h.marker}"
    for q in h.queries:
        assert f"{tag}@hostile.test" in mids(find(w, *q)), f"{tag}: query {' '.join(q)!r} does not find it"
    for q in h.not_queries:
        assert f"{tag}@hostile.test" not in mids(find(w, *q)), f"{tag}: query {' '.join(q)!r} finds it"


@pytest.mark.parametrize("tag", ["ew-utf8q", "ew-latin1", "ew-koi8", "ew-cp1252", "ew-gb2312", "ew-iso2022jp", "ew-adjacent"])
def test_rfc2047_subject_decoded(hostile, tag):
    w = hostile
    h = by_tag(w, tag)
    [m] = find(w, f"rfc822msgid:{tag}@hostile.test")
    assert m["subject"] == h.subject, f"{tag}: subject {m['subject']!r}, want {h.subject!r}"
    for q in h.queries:
        assert mids(find(w, *q)) == {f"{tag}@hostile.test"}, f"{tag}: {q}"


@pytest.mark.parametrize("tag", ["rfc2231-utf8", "rfc2231-cont", "rfc2231-latin1", "rfc2047-name"])
def test_encoded_filenames(hostile, tag):
    w = hostile
    h = by_tag(w, tag)
    [m] = find(w, f"rfc822msgid:{tag}@hostile.test")
    assert [a["filename"] for a in m["attachments"]] == [h.filename], f"{tag}: attachments {m['attachments']}"
    for q in h.queries:
        assert f"{tag}@hostile.test" in mids(find(w, *q)), f"{tag}: {q} does not find {h.filename!r}"
    # a word of the name, too (the model's tokenizer: split at punctuation)
    first = words(h.filename)[0]
    assert f"{tag}@hostile.test" in mids(find(w, f"filename:{first}")), f"{tag}: filename:{first}"


def test_filename_queries_match_the_model(hostile):
    """filename:bin / gz over everything archived (the 10,000-part message has 100 .bin
    attachments): exactly the reference model's answer."""
    w = hostile
    root = w.sg.maildir("alice")
    model = {}
    for p in maildir_files(root):
        atts, odd = attachments_of(p)
        if not odd:
            model[p.relative_to(root).as_posix()] = atts
    for ext in ("bin", "gz"):
        want = {p for p, atts in model.items() if any(ext in words(f) for f, _ in atts)}
        got = {m["path"] for m in find(w, f"filename:{ext}")} & set(model)
        assert want and got == want, f"filename:{ext}: want {sorted(want)}, got {sorted(got)}"


def test_cjk_two_character_words(hostile):
    w = hostile
    for q in ("数据", "天気", "讨论", "数据库", "subject:議事"):
        want = "cjk@hostile.test" if not q.startswith("subject:") else "ew-iso2022jp@hostile.test"
        assert want in mids(find(w, q)), f"{q} does not find {want}"
    for q in ("数学", "天国"):
        assert "cjk@hostile.test" not in mids(find(w, q)), f"{q} finds the CJK message"


def test_long_references_keep_the_parent(hostile):
    """5,000 References: the spec's threading has no limit; an implementation that caps them must
    at least keep the nearest ancestors (the last ids, and In-Reply-To): the parent named last
    arriving later joins the conversation."""
    w = hostile
    [child] = find(w, "rfc822msgid:refs5k@hostile.test")
    [parent] = find(w, "rfc822msgid:ref4999@hostile.test")
    assert child["conversation"] == parent["conversation"], (
        "a message and the parent named last in its 5,000 References are in different conversations")


def test_memory_stays_bounded(hostile):
    w = hostile
    assert w.died_after is None
    limit = ASAN_RSS_LIMIT_MB if asan_build() else RSS_LIMIT_MB
    assert w.hwm_kb and w.hwm_kb < limit * 1024, (
        f"mailkeep serve peak RSS (VmHWM) {w.hwm_kb // 1024} MB after the hostile messages (limit {limit} MB)")


def test_rebuild_is_bounded_and_finds_the_same(hostile):
    """`archive index --rebuild` over the same hostile Maildir: exit 0, bounded memory, same answers."""
    w = hostile
    assert w.died_after is None
    before = {m["path"] for m in find(w, "in:anywhere")}
    probe = ("import resource, subprocess, sys\n"
             "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
             "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
             "sys.stdout.write(r.stdout[-2000:]); sys.stderr.write(r.stderr[-4000:])\n")
    res = subprocess.run([sys.executable, "-c", probe, str(MAILKEEP_BIN), "archive", "index", "-c", w.sg.config, "--rebuild"],
                         capture_output=True, text=True, timeout=600)
    first, _, out = res.stdout.partition("\n")
    code, maxrss = (int(x) for x in first.split())
    assert code == 0, f"archive index --rebuild: exit {code}: {out} {res.stderr}"
    assert not sanitizer_report(res.stderr), res.stderr
    limit = ASAN_RSS_LIMIT_MB if asan_build() else RSS_LIMIT_MB
    assert maxrss < limit * 1024, f"archive index --rebuild peak RSS {maxrss // 1024} MB (limit {limit} MB)"
    assert re.search(r"^indexed \d+ messages \(\d+ added, \d+ updated, \d+ removed\) in \d+\.\d\ds$", out, re.M), out
    after = {m["path"] for m in find(w, "in:anywhere")}
    assert after == before

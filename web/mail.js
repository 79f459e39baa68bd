// mail.js — the web view: conversations, labels, Gmail's keys, over the JSON
// API under /api/v1/mail/ (src/webreader/api.h). No framework, no inline
// script (the page's CSP is default-src 'self'); mail text is only ever set
// as textContent, and HTML bodies load in a sandboxed iframe from the API.
"use strict";
(() => {
  const API = "/api/v1/mail/";
  const $ = (id) => document.getElementById(id);
  const state = {
    csrf: "", user: "", mailbox: "inbox", query: "", position: 0, limit: 50,
    threads: [], total: 0, cursor: 0, selected: new Set(), open: null, messageCursor: 0,
    mailboxes: [], undo: null, prefetched: new Map(), listStale: false, gPending: false,
  };

  async function api(path, options = {}) {
    const init = { method: options.method || "GET", headers: {}, credentials: "same-origin" };
    if (options.body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.body);
    }
    if (init.method !== "GET") init.headers["X-CSRF-Token"] = state.csrf;
    const res = await fetch(API + path, init);
    if (res.status === 401 && path !== "session") { showLogin(); throw new Error("unauthorized"); }
    if (res.status === 204) return null;
    const data = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(data.description || data.error || res.statusText);
    return data;
  }

  function say(text) {
    $("status").textContent = text;
    clearTimeout(say.timer);
    say.timer = setTimeout(() => { $("status").textContent = ""; }, 4000);
  }

  function el(tag, props = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const c of children) if (c != null) e.append(c);
    return e;
  }

  // One formatter each, made once: toLocale*String with options builds a new
  // formatter per call (~2 ms each; 50 rows were a 120 ms task per list).
  const timeFormat = new Intl.DateTimeFormat([], { hour: "2-digit", minute: "2-digit" });
  const dayFormat = new Intl.DateTimeFormat([], { month: "short", day: "numeric" });
  const dateFormat = new Intl.DateTimeFormat([]);
  function shortDate(iso) {
    const d = new Date(iso), now = new Date();
    if (d.toDateString() === now.toDateString()) return timeFormat.format(d);
    if (d.getFullYear() === now.getFullYear()) return dayFormat.format(d);
    return dateFormat.format(d);
  }

  // ---- login ---------------------------------------------------------------
  function showLogin() {
    $("app").hidden = true;
    $("login").hidden = false;
    $("username").focus();
  }

  async function startApp(session) {
    state.csrf = session.csrfToken;
    state.user = session.username;
    $("user").textContent = session.username;
    $("login").hidden = true;
    $("app").hidden = false;
    await route();
    const draft = localStorage.getItem(DRAFT);
    if (draft) { try { openCompose(JSON.parse(draft)); } catch (e) { localStorage.removeItem(DRAFT); } }
  }

  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("login-error").textContent = "";
    const res = await fetch(API + "session", {
      method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username: $("username").value, password: $("password").value }),
    });
    $("password").value = "";
    const data = await res.json().catch(() => ({}));
    if (!res.ok) { $("login-error").textContent = data.description || "Login failed"; return; }
    await startApp(data);
  });

  $("logout").addEventListener("click", async () => {
    await api("session", { method: "DELETE" }).catch(() => {});
    localStorage.removeItem("mailkeep.draft");
    // A fresh page: nothing of the account stays on screen or in memory.
    location.replace("/mail/");
  });

  // ---- navigation ----------------------------------------------------------
  // The hash names the view: #inbox, #label:Work, #search/QUERY, #inbox/THREAD.
  async function route() {
    let h = decodeURIComponent(location.hash.slice(1)) || "inbox";
    let thread = null, view = h;
    // An open conversation is the last segment, "/T" + hex (labels and queries may hold "/").
    const open = h.match(/^(.*)\/(T[0-9a-f]{9,})$/);
    if (open) { h = open[1]; thread = open[2]; view = h; }
    if (h.startsWith("search/")) { view = "search"; state.query = h.slice(7); }
    if (view !== "search") { state.mailbox = view; state.query = ""; }
    $("search").value = state.query;
    $("filters").hidden = view !== "filters";
    $("list").hidden = view === "filters";
    if (view === "filters") { closeThread(); $("list").hidden = true; await loadMailboxes(); return loadFilters(); }
    // The sidebar and the list at once: neither waits for the other.
    await Promise.all([loadMailboxes(), loadList()]);
    if (thread) await openThread(thread); else closeThread();
  }
  window.addEventListener("hashchange", () => route().catch((e) => say(e.message)));

  function viewHash() { return state.query ? "search/" + state.query : state.mailbox; }

  async function loadMailboxes() {
    const data = await api("mailboxes");
    state.mailboxes = data.list;
    const ul = $("mailboxes");
    ul.replaceChildren();
    for (const m of data.list) {
      const a = el("a", { href: "#" + encodeURIComponent(m.id) },
        el("span", { text: m.name }), el("span", { class: "count", text: m.unreadEmails ? String(m.unreadEmails) : "" }));
      if (!state.query && m.id === state.mailbox) a.classList.add("current");
      ul.append(el("li", {}, a));
    }
    const f = el("a", { href: "#filters" }, el("span", { text: "Filters" }), el("span", { class: "count", text: "" }));
    if (state.mailbox === "filters") f.classList.add("current");
    ul.append(el("li", {}, f));
  }

  async function loadList() {
    const q = state.query ? "q=" + encodeURIComponent(state.query) : "mailbox=" + encodeURIComponent(state.mailbox);
    const data = await api(`threads?${q}&position=${state.position}&limit=${state.limit}`);
    state.threads = data.threads;
    state.total = data.total;
    state.cursor = Math.min(state.cursor, Math.max(0, state.threads.length - 1));
    state.selected.clear();
    state.prefetched.clear();
    state.listStale = false;
    drawList();
  }

  function drawList() {
    const ul = $("list");
    ul.replaceChildren();
    state.threads.forEach((t, i) => {
      const labels = (t.labels || []).map((l) => el("span", { class: "label", text: l }));
      const li = el("li", { role: "option", tabindex: "-1", "data-id": t.id, onclick: () => { state.cursor = i; openThread(t.id); } },
        el("input", { type: "checkbox", "aria-label": "Select", onclick: (ev) => { ev.stopPropagation(); toggleSelect(i); } }),
        el("span", { class: "star", text: t.keywords && t.keywords.$flagged ? "★" : "☆", title: "Star (s)",
          onclick: (ev) => { ev.stopPropagation(); state.cursor = i; Promise.resolve().then(actions.star).catch((e) => say(e.message)); } }),
        el("span", { class: "from", text: (t.from || []).map((f) => f.name).join(", ") + (t.emailCount > 1 ? ` (${t.emailCount})` : "") }),
        el("span", { class: "line" }, ...labels, el("span", { class: "subject", text: t.subject || "(no subject)" }),
          el("span", { class: "snippet", text: t.preview ? " — " + t.preview : "" })),
        el("span", { class: "date", text: shortDate(t.receivedAt) }));
      if (!(t.keywords && t.keywords.$seen)) li.classList.add("unread");
      if (state.selected.has(t.id)) { li.classList.add("selected"); li.firstChild.checked = true; }
      if (i === state.cursor) li.classList.add("cursor");
      ul.append(li);
    });
    const from = state.threads.length ? state.position + 1 : 0;
    $("range").textContent = `${from}–${state.position + state.threads.length} of ${state.total}`;
    prefetch(state.cursor + 1);
  }

  function moveCursor(delta) {
    if (!state.threads.length) return;
    state.cursor = Math.max(0, Math.min(state.threads.length - 1, state.cursor + delta));
    const items = $("list").children;
    for (let i = 0; i < items.length; i++) items[i].classList.toggle("cursor", i === state.cursor);
    items[state.cursor].scrollIntoView({ block: "nearest" });
    prefetch(state.cursor + 1);
  }

  function toggleSelect(i) {
    const t = state.threads[i];
    if (!t) return;
    if (state.selected.has(t.id)) state.selected.delete(t.id); else state.selected.add(t.id);
    drawList();
  }

  // The next conversation is fetched before j asks for it.
  function prefetch(i) {
    const t = state.threads[i];
    if (t && !state.prefetched.has(t.id)) state.prefetched.set(t.id, api("threads/" + encodeURIComponent(t.id)).catch(() => null));
  }

  // ---- a conversation ------------------------------------------------------
  async function openThread(id) {
    const data = await (state.prefetched.get(id) || api("threads/" + encodeURIComponent(id)));
    if (!data) return;
    state.open = data;
    const wanted = viewHash() + "/" + id;
    if (decodeURIComponent(location.hash.slice(1)) !== wanted) history.pushState(null, "", "#" + encodeURIComponent(wanted));
    drawThread();
    // j in a conversation opens the next one: fetch it now, read or not.
    const at = state.threads.findIndex((t) => t.id === id);
    if (at >= 0) prefetch(at + 1);
    const unread = data.emails.filter((e) => !(e.keywords && e.keywords.$seen)).map((e) => e.id);
    if (unread.length) {
      const row = state.threads.find((t) => t.id === id);
      // The list is hidden behind the conversation: redrawn when it shows again,
      // not in the task that paints this conversation.
      if (row) { row.keywords = { ...(row.keywords || {}), $seen: true }; state.listStale = true; }
      api("modify", { method: "POST", body: { emailIds: unread, seen: true } })
        .then(() => loadMailboxes()).catch(() => {});
    }
  }

  function drawThread() {
    const data = state.open;
    const art = $("conversation");
    art.replaceChildren(el("h2", { text: (data.emails[0] && data.emails[0].subject) || "(no subject)" }));
    // The newest unread message is open; so is the last one; the others are folded.
    let openIndex = data.emails.length - 1;
    for (let i = 0; i < data.emails.length; i++) if (!(data.emails[i].keywords && data.emails[i].keywords.$seen)) { openIndex = i; break; }
    state.messageCursor = openIndex;
    data.emails.forEach((e, i) => art.append(drawMessage(e, i !== openIndex && i !== data.emails.length - 1)));
    art.children[openIndex + 1].classList.add("cursor");
    $("list").hidden = true;
    art.hidden = false;
  }

  function linkified(text) {
    const out = document.createDocumentFragment();
    const re = /\b(https?:\/\/[^\s<>"]+)/g;
    let last = 0, m;
    while ((m = re.exec(text))) {
      out.append(text.slice(last, m.index));
      out.append(el("a", { href: m[1], target: "_blank", rel: "noopener noreferrer", text: m[1] }));
      last = m.index + m[1].length;
    }
    out.append(text.slice(last));
    return out;
  }

  function textBody(text) {
    // Quoted lines ("> ...") are folded behind a toggle.
    const box = el("div");
    let quote = [];
    const flush = () => {
      if (!quote.length) return;
      const q = el("pre", { class: "quote", hidden: "" });
      q.append(linkified(quote.join("\n")));
      box.append(el("button", { type: "button", text: "…", title: "Show quoted text", onclick: () => { q.hidden = !q.hidden; } }), q);
      quote = [];
    };
    let plain = [];
    const flushPlain = () => { if (plain.length) { const p = el("pre"); p.append(linkified(plain.join("\n"))); box.append(p); plain = []; } };
    for (const line of text.replace(/\r\n/g, "\n").split("\n")) {
      if (line.startsWith(">")) { flushPlain(); quote.push(line); } else { flush(); plain.push(line); }
    }
    flushPlain();
    flush();
    return box;
  }

  function drawMessage(e, folded) {
    const who = (e.from || []).map((f) => f.name || f.email).join(", ");
    const to = (e.to || []).map((f) => f.email).join(", ");
    const body = el("div", { class: "body" });
    body.append(el("div", { class: "to", text: "to " + to }));
    if (e.htmlBody !== undefined) {
      const frame = el("iframe", { sandbox: "allow-popups allow-popups-to-escape-sandbox", referrerpolicy: "no-referrer",
        title: "Message", src: API + "emails/" + encodeURIComponent(e.id) + "/html" });
      if (e.remoteBlocked) {
        body.append(el("div", { class: "blocked" }, "Images and styles from the internet are blocked. ",
          el("button", { type: "button", text: "Show them", onclick: (ev) => {
            frame.src = API + "emails/" + encodeURIComponent(e.id) + "/html?remote=1"; ev.target.parentNode.remove(); } })));
      }
      body.append(frame);
    } else {
      body.append(textBody(e.textBody || ""));
    }
    if (e.attachments && e.attachments.length)
      body.append(el("div", { class: "attachments" }, ...e.attachments.map((a) =>
        el("a", { href: API + "emails/" + encodeURIComponent(e.id) + "/attachments/" + a.partId, download: a.name || "attachment",
          text: `📎 ${a.name || "(unnamed)"} (${a.type}, ${Math.ceil(a.size / 1024)} KB)` }))));
    body.append(el("a", { href: API + "emails/" + encodeURIComponent(e.id) + "/raw", target: "_blank", rel: "noopener noreferrer", text: "Show original" }));
    const msg = el("section", { class: "message" + (folded ? " folded" : ""), "data-id": e.id },
      el("div", { class: "head", onclick: () => msg.classList.toggle("folded") },
        el("span", { class: "who", text: who }), el("span", { class: "date", text: new Date(e.receivedAt).toLocaleString() })),
      body);
    return msg;
  }

  function closeThread() {
    state.open = null;
    $("conversation").hidden = true;
    if (state.listStale) { state.listStale = false; drawList(); }
    $("list").hidden = false;
  }

  function moveMessageCursor(delta) {
    if (!state.open) return;
    const sections = $("conversation").querySelectorAll(".message");
    state.messageCursor = Math.max(0, Math.min(sections.length - 1, state.messageCursor + delta));
    sections.forEach((s, i) => s.classList.toggle("cursor", i === state.messageCursor));
    sections[state.messageCursor].classList.remove("folded");
    sections[state.messageCursor].scrollIntoView({ block: "nearest" });
  }

  // ---- actions: each is one modify call, so IMAP clients see it ------------
  function targets() {
    if (state.open) return [state.open.id];
    if (state.selected.size) return [...state.selected];
    const t = state.threads[state.cursor];
    return t ? [t.id] : [];
  }

  async function act(change, inverse, text, { leaves = false, advance = 0 } = {}) {
    const ids = targets();
    if (!ids.length) return;
    await api("modify", { method: "POST", body: { threadIds: ids, ...change } });
    state.undo = inverse ? { threadIds: ids, ...inverse } : null;
    say(text + (inverse ? " — z to undo" : ""));
    const wasOpen = !!state.open;
    if (leaves && wasOpen) {
      closeThread();
      history.pushState(null, "", "#" + encodeURIComponent(viewHash()));
    }
    await loadList();
    await loadMailboxes();
    if (wasOpen && !leaves) openThread(ids[0]);
    if (leaves && wasOpen && advance && state.threads.length) {
      state.cursor = Math.max(0, Math.min(state.threads.length - 1, state.cursor + (advance < 0 ? -1 : 0)));
      openThread(state.threads[state.cursor].id);
    }
  }

  function currentLabel() { return state.mailbox.startsWith("label:") && !state.query ? state.mailbox.slice(6) : null; }
  // Where an undo moves a conversation back to: the folder being viewed, else the Inbox.
  function homeFolder() {
    return { inbox: "INBOX", archive: "Archive", junk: "Junk", trash: "Trash" }[state.query ? "" : state.mailbox] || "INBOX";
  }

  const actions = {
    archive: (advance = 0) => {
      const label = currentLabel();
      if (label) return act({ removeLabels: [label] }, { addLabels: [label] }, `Removed label ${label}`, { leaves: true, advance });
      return act({ moveTo: "Archive" }, { moveTo: homeFolder() }, "Archived", { leaves: true, advance });
    },
    trash: () => act({ moveTo: "Trash" }, { moveTo: homeFolder() }, "Moved to Trash", { leaves: true }),
    spam: () => state.mailbox === "junk"
      ? act({ moveTo: "INBOX", trainSpam: false }, { moveTo: "Junk" }, "Not spam: moved to Inbox", { leaves: true })
      : act({ moveTo: "Junk", trainSpam: true }, { moveTo: homeFolder() }, "Reported as spam", { leaves: true }),
    star: () => {
      const t = state.threads[state.cursor];
      const starred = state.open ? state.open.emails.some((e) => e.keywords && e.keywords.$flagged)
                                 : t && t.keywords && t.keywords.$flagged;
      return starred ? act({ flagged: false }, { flagged: true }, "Unstarred") : act({ flagged: true }, { flagged: false }, "Starred");
    },
    read: () => act({ seen: true }, { seen: false }, "Marked read"),
    unread: () => act({ seen: false }, { seen: true }, "Marked unread", { leaves: true }),
    label: () => pick("Label as", state.mailboxes.filter((m) => m.id.startsWith("label:")).map((m) => m.name), true,
      (name) => act({ addLabels: [name] }, { removeLabels: [name] }, `Labelled ${name}`)),
    move: () => pick("Move to", ["INBOX", "Archive", "Junk", "Trash"], false,
      (name) => act({ moveTo: name }, { moveTo: homeFolder() }, `Moved to ${name}`, { leaves: true })),
    undo: async () => {
      if (!state.undo) return say("Nothing to undo");
      const body = state.undo;
      state.undo = null;
      await api("modify", { method: "POST", body });
      say("Undone");
      await loadList();
      await loadMailboxes();
    },
    back: () => { closeThread(); history.pushState(null, "", "#" + encodeURIComponent(viewHash())); },
    compose: () => openCompose({}),
    reply: () => replyTo(false),
    replyAll: () => replyTo(true),
    forward: () => {
      const e = lastEmail();
      if (!e) return;
      openCompose({ subject: "Fwd: " + (e.subject || "").replace(/^fwd:\s*/i, ""),
        text: "\n\n---------- Forwarded message ----------\nFrom: " + addressList(e.from) + "\nDate: " +
          new Date(e.receivedAt).toString() + "\nSubject: " + (e.subject || "") + "\nTo: " + addressList(e.to) + "\n\n" +
          (e.textBody || "") });
    },
  };

  // ---- filters ---------------------------------------------------------------
  async function loadFilters() {
    const data = await api("filters");
    const ul = $("filter-list");
    ul.replaceChildren(...data.list.map((f) => el("li", {},
      el("code", { text: f.query }), " → ",
      el("span", { text: [f.label && "label " + f.label, f.shouldArchive && "skip Inbox", f.shouldMarkAsRead && "mark read",
        f.shouldStar && "star", f.shouldNeverSpam && "never spam", f.shouldSpam && "spam", f.shouldTrash && "delete"]
        .filter(Boolean).join(", ") }), " ",
      el("button", { type: "button", text: "Delete", onclick: async () => {
        await api("filters/" + encodeURIComponent(f.id), { method: "DELETE" }); loadFilters(); } }))));
    if (!data.list.length) ul.append(el("li", { text: "No filters yet." }));
  }
  $("filter-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const form = ev.target, body = {};
    for (const input of form.querySelectorAll("input")) {
      if (input.type === "checkbox") { if (input.checked) body[input.name] = true; }
      else if (input.value.trim()) body[input.name] = input.value.trim();
    }
    try {
      const made = await api("filters", { method: "POST", body });
      say("Filter created" + (made.existing ? `; ${made.existing.matched} existing message(s) matched` : ""));
      form.reset();
      loadFilters();
      loadMailboxes();
    } catch (e) { say("Not created: " + e.message); }
  });
  $("filter-import").addEventListener("change", async (ev) => {
    const file = ev.target.files[0];
    if (!file) return;
    const res = await fetch(API + "filters/import", { method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/xml", "X-CSRF-Token": state.csrf }, body: await file.text() });
    const data = await res.json().catch(() => ({}));
    say(res.ok ? `Imported ${data.imported} filter(s)` : "Import failed: " + (data.description || res.statusText));
    ev.target.value = "";
    loadFilters();
  });

  // ---- compose, reply, forward (plain text; sent through submission) -------
  // The draft lives in localStorage, so that it survives a reload.
  const DRAFT = "mailkeep.draft";
  function addressList(list) { return (list || []).map((a) => a.email).filter(Boolean).join(", "); }
  function lastEmail() { return state.open ? state.open.emails[state.messageCursor] || state.open.emails[state.open.emails.length - 1] : null; }
  function replyTo(all) {
    const e = lastEmail();
    if (!e) return;
    const me = state.user.toLowerCase();
    const from = (e.from || []).map((a) => a.email);
    const sentByMe = from.some((a) => (a || "").toLowerCase() === me);
    let to = sentByMe ? (e.to || []).map((a) => a.email) : from;
    let cc = all ? [...(e.to || []), ...(e.cc || [])].map((a) => a.email).filter((a) => a && a.toLowerCase() !== me && !to.includes(a)) : [];
    const quoted = (e.textBody || "").replace(/\r\n/g, "\n").split("\n").map((l) => "> " + l).join("\n");
    openCompose({ to: to.join(", "), cc: cc.join(", "), subject: /^re:/i.test(e.subject || "") ? e.subject : "Re: " + (e.subject || ""),
      text: "\n\nOn " + new Date(e.receivedAt).toString() + ", " + addressList(e.from) + " wrote:\n" + quoted, inReplyTo: e.id });
  }
  function openCompose(d) {
    const f = $("compose");
    $("compose-to").value = d.to || "";
    $("compose-cc").value = d.cc || "";
    $("compose-subject").value = d.subject || "";
    $("compose-text").value = d.text || "";
    f.dataset.inReplyTo = d.inReplyTo || "";
    f.hidden = false;
    saveDraft();
    (d.to ? $("compose-text") : $("compose-to")).focus();
    if (d.to) $("compose-text").setSelectionRange(0, 0);
  }
  function saveDraft() {
    const f = $("compose");
    if (f.hidden) return;
    localStorage.setItem(DRAFT, JSON.stringify({ to: $("compose-to").value, cc: $("compose-cc").value,
      subject: $("compose-subject").value, text: $("compose-text").value, inReplyTo: f.dataset.inReplyTo || "" }));
  }
  function closeCompose() { $("compose").hidden = true; localStorage.removeItem(DRAFT); }
  $("compose").addEventListener("input", saveDraft);
  $("compose-discard").addEventListener("click", closeCompose);
  $("compose").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const split = (v) => v.split(/[,;\s]+/).map((a) => a.trim()).filter(Boolean);
    try {
      await api("send", { method: "POST", body: { to: split($("compose-to").value), cc: split($("compose-cc").value),
        subject: $("compose-subject").value, textBody: $("compose-text").value, inReplyTo: $("compose").dataset.inReplyTo || "" } });
      closeCompose();
      say("Message sent");
      if (state.open) setTimeout(() => openThread(state.open.id).catch(() => {}), 1500);  // the Sent copy joins the conversation
    } catch (e) { say("Not sent: " + e.message); }
  });

  // A picker that filters as you type; with `create`, a new name is offered too.
  function pick(title, names, create, done) {
    const dlg = $("picker"), input = $("picker-input"), list = $("picker-list");
    $("picker-title").textContent = title;
    input.value = "";
    let active = 0;
    const matches = () => {
      const q = input.value.trim().toLowerCase();
      const m = names.filter((n) => n.toLowerCase().includes(q));
      if (create && q && !names.some((n) => n.toLowerCase() === q)) m.push(input.value.trim());
      return m;
    };
    const draw = () => {
      list.replaceChildren(...matches().map((n, i) => el("li", { class: i === active ? "active" : "", text: n,
        onclick: () => { dlg.close(); done(n); } })));
    };
    input.oninput = () => { active = 0; draw(); };
    input.onkeydown = (ev) => {
      const m = matches();
      if (ev.key === "ArrowDown") { active = Math.min(m.length - 1, active + 1); draw(); ev.preventDefault(); }
      if (ev.key === "ArrowUp") { active = Math.max(0, active - 1); draw(); ev.preventDefault(); }
    };
    $("picker-form").onsubmit = (ev) => { ev.preventDefault(); const m = matches(); dlg.close(); if (m[active]) done(m[active]); };
    $("picker-cancel").onclick = () => dlg.close();
    draw();
    dlg.showModal();
    input.focus();
  }

  $("toolbar").addEventListener("click", (ev) => {
    const a = ev.target.closest("button[data-action]");
    if (a) Promise.resolve().then(() => actions[a.dataset.action]()).catch((e) => say(e.message));
  });
  $("older").addEventListener("click", () => { if (state.position + state.limit < state.total) { state.position += state.limit; loadList(); } });
  $("newer").addEventListener("click", () => { state.position = Math.max(0, state.position - state.limit); loadList(); });
  $("help-button").addEventListener("click", () => $("help").showModal());
  $("search-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = $("search").value.trim();
    state.position = 0;
    location.hash = q ? "#" + encodeURIComponent("search/" + q) : "#inbox";
    $("search").blur();
  });

  // ---- Gmail's keys (no modifiers; never while typing) ---------------------
  document.addEventListener("keydown", (ev) => {
    if ($("app").hidden || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const t = ev.target;
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.isContentEditable)) {
      if (ev.key === "Escape") t.blur();
      return;
    }
    if (document.querySelector("dialog[open]")) return;
    const k = ev.key;
    const run = (f) => { ev.preventDefault(); Promise.resolve(f()).catch((e) => say(e.message)); };
    if (state.gPending) {
      state.gPending = false;
      const go = { i: "inbox", s: "starred", a: "all" }[k];
      if (go) return run(() => { location.hash = "#" + go; });
      if (k === "l") return run(() => pick("Go to label", state.mailboxes.filter((m) => m.id.startsWith("label:")).map((m) => m.name), false,
        (name) => { location.hash = "#" + encodeURIComponent("label:" + name); }));
      return;
    }
    switch (k) {
      case "j": return run(() => state.open ? nextConversation(1) : moveCursor(1));
      case "k": return run(() => state.open ? nextConversation(-1) : moveCursor(-1));
      case "n": return run(() => moveMessageCursor(1));
      case "p": return run(() => moveMessageCursor(-1));
      case "o": case "Enter": return run(() => { const c = state.threads[state.cursor]; if (c && !state.open) return openThread(c.id); });
      case "u": return run(actions.back);
      case "e": case "y": return run(() => actions.archive());
      case "[": return run(() => actions.archive(-1));
      case "]": return run(() => actions.archive(1));
      case "#": return run(actions.trash);
      case "!": return run(actions.spam);
      case "l": return run(actions.label);
      case "v": return run(actions.move);
      case "s": return run(actions.star);
      case "x": return run(() => toggleSelect(state.cursor));
      case "I": return run(actions.read);
      case "U": return run(actions.unread);
      case "z": return run(actions.undo);
      case "c": return run(actions.compose);
      case "r": return run(actions.reply);
      case "a": return run(actions.replyAll);
      case "f": return run(actions.forward);
      case "/": return run(() => $("search").focus());
      case "?": return run(() => $("help").showModal());
      case "g": state.gPending = true; setTimeout(() => { state.gPending = false; }, 1500); return;
    }
  });

  function nextConversation(delta) {
    const i = state.cursor + delta;
    if (i < 0 || i >= state.threads.length) return;
    state.cursor = i;
    return openThread(state.threads[i].id);
  }

  // ---- start -----------------------------------------------------------------
  fetch(API + "session", { credentials: "same-origin" })
    .then((r) => (r.ok ? r.json() : null))
    .then((s) => (s ? startApp(s) : showLogin()))
    .catch(() => showLogin());
})();

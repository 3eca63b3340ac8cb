/*! Chatbot widget: <script src="https://HOST/static/chatbot/widget.js" data-bot="KEY" async></script>
 * Options and API: README "The widget". A guest on the page: a shadow root, one global, no dependencies,
 * nothing parsed as HTML. ASCII only: it may be served without a charset (GBK pages ...). */
(() => {
'use strict';
if (window.ChatbotWidget) return; // a second tag is a no-op

const script = document.currentScript || document.querySelector('script[data-bot][src*="chatbot/widget"]');
const opt = (script && script.dataset) || {};
if (!opt.bot) return console.warn('Chatbot widget: the script tag needs data-bot="KEY".');

const src = new URL(script.src, location.href);
const secure = src.protocol === 'https:' || location.protocol === 'https:';
const WS_URL = (secure ? 'wss://' : 'ws://') + src.host + '/ws/chat/' + encodeURIComponent(opt.bot) + '/';
const QUEUE_MAX = 20;
const UNACKED_MAX = 3; // the server refuses a long backlog
const MAX_LEN = 4000;
const PING_MS = 25000;
const KEY = 'chatbot:' + opt.bot + ':';

const pageLang = (opt.lang || document.documentElement.lang || navigator.language || 'en').toLowerCase();
const T = {
  en: {
    open: 'Open chat', close: 'Close chat', title: 'Chat with us', placeholder: 'Type your message\u2026',
    send: 'Send', human: 'Talk to a person', typing: 'The assistant is typing', log: 'Messages',
    connecting: 'Connecting\u2026', offline: 'Connection lost. Reconnecting\u2026', refused: 'Chat is not available here.',
    queued: 'Waiting for connection', notSent: 'Not sent', retry: 'Retry', up: 'Helpful', down: 'Not helpful',
    thanks: 'Thanks for your feedback!', partial: 'This reply was cut off.', failed: 'This reply failed.',
    unread: 'new', full: 'Too many messages are waiting to be sent. Please wait for the connection.',
    too_long: 'That message is too long.', rate_limited: 'You are sending messages too quickly. Try again in {s} s.',
    llm_unavailable: 'The assistant is unavailable right now. Please try again later.',
    busy: 'Please wait for the answer before sending more.',
    generic: 'Something went wrong. Please try again.', agent: 'Agent',
    wait: "You're number {n} in line for a person.", email: 'Your email address', saved: "Thanks! We'll reply by email.",
    bad_email: 'Please check the email address.', sources: 'Sources',
  },
  zh: {
    open: '\u6253\u5f00\u5728\u7ebf\u5ba2\u670d', close: '\u5173\u95ed\u804a\u5929', title: '\u5728\u7ebf\u5ba2\u670d', placeholder: '\u8bf7\u8f93\u5165\u60a8\u7684\u95ee\u9898\u2026',
    send: '\u53d1\u9001', human: '\u8f6c\u4eba\u5de5\u5ba2\u670d', typing: '\u5ba2\u670d\u6b63\u5728\u8f93\u5165', log: '\u804a\u5929\u8bb0\u5f55',
    connecting: '\u6b63\u5728\u8fde\u63a5\u2026', offline: '\u8fde\u63a5\u5df2\u65ad\u5f00\uff0c\u6b63\u5728\u91cd\u65b0\u8fde\u63a5\u2026', refused: '\u6b64\u7f51\u7ad9\u6682\u4e0d\u652f\u6301\u5728\u7ebf\u5ba2\u670d\u3002',
    queued: '\u7b49\u5f85\u8fde\u63a5', notSent: '\u672a\u53d1\u9001', retry: '\u91cd\u8bd5', up: '\u6709\u5e2e\u52a9', down: '\u6ca1\u5e2e\u52a9',
    thanks: '\u611f\u8c22\u60a8\u7684\u53cd\u9988\uff01', partial: '\u6b64\u56de\u590d\u672a\u5b8c\u6574\u9001\u8fbe\u3002', failed: '\u6b64\u56de\u590d\u5931\u8d25\u3002',
    unread: '\u6761\u65b0\u6d88\u606f', full: '\u5f85\u53d1\u9001\u7684\u6d88\u606f\u8fc7\u591a\uff0c\u8bf7\u7b49\u5f85\u8fde\u63a5\u6062\u590d\u3002',
    too_long: '\u6d88\u606f\u592a\u957f\u4e86\u3002', rate_limited: '\u53d1\u9001\u592a\u9891\u7e41\u4e86\uff0c\u8bf7 {s} \u79d2\u540e\u518d\u8bd5\u3002',
    llm_unavailable: '\u667a\u80fd\u52a9\u624b\u6682\u65f6\u4e0d\u53ef\u7528\uff0c\u8bf7\u7a0d\u540e\u518d\u8bd5\u3002',
    busy: '\u8bf7\u7b49\u56de\u590d\u540e\u518d\u53d1\u9001\u3002',
    generic: '\u51fa\u9519\u4e86\uff0c\u8bf7\u91cd\u8bd5\u3002', agent: '\u4eba\u5de5\u5ba2\u670d',
    wait: '\u60a8\u6392\u5728\u7b2c {n} \u4f4d\uff0c\u8bf7\u7a0d\u5019\u3002', email: '\u60a8\u7684\u90ae\u7bb1', saved: '\u8c22\u8c22\uff01\u6211\u4eec\u4f1a\u901a\u8fc7\u90ae\u4ef6\u56de\u590d\u60a8\u3002',
    bad_email: '\u8bf7\u68c0\u67e5\u90ae\u7bb1\u5730\u5740\u3002', sources: '\u6765\u6e90',
  },
};
const t = pageLang.startsWith('zh') ? T.zh : T.en;
const ERRORS = ['too_long', 'rate_limited', 'llm_unavailable', 'busy', 'bad_email'];

// Storage can throw (privacy modes, sandboxed frames): then it works for this page only.
const store = (area, name, value) => {
  try {
    const s = window[area];
    if (value === undefined) return s.getItem(KEY + name);
    if (value === null) s.removeItem(KEY + name);
    else s.setItem(KEY + name, value);
  } catch (e) { /* not available */ }
  return null;
};

const h = (tag, attrs, ...kids) => {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const kid of kids) if (kid != null) el.append(kid); // strings: text nodes
  return el;
};
const icon = (d) => {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('aria-hidden', 'true');
  const path = svg.appendChild(document.createElementNS(ns, 'path'));
  path.setAttribute('fill', 'currentColor');
  path.setAttribute('d', d);
  return svg;
};
const CHAT = 'M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2h-9l-5 4v-4H4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2zm3 6.5a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3zm5 0a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3zm5 0a1.5 1.5 0 1 0 0 3 1.5 1.5 0 0 0 0-3z';
const THUMB = 'M2 10h4v11H2zm6 11h9.5a2 2 0 0 0 1.9-1.5l1.6-6.3A2 2 0 0 0 19 10.7h-5.2l.9-4.3a2 2 0 0 0-2-2.4L8 10z';
const CLOSE = 'M18.3 5.7a1 1 0 0 0-1.4 0L12 10.6 7.1 5.7a1 1 0 0 0-1.4 1.4l4.9 4.9-4.9 4.9a1 1 0 1 0 1.4 1.4l4.9-4.9 4.9 4.9a1 1 0 0 0 1.4-1.4L13.4 12l4.9-4.9a1 1 0 0 0 0-1.4z';

// --- Markdown subset (README "The widget"), built as DOM nodes ---
const LIST_ITEM = /^\s*(?:([-*+\u2022])|(\d{1,3})[.)])\s+(.*)$/;
const INLINE = /\*\*(.+?)\*\*|__(.+?)__|`([^`\n]+)`|\[([^\]\n]+)\]\(\s*([^()\s]+)\s*\)|(https?:\/\/[^\s<>"'`]*[^\s<>"'`.,;:!?)\]])|([\w.+-]+@[\w-]+(?:\.[\w-]+)+)/g;

// web: a source's URL, an absolute http(s) one only; else mailto: too, relative to the page.
const safeUrl = (url, web) => {
  try {
    const u = new URL(url, web ? undefined : location.href);
    return ['http:', 'https:', !web && 'mailto:'].includes(u.protocol) ? u.href : null;
  } catch (e) {
    return null;
  }
};
// An unsafe link (javascript: ...) keeps its label, as text.
const link = (url, label, web) => {
  const href = safeUrl(url, web);
  return href ? h('a', { href, target: '_blank', rel: 'noopener noreferrer' }, label) : label;
};

const inline = (text, into) => {
  let at = 0;
  for (const m of text.matchAll(INLINE)) {
    if (m.index > at) into.append(text.slice(at, m.index));
    at = m.index + m[0].length;
    if (m[1] || m[2]) inline(m[1] || m[2], into.appendChild(h('strong')));
    else if (m[3]) into.append(h('code', null, m[3]));
    else into.append(link(m[5] || m[6] || 'mailto:' + m[7], m[4] || m[6] || m[7]));
  }
  if (at < text.length) into.append(text.slice(at));
};

const markdown = (text, into) => {
  into.textContent = '';
  let para = null;
  let list = null;
  for (const line of String(text || '').replace(/\r\n?/g, '\n').split('\n')) {
    const item = LIST_ITEM.exec(line);
    if (!line.trim()) {
      para = list = null;
    } else if (item) {
      const tag = item[1] ? 'UL' : 'OL';
      if (!list || list.tagName !== tag) {
        list = into.appendChild(h(tag, item[2] && item[2] !== '1' ? { start: item[2] } : null));
      }
      inline(item[3], list.appendChild(h('li')));
      para = null;
    } else {
      if (para) para.append(h('br'));
      else (para = into.appendChild(h('p'))), (list = null);
      inline(line, para);
    }
  }
};

const STYLES = `
*{box-sizing:border-box;margin:0;padding:0;font:inherit;color:inherit;letter-spacing:normal}
[hidden]{display:none!important}
.w{position:fixed;bottom:20px;right:20px;z-index:2147483647;font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,"PingFang SC","Microsoft YaHei","Noto Sans CJK SC","WenQuanYi Micro Hei",sans-serif;color:#1f2328;text-align:left}
.w.left{right:auto;left:20px}
button{cursor:pointer;background:none;border:0}
:focus-visible{outline:2px solid #0969da;outline-offset:2px}
.launch{width:58px;height:58px;border-radius:50%;background:var(--a);color:var(--at);display:grid;place-items:center;box-shadow:0 6px 20px rgba(0,0,0,.25);transition:transform .15s;position:relative}
.launch:hover{transform:scale(1.06)}
.launch svg{width:28px;height:28px}
.badge{position:absolute;top:-3px;right:-3px;min-width:20px;height:20px;padding:0 6px;border-radius:10px;background:#d1242f;color:#fff;font-size:12px;font-weight:700;line-height:20px}
.panel{position:absolute;bottom:74px;right:0;width:370px;height:min(580px,calc(100vh - 110px));background:#fff;border-radius:16px;box-shadow:0 12px 48px rgba(0,0,0,.25);display:flex;flex-direction:column;overflow:hidden}
.left .panel{right:auto;left:0}
header{background:var(--a);color:var(--at);padding:12px 10px 12px 16px;display:flex;align-items:center;gap:6px}
h2{flex:1;min-width:0;font-size:16px;font-weight:600;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.human{border:1px solid currentColor;border-radius:999px;font-size:12px;padding:4px 10px;white-space:nowrap}
.x{width:32px;height:32px;border-radius:8px;display:grid;place-items:center}
.x svg{width:20px;height:20px}
.human:hover,.x:hover{background:rgba(127,127,127,.2)}
.status,.wait{font-size:12.5px;padding:6px 16px;background:#fff8c5;color:#4d3d00}
.wait{background:#ddf4ff;color:#0a3069}
.log{flex:1;overflow-y:auto;padding:16px 14px;display:flex;flex-direction:column;gap:10px;background:#f6f7f9;overscroll-behavior:contain}
.row{display:flex;flex-direction:column;align-items:flex-start;max-width:86%}
.row.visitor{align-self:flex-end;align-items:flex-end}
.bubble{padding:9px 13px;border-radius:14px;border-bottom-left-radius:4px;background:#fff;box-shadow:0 1px 2px rgba(0,0,0,.1);overflow-wrap:anywhere}
.visitor .bubble{background:var(--a);color:var(--at);border-radius:14px;border-bottom-right-radius:4px}
.agent .bubble{background:#eef6ff}
.system{align-self:center;max-width:94%;text-align:center}
.system .bubble{background:#eaeef2;box-shadow:none;border-radius:10px;font-size:13px;color:#424a53}
.bubble>*+*{margin-top:6px}
ul,ol{padding-left:20px}
strong{font-weight:700}
code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em;background:rgba(127,127,127,.15);border-radius:4px;padding:0 4px}
a{color:#0b5cad;text-decoration:underline}
.visitor a{color:inherit}
.src{font-size:12px;color:#57606a;margin:4px 4px 0}.src ul{list-style:none;padding:0}
.who{font-size:11.5px;color:#57606a;margin:0 4px 2px}
.meta{display:flex;gap:2px;align-items:center;margin-top:2px;font-size:12px;color:#57606a;min-height:4px}
.meta button{border-radius:6px;padding:3px 5px;color:#8c959f;display:grid}
.meta svg{width:16px;height:16px}
.meta [value=down] svg{transform:rotate(180deg)}
.meta button:hover{color:#424a53}
.meta button[aria-pressed=true]{color:var(--l);background:#e3e9f0}
.meta .retry{font-size:12px;color:#0b5cad;text-decoration:underline;display:inline}
.queued .bubble{opacity:.65}
.failed .bubble{box-shadow:0 0 0 2px #d1242f}
.typing .bubble{display:flex;gap:4px;padding:13px 14px}
.typing i{width:7px;height:7px;border-radius:50%;background:#8c959f;animation:b 1.2s infinite}
.typing i:nth-child(2){animation-delay:.15s}.typing i:nth-child(3){animation-delay:.3s}
@keyframes b{0%,60%,100%{opacity:.35;transform:none}30%{opacity:1;transform:translateY(-3px)}}
form{display:flex;gap:8px;align-items:flex-end;padding:10px;border-top:1px solid #d8dee4;background:#fff}
.mail{padding:6px 0 0;border:0;background:none}
textarea,input{flex:1;min-width:0;resize:none;border:1px solid #d0d7de;border-radius:10px;padding:8px 10px;min-height:40px;max-height:120px;background:#fff;color:#1f2328;outline:0}
textarea:focus,input:focus{border-color:var(--a);box-shadow:0 0 0 1px var(--a);outline:0}
.send{height:40px;padding:0 14px;border-radius:10px;background:var(--a);color:var(--at);font-weight:600}
.send:disabled{opacity:.45;cursor:default}
.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
@media (max-width:480px){.w{bottom:14px;right:14px}.w.left{left:14px}.panel{position:fixed;inset:0;width:auto;height:auto;border-radius:0}.open .launch{display:none}}
@media (prefers-reduced-motion:reduce){*{animation:none!important;transition:none!important}}`;

// --- State ---
let ui = null;
let ws = null;
let state = 'idle'; // idle | connecting | online | offline | refused
let delay = 0;
let retryTimer = 0;
let lastSeen = 0;
let visitor = store('localStorage', 'visitor');
let conversation = null;
let lastId = 0;
let greeted = null;
let unread = 0;
let agent = null; // the person's name while one has the conversation: the bot is silent
let typedAt = 0;
let typingTimer = 0;
const queue = []; // typed while offline: {cid, text, row}
const inflight = new Map(); // client_id -> item, sent and not acknowledged
const rows = new Map(); // message or reply id -> row
const t0 = Math.random().toString(36).slice(2);
let seq = 0;

const send = (frame) => {
  if (!ws || ws.readyState !== 1) return false;
  ws.send(JSON.stringify(frame));
  return true;
};

const setState = (next) => {
  state = next;
  if (!ui) return;
  ui.host.dataset.state = next;
  // While retrying, "connecting" reads as "reconnecting" (no flicker).
  line(ui.status, { connecting: delay ? t.offline : t.connecting, offline: t.offline, refused: t.refused }[next]);
};
const line = (el, text) => {
  el.textContent = text || '';
  el.hidden = !text;
};

const connect = () => {
  clearTimeout(retryTimer);
  if (ws || state === 'refused') return;
  setState('connecting');
  let sock;
  try {
    sock = new WebSocket(WS_URL);
  } catch (e) {
    return reconnectLater();
  }
  ws = sock;
  sock.onopen = () => {
    lastSeen = Date.now();
    const hello = { type: 'hello', visitor, page: location.href, lang: pageLang.split('-')[0] };
    if (lastId && conversation !== null) hello.after = lastId; // resync: only what was missed
    send(hello);
  };
  sock.onmessage = (event) => {
    lastSeen = Date.now();
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch (e) {
      return;
    }
    const fn = frame && Object.hasOwn(on, frame.type) && on[frame.type];
    if (fn) fn(frame);
  };
  sock.onclose = (event) => {
    if (ws !== sock) return;
    ws = null;
    typing(false);
    // 4000-4999: the server refused this bot or site; retrying can't help. 4013: it is starting.
    // 1012: this process is restarting, another answers now; 1013: busy, back off (the rest).
    if (event.code >= 4000 && event.code < 5000 && event.code !== 4013) setState('refused');
    else if (event.code === 1012) reconnectLater(50 + Math.random() * 450);
    else reconnectLater();
  };
};

// Backoff with jitter: about 1 s, then x1.3..x2 per attempt, at most 10 s; `soon` (a restart)
// retries after that many ms without growing the backoff.
const reconnectLater = (soon) => {
  setState('offline');
  if (soon === undefined)
    delay = delay ? Math.min(10000, delay * (1.3 + Math.random() * 0.7)) : 700 + Math.random() * 600;
  retryTimer = setTimeout(connect, soon === undefined ? delay : soon);
};
const reconnectNow = () => state === 'offline' && connect();
window.addEventListener('online', reconnectNow);
document.addEventListener('visibilitychange', () => document.hidden || reconnectNow());

setInterval(() => {
  if (!ws || ws.readyState !== 1) return;
  if (Date.now() - lastSeen > 2.5 * PING_MS) {
    const dead = ws; // half-open: close never fires
    ws = null;
    dead.close();
    reconnectLater();
  } else send({ type: 'ping' });
}, PING_MS);

// --- Rendering ---
const nearBottom = () => ui.log.scrollHeight - ui.log.scrollTop - ui.log.clientHeight < 60;
const toBottom = () => (ui.log.scrollTop = ui.log.scrollHeight);

const bind = (id, row) => rows.set(String(id), row) && (row.dataset.id = id);

const addRow = (role, text, id, before = ui.typing, who) => {
  const stick = nearBottom() || role === 'visitor';
  const bubble = h('div', { class: 'bubble' });
  const row = h('div', { class: 'row ' + role }, bubble, h('div', { class: 'meta' }));
  if (role === 'agent') row.prepend(h('div', { class: 'who' }, who || t.agent));
  Object.assign(row, { $kind: role, $bubble: bubble, $meta: row.lastChild, $text: '' });
  ui.log.insertBefore(row, before);
  if (id != null) bind(id, row);
  setText(row, text);
  if (stick) toBottom();
  return row;
};

const setText = (row, text) => {
  const stick = nearBottom();
  row.$text = text || '';
  // The visitor's words as typed; replies get the markdown subset.
  if (row.$kind === 'visitor') row.$bubble.textContent = row.$text;
  else markdown(row.$text, row.$bubble);
  row.hidden = !row.$text;
  if (stick) toBottom();
};

const setMeta = (row, ...kids) => row.$meta.replaceChildren(...kids.filter(Boolean));

const feedbackButtons = (row, id) => {
  const rate = (rating) => () => {
    if (!send({ type: 'feedback', id, rating })) return;
    for (const b of row.$meta.querySelectorAll('button')) b.setAttribute('aria-pressed', b.value === rating);
  };
  const button = (rating) =>
    h('button', { value: rating, 'aria-label': t[rating], title: t[rating], 'aria-pressed': 'false', onclick: rate(rating) }, icon(THUMB));
  return [button('up'), button('down')];
};

// The company's documents the reply drew on (reply.end sources), each once.
const sourceList = (list) => {
  const seen = new Set();
  const items = [];
  for (const s of Array.isArray(list) ? list : []) {
    const label = String((s && (s.title || s.url)) || '');
    if (label && !seen.has(label + s.url)) seen.add(label + s.url), items.push(h('li', null, link(s.url, label, 1)));
  }
  return items.length ? h('div', { class: 'src' }, t.sources, h('ul', null, ...items)) : null;
};

const finishReply = (row, m) => {
  row.$status = row.dataset.status = m.status;
  setText(row, m.text);
  row.$src?.remove();
  if ((row.$src = sourceList(m.sources))) row.$meta.before(row.$src);
  const note = m.status === 'partial' ? t.partial : m.status === 'failed' ? t.failed : '';
  const votable = row.$kind === 'bot' && m.id != null && m.status !== 'failed';
  setMeta(row, note, ...(votable ? feedbackButtons(row, m.id) : []));
};

const showMessage = (m, before) => {
  const known = rows.get(String(m.id));
  if (known) {
    if (known.$kind !== 'visitor' && (known.$text !== m.text || known.$status !== m.status)) finishReply(known, m);
    return known;
  }
  const role = ['visitor', 'bot', 'agent', 'system'].includes(m.role) ? m.role : 'bot';
  const row = addRow(role, '', m.id, before, m.agent);
  if (role === 'visitor') setText(row, m.text);
  else finishReply(row, m);
  return row;
};

const note = (text) => {
  announce(text);
  return addRow('system', text);
};
// A notice from the server (a person joined, left, none is free); an id: its stored copy.
const said = (f) => {
  typing(false);
  bumpUnread();
  const row = note(f.message || f.agent || '');
  if (f.id) bind(f.id, row), markId(f.id);
  return row;
};

const announce = (text) => {
  ui.live.textContent = '';
  setTimeout(() => (ui.live.textContent = text), 60); // a fresh change: a repeat is read again
};

// ms: hide by itself after that long (a person's typing has no end frame).
const typing = (on, ms) => {
  clearTimeout(typingTimer);
  if (ms) typingTimer = setTimeout(typing, ms, false);
  if (!ui || ui.typing.hidden === !on) return;
  const stick = nearBottom();
  ui.typing.hidden = !on;
  if (stick) toBottom();
};

const bumpUnread = () => {
  if (ui.panel.hidden) unread++;
  renderBadge();
};
const renderBadge = () => {
  ui.badge.textContent = unread > 9 ? '9+' : unread;
  ui.badge.hidden = !unread;
  ui.launch.setAttribute('aria-label', unread ? `${t.open} (${unread} ${t.unread})` : t.open);
};

const replyRow = (id) => rows.get(String(id)) || addRow('bot', '', id);

const markId = (id) => {
  if (typeof id === 'number' && id > lastId) lastId = id;
};

// --- Server frames ---
const on = {
  welcome(f) {
    visitor = f.visitor;
    store('localStorage', 'visitor', visitor);
    if (conversation !== null && f.conversation !== conversation) {
      // A new conversation (the old one was closed): start from its history.
      for (const row of rows.values()) row.remove();
      rows.clear();
      lastId = 0;
    }
    conversation = f.conversation;
    if (f.max_chars > 0) ui.input.maxLength = f.max_chars;
    // Never acknowledged: adopt from the history by client_id, else resend (same id).
    const lost = [...inflight.values()];
    inflight.clear();
    for (const m of f.messages || []) {
      const i = m.client_id && !rows.has(String(m.id)) ? lost.findIndex((x) => x.cid === m.client_id) : -1;
      if (i >= 0) bind(m.id, lost.splice(i, 1)[0].row);
    }
    queue.unshift(...lost);
    // History goes above anything typed while offline.
    const before = (queue[0] && queue[0].row) || ui.typing;
    if (f.greeting && greeted === null) greeted = addRow('bot', f.greeting, null, before);
    for (const m of f.messages || []) {
      showMessage(m, before);
      markId(m.id);
    }
    // Streaming when the socket dropped, not in the history: cut off.
    for (const [id, row] of rows) {
      if (row.$kind !== 'bot' || row.$status) continue;
      if (!row.$text) rows.delete(id), row.remove();
      else (row.$status = row.dataset.status = 'partial'), setMeta(row, t.partial);
    }
    delay = 0;
    setState('online');
    agent = f.status === 'with_agent' ? f.agent || t.agent : null;
    line(ui.wait);
    if (f.status === 'waiting_for_agent') send({ type: 'handoff' }); // answered with the position
    flush();
  },
  // What the visitor wrote in another tab.
  message(f) {
    showMessage(f);
    markId(f.id);
  },
  ack(f) {
    const item = inflight.get(f.client_id);
    if (!item) return;
    inflight.delete(f.client_id);
    bind(f.id, item.row);
    markId(f.id);
    if (!agent && !f.duplicate) typing(true); // being answered now
    flush();
  },
  'reply.start'(f) {
    replyRow(f.id);
  },
  'reply.delta'(f) {
    const row = replyRow(f.id);
    setText(row, row.$text + (f.text || ''));
    if (row.$text) typing(false);
  },
  'reply.end'(f) {
    typing(false);
    const row = replyRow(f.id);
    finishReply(row, f);
    markId(f.id);
    announce(row.$text.replace(/[*`]/g, ''));
    bumpUnread();
  },
  'feedback.saved'(f) {
    const row = rows.get(String(f.id));
    if (row) row.dataset.feedback = row.$meta.querySelector('[aria-pressed=true]')?.value || '';
    announce(t.thanks);
  },
  'handoff.waiting'(f) {
    typing(false);
    line(ui.wait, f.position ? t.wait.replace('{n}', f.position) : f.message);
    announce(ui.wait.textContent);
    bumpUnread();
  },
  'handoff.unavailable'(f) {
    const row = said(f);
    line(ui.wait);
    if (!f.ask_email) return;
    const input = h('input', { type: 'email', required: true, maxlength: 254, autocomplete: 'email', placeholder: t.email, 'aria-label': t.email });
    ui.mail?.remove();
    row.append((ui.mail = h('form', { class: 'mail', onsubmit: (e) => {
      e.preventDefault();
      send({ type: 'contact', email: input.value.trim() }) || note(t.offline);
    } }, input, h('button', { class: 'send' }, t.send))));
  },
  'contact.saved'() {
    ui.mail?.remove();
    note(t.saved);
  },
  'agent.joined'(f) {
    agent = f.agent || t.agent;
    line(ui.wait);
    said(f);
  },
  'agent.left'(f) {
    agent = null;
    said(f);
  },
  'agent.message'(f) {
    typing(false);
    showMessage({ status: 'complete', ...f, role: 'agent' });
    markId(f.id);
    announce((f.agent || t.agent) + ': ' + f.text);
    bumpUnread();
  },
  'agent.typing'() {
    typing(true, 4000);
  },
  error(f) {
    const item = f.client_id && inflight.get(f.client_id);
    // After a reply that fell back or was cut off, which says so itself.
    if (f.code === 'llm_unavailable' && !item) return;
    if (item) {
      inflight.delete(f.client_id);
      typing(false);
      item.row.classList.add('failed');
      setMeta(item.row, t.notSent + ' \u00b7 ', h('button', { class: 'retry', onclick: () => retry(item) }, t.retry));
    }
    if (f.code === 'empty') return;
    const text = ERRORS.includes(f.code) ? t[f.code] : t.generic;
    note(text.replace('{s}', Math.ceil(f.retry_after || 1)));
  },
};

// --- Sending ---
const flush = () => {
  while (state === 'online' && queue.length && inflight.size < UNACKED_MAX) {
    const item = queue.shift();
    if (!send({ type: 'message', text: item.text, client_id: item.cid })) return queue.unshift(item);
    inflight.set(item.cid, item);
    item.row.classList.remove('queued', 'failed');
    setMeta(item.row);
    if (!agent) typing(true);
  }
};

const retry = (item) => {
  queue.push(item);
  setMeta(item.row, t.queued);
  item.row.classList.remove('failed');
  item.row.classList.add('queued');
  flush();
};

const submit = (raw) => {
  const text = String(raw == null ? '' : raw).trim().slice(0, MAX_LEN);
  if (!text || state === 'refused') return false;
  if (queue.length >= QUEUE_MAX) {
    note(t.full);
    return false;
  }
  const row = addRow('visitor', text);
  const item = { cid: `${t0}-${++seq}`, text, row };
  queue.push(item);
  if (state !== 'online') {
    row.classList.add('queued');
    setMeta(row, t.queued);
    connect();
  }
  flush();
  return true;
};

// --- Panel ---
const toggle = (show, focus = true) => {
  if (ui.panel.hidden !== show) return;
  const hadFocus = ui.root.activeElement != null;
  ui.panel.hidden = !show;
  ui.wrap.classList.toggle('open', show);
  ui.launch.setAttribute('aria-expanded', show);
  ui.launchIcon.replaceWith((ui.launchIcon = icon(show ? CLOSE : CHAT)));
  store('sessionStorage', 'open', show ? '1' : null);
  if (!show) return hadFocus && ui.launch.focus();
  unread = 0;
  renderBadge();
  if (state === 'idle') connect();
  toBottom();
  if (focus) ui.input.focus();
};
const open = (focus) => toggle(true, focus);
const close = () => toggle(false);

const accentText = (probe) => {
  const [r, g, b] = (getComputedStyle(probe).color.match(/[\d.]+/g) || [0, 0, 0]).map(Number);
  const lum = (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255;
  return lum > 0.6 ? '#1f2328' : '#fff';
};

const mount = () => {
  const host = document.createElement('chatbot-widget');
  host.style.cssText = 'all:initial!important;display:block!important';
  const root = host.attachShadow({ mode: 'open' });
  if (root.adoptedStyleSheets && window.CSSStyleSheet && 'replaceSync' in CSSStyleSheet.prototype) {
    const sheet = new CSSStyleSheet();
    sheet.replaceSync(STYLES); // works under a strict style-src CSP
    root.adoptedStyleSheets = [sheet];
  } else root.append(h('style', null, STYLES));

  const color = opt.color && CSS.supports('color', opt.color) ? opt.color : '#2256c8';
  const input = h('textarea', { rows: 1, maxlength: MAX_LEN, placeholder: t.placeholder, 'aria-label': t.placeholder });
  const sendBtn = h('button', { type: 'submit', class: 'send', disabled: true }, t.send);
  const launchIcon = icon(CHAT);
  const badge = h('span', { class: 'badge', hidden: true, 'aria-hidden': 'true' });
  const launch = h('button', { class: 'launch', 'aria-expanded': 'false', 'aria-controls': 'cb-panel' }, launchIcon, badge);
  const status = h('div', { class: 'status', role: 'status', hidden: true });
  const wait = h('div', { class: 'wait', role: 'status', hidden: true });
  const typingRow = h('div', { class: 'row bot typing', hidden: true },
    h('div', { class: 'bubble' }, h('i'), h('i'), h('i'), h('span', { class: 'sr' }, t.typing)));
  const log = h('div', { class: 'log', role: 'log', 'aria-live': 'off', 'aria-label': t.log, tabindex: '0' }, typingRow);
  const live = h('div', { class: 'sr', 'aria-live': 'polite', 'aria-atomic': 'true' });
  const form = h('form', { onsubmit: (e) => {
    e.preventDefault();
    if (submit(input.value)) {
      input.value = '';
      input.dispatchEvent(new Event('input'));
    }
  } }, input, sendBtn);
  const human = h('button', { class: 'human', onclick: () => {
    if (!send({ type: 'handoff' })) note(t.offline);
  } }, t.human);
  const panel = h('div', { class: 'panel', id: 'cb-panel', role: 'dialog', 'aria-labelledby': 'cb-title', hidden: true },
    h('header', null, h('h2', { id: 'cb-title' }, opt.title || t.title), human,
      h('button', { class: 'x', 'aria-label': t.close, title: t.close, onclick: close }, icon(CLOSE))),
    status, wait, log, form);
  const wrap = h('div', { class: 'w' + (opt.position === 'left' ? ' left' : ''), lang: t === T.zh ? 'zh' : 'en' }, panel, launch, live);
  root.append(wrap);
  document.body.appendChild(host);

  wrap.style.setProperty('--a', color);
  launch.style.color = color;
  const onAccent = accentText(launch);
  wrap.style.setProperty('--at', onAccent);
  wrap.style.setProperty('--l', onAccent === '#fff' ? color : '#1f2328'); // accent as ink if dark
  launch.style.color = '';

  launch.addEventListener('click', () => toggle(panel.hidden));
  wrap.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && !panel.hidden) {
      e.stopPropagation();
      close();
      launch.focus();
    }
  });
  input.addEventListener('input', () => {
    sendBtn.disabled = !input.value.trim();
    input.style.height = 'auto';
    input.style.height = input.scrollHeight + 2 + 'px';
    // The person sees the visitor typing (at most every 2 s).
    if (agent && !sendBtn.disabled && Date.now() - typedAt > 2000 && send({ type: 'typing' })) typedAt = Date.now();
  });
  input.addEventListener('keydown', (e) => {
    // Enter sends, Shift+Enter is a new line; not while an IME is composing.
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
      e.preventDefault();
      form.requestSubmit ? form.requestSubmit() : form.dispatchEvent(new Event('submit', { cancelable: true }));
    }
  });

  ui = { host, root, wrap, panel, launch, launchIcon, badge, status, wait, log, typing: typingRow, live, input };
  renderBadge();
  setState(state);
  // Returning visitors connect at once (history, replies while away); new ones on first open.
  if (store('sessionStorage', 'open')) open(false); // restored: don't steal focus
  else if (visitor) connect();
};

const ready = (fn) => (...args) => (ui ? fn(...args) : (pending.push(() => fn(...args)), undefined));
const pending = [];
window.ChatbotWidget = Object.freeze({
  open: ready(() => open()),
  close: ready(close),
  toggle: ready(() => toggle(ui.panel.hidden)),
  send: ready(submit),
  version: '1.0',
});

const start = () => {
  mount();
  pending.splice(0).forEach((fn) => fn());
};
if (document.body) start();
else document.addEventListener('DOMContentLoaded', start);
})();

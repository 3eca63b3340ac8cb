/* The live console (/agent/live/, templates/agents/live.html): the agent websocket drawn as
 * a queue, the agent's own conversations, one transcript and a reply box. Plain JavaScript,
 * no dependencies. Everything from the server goes in as text (textContent, text nodes). */
(() => {
  'use strict';
  const config = JSON.parse(document.getElementById('live-config').textContent);
  const $ = (id) => document.getElementById(id);
  const WS_URL = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + config.ws;
  const PING_MS = config.ping_ms || 20000;
  const TYPING_EVERY_MS = 2000; // the server relays at most one typing frame per 2 s anyway
  const TYPING_SHOWN_MS = 4000;
  const ROLES = { visitor: 'Visitor', bot: 'Bot', agent: 'Agent', system: 'Notice' };

  const transcript = $('transcript');
  const reply = $('reply');

  // --- State ---
  let ws = null;
  let delay = 0;
  let retryTimer = 0;
  let lastSeen = 0;
  let stopped = false;
  let me = config.agent; // {id, name}
  let lists = { queue: [], mine: [] };
  let current = null; // the conversation on screen, as the last `conversation` frame had it
  let where = ''; // which list holds it: 'queue', 'mine' or ''
  let lastId = 0;
  const shown = new Map(); // message id -> its element
  const pending = new Map(); // client_id -> element of a message sent and not acknowledged
  let seq = 0;
  let typedAt = 0;
  let typingTimer = 0;

  const el = (tag, attrs, ...kids) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? '' : v);
    }
    for (const kid of kids) if (kid != null && kid !== '') node.append(kid); // strings: text nodes
    return node;
  };

  const status = (text, bad = false) => {
    const line = $('live-status');
    line.textContent = text;
    line.classList.toggle('error', bad);
  };

  const send = (frame) => {
    if (!ws || ws.readyState !== 1) return false;
    ws.send(JSON.stringify(frame));
    return true;
  };

  // --- Connection: backoff x1.3..x2 with jitter, at most 10 s; a 4000-range close is final ---
  const connect = () => {
    clearTimeout(retryTimer);
    if (ws || stopped) return;
    status(delay ? 'Connection lost. Reconnecting...' : 'Connecting...');
    const sock = new WebSocket(WS_URL);
    ws = sock;
    sock.onopen = () => {
      lastSeen = Date.now();
      send({ type: 'hello' });
    };
    sock.onmessage = (event) => {
      lastSeen = Date.now();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      const handler = frame && Object.hasOwn(on, frame.type) && on[frame.type];
      if (handler) handler(frame);
    };
    sock.onclose = (event) => {
      if (ws !== sock) return;
      ws = null;
      renderControls();
      for (const row of pending.values()) row.classList.add('failed');
      if (event.code >= 4000 && event.code < 5000) {
        stopped = true;
        status(`Disconnected (${event.reason || event.code}). Reload the page to try again.`, true);
      } else if (event.code === 1012) reconnectLater(50 + Math.random() * 450);
      else reconnectLater();
    };
  };

  // `soon` (1012: this server process is restarting, another one answers now) retries after
  // that many ms without growing the backoff, as the widget does.
  const reconnectLater = (soon) => {
    status('Connection lost. Reconnecting...', true);
    if (soon === undefined)
      delay = delay ? Math.min(10000, delay * (1.3 + Math.random() * 0.7)) : 700 + Math.random() * 600;
    retryTimer = setTimeout(connect, soon === undefined ? delay : soon);
  };
  const reconnectNow = () => ws || stopped || connect();
  window.addEventListener('online', reconnectNow);
  document.addEventListener('visibilitychange', () => document.hidden || reconnectNow());

  setInterval(() => {
    if (!ws || ws.readyState !== 1) return;
    if (Date.now() - lastSeen > 2.5 * PING_MS) {
      const dead = ws; // half-open: no close event would ever come
      ws = null;
      dead.close();
      reconnectLater();
    } else send({ type: 'ping' }); // also keeps this agent "online" for the visitors' widgets
  }, PING_MS);

  // --- Lists ---
  const ago = (iso) => {
    const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    if (!iso || Number.isNaN(s)) return '';
    if (s < 60) return `${s} s`;
    return s < 3600 ? `${Math.floor(s / 60)} min` : `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  };
  const visitorName = (c) => (c.visitor && (c.visitor.name || c.visitor.email)) || `Visitor #${c.id}`;

  const listItem = (c, action, position) => {
    const since = action === 'take' ? c.waiting_since : c.last_activity;
    const label = action === 'take' ? `#${position}, waiting ` : 'last activity ';
    return el('li', { 'data-conversation': c.id, class: current && current.id === c.id ? 'selected' : null },
      el('button', { type: 'button', onclick: () => pick(c.id, action), title: action === 'take' ? 'Take this conversation' : 'Open' },
        el('span', { class: 'who' }, el('strong', null, visitorName(c)), ` \u00b7 ${c.bot ? c.bot.name : ''}`),
        el('span', { class: 'when muted', 'data-since': since || '', 'data-label': label }, label + ago(since)),
        el('span', { class: 'last' }, c.last_message || '')));
  };

  const renderLists = (f) => {
    lists = { queue: f.queue || [], mine: f.mine || [] };
    $('queue').replaceChildren(...lists.queue.map((c, i) => listItem(c, 'take', i + 1)));
    $('mine').replaceChildren(...lists.mine.map((c) => listItem(c, 'open')));
    $('queue-count').textContent = lists.queue.length;
    $('mine-count').textContent = lists.mine.length;
    if (!current) return;
    // The conversation on screen moved (taken by someone else, handed back, wait expired):
    // ask for it again to learn its state.
    const now = lists.mine.some((c) => c.id === current.id) ? 'mine' : lists.queue.some((c) => c.id === current.id) ? 'queue' : '';
    if (now !== where) {
      where = now;
      reopen();
    }
  };

  setInterval(() => {
    for (const span of document.querySelectorAll('.convs .when[data-since]')) {
      span.textContent = span.dataset.label + ago(span.dataset.since);
    }
  }, 10000);

  const pick = (id, action) => {
    if (!send({ type: action, conversation: id })) status('Not connected: try again in a moment.', true);
  };
  const reopen = () => current && send({ type: 'open', conversation: current.id, ...(lastId ? { after: lastId } : {}) });

  // --- The conversation on screen ---
  const isMine = () =>
    Boolean(current && current.status === 'with_agent' &&
      (current.assigned_agent === me.name || lists.mine.some((c) => c.id === current.id)));

  const clock = (iso) => {
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? '' : d.toLocaleTimeString();
  };

  // The company's documents a bot reply drew on, each page once: links for http(s) URLs,
  // else their titles.
  const sourceList = (sources) => {
    const pages = new Map((sources || []).map((s) => [s.url || s.title, s]));
    return pages.size ? el('ul', { class: 'sources' }, ...[...pages.values()].map((s) => el('li', null,
      /^https?:\/\//i.test(s.url || '')
        ? el('a', { href: s.url, target: '_blank', rel: 'noopener noreferrer' }, s.title || s.url)
        : s.title || ''))) : null;
  };

  const messageRow = (m) => {
    const who = m.role === 'agent' ? m.agent || ROLES.agent : ROLES[m.role] || m.role;
    return el('article', { class: `msg ${m.role}` },
      el('header', null, el('strong', null, who), el('time', { datetime: m.created || null }, clock(m.created)),
        m.source && m.role === 'bot' ? el('span', { class: `badge ${m.source}` }, m.source) : null),
      el('div', { class: 'text' }, m.text || ''), sourceList(m.sources));
  };

  const nearBottom = () => transcript.scrollHeight - transcript.scrollTop - transcript.clientHeight < 80;

  const addMessage = (m) => {
    if (!m || (m.id != null && shown.has(m.id))) return;
    const stick = nearBottom();
    let row = null;
    if (m.role === 'agent') {
      // Sent before a reconnect and stored after all: the resync brings it back.
      for (const [cid, r] of pending) {
        if (r.dataset.text === m.text) {
          pending.delete(cid);
          row = r;
          r.classList.remove('pending', 'failed');
          break;
        }
      }
    }
    row = row || transcript.appendChild(messageRow(m));
    if (typeof m.id === 'number') {
      shown.set(m.id, row);
      row.dataset.id = m.id;
      lastId = Math.max(lastId, m.id);
    }
    if (stick) transcript.scrollTop = transcript.scrollHeight;
  };

  const infoRows = (c) => {
    const v = c.visitor || {};
    const page = /^https?:\/\//.test(v.page || '') ? el('a', { href: v.page, target: '_blank', rel: 'noopener noreferrer' }, v.page) : v.page;
    return [['Name', v.name], ['Email', v.email], ['Language', v.language], ['Page', page], ['Bot', c.bot && c.bot.name],
      ['Status', (c.status || '').replace(/_/g, ' ')], ['Agent', c.assigned_agent]]
      .flatMap(([k, value]) => [el('dt', null, k), el('dd', { class: 'wrap' }, value || '\u2014')]);
  };

  const renderSuggestions = (items) => {
    $('suggestions').replaceChildren(...(items || []).map((s) =>
      el('li', { 'data-entry': s.entry_id },
        el('strong', null, s.question), ' ',
        el('span', { class: 'muted' }, typeof s.score === 'number' ? s.score.toFixed(2) : ''),
        el('p', null, s.answer),
        el('button', { type: 'button', class: 'insert', onclick: () => insert(s.answer) }, 'Insert'))));
  };

  const insert = (text) => {
    reply.setRangeText(text || '', reply.selectionStart, reply.selectionEnd, 'end');
    reply.dispatchEvent(new Event('input'));
    reply.focus();
  };

  const showConversation = (c) => {
    if (!current || current.id !== c.id) {
      transcript.replaceChildren();
      shown.clear();
      pending.clear();
      lastId = 0;
      typingOff();
      reply.value = '';
    }
    current = c;
    // Where the lists should have it by now (they may lag behind: no second `open` then).
    where = c.status === 'waiting_for_agent' ? 'queue' : isMine() ? 'mine' : '';
    for (const m of c.messages || []) addMessage(m);
    $('conv-title').textContent = `${visitorName(c)} \u00b7 conversation #${c.id}`;
    const link = $('conv-link');
    link.href = config.transcript.replace('/0/', `/${c.id}/`);
    link.hidden = false;
    $('visitor-info').replaceChildren(...infoRows(c));
    if (c.suggestions) renderSuggestions(c.suggestions);
    for (const li of document.querySelectorAll('.convs li')) li.classList.toggle('selected', li.dataset.conversation === String(c.id));
    renderControls();
  };

  const renderControls = () => {
    const online = Boolean(ws && ws.readyState === 1);
    const s = current && current.status;
    const mine = isMine();
    $('take').disabled = !online || !(s === 'waiting_for_agent' || s === 'open');
    $('release').disabled = !online || !mine;
    $('close').disabled = !online || !(mine || s === 'waiting_for_agent');
    reply.disabled = !mine;
    reply.placeholder = mine ? 'Reply to the visitor. Enter sends, Shift+Enter starts a new line.' : 'Take the conversation to reply.';
    $('send').disabled = !online || !mine || !reply.value.trim();
  };

  const typingOff = () => {
    clearTimeout(typingTimer);
    $('visitor-typing').hidden = true;
  };
  const isCurrent = (id) => current && current.id === id;

  // --- Server frames ---
  const on = {
    welcome(f) {
      me = f.agent || me;
      delay = 0;
      status(`Connected as ${me.name}.`);
      renderLists(f);
      reopen(); // after a reconnect: what was missed in the conversation on screen
      renderControls();
    },
    'queue.update': renderLists,
    conversation(f) {
      if (f.conversation) showConversation(f.conversation);
    },
    'visitor.message'(f) {
      if (!isCurrent(f.conversation)) return;
      typingOff();
      addMessage(f.message);
      if (f.suggestions) renderSuggestions(f.suggestions);
      else reopen(); // fresh knowledge-base suggestions for this question
    },
    'visitor.typing'(f) {
      if (!isCurrent(f.conversation)) return;
      $('visitor-typing').hidden = false;
      clearTimeout(typingTimer);
      typingTimer = setTimeout(typingOff, TYPING_SHOWN_MS);
    },
    // What this agent wrote in another tab.
    'agent.message'(f) {
      if (isCurrent(f.conversation)) addMessage({ ...f, role: 'agent' });
    },
    ack(f) {
      const row = pending.get(f.client_id);
      if (!row) return;
      pending.delete(f.client_id);
      row.classList.remove('pending', 'failed');
      if (shown.has(f.id)) return row.remove(); // a resync drew it already
      shown.set(f.id, row);
      row.dataset.id = f.id;
      lastId = Math.max(lastId, f.id);
    },
    error(f) {
      status(`${f.message || 'Error'} (${f.code})`, true);
      const row = f.client_id && pending.get(f.client_id);
      if (row) {
        pending.delete(f.client_id);
        row.classList.add('failed');
      }
    },
    pong() {},
  };

  // --- Agent actions ---
  const act = (type) => {
    if (!current || !send({ type, conversation: current.id })) return;
    if (type !== 'take') reopen(); // answered in order: the state after the action
  };
  for (const type of ['take', 'release', 'close']) $(type).addEventListener('click', () => act(type));

  const sendReply = () => {
    const text = reply.value.trim();
    if (!text || !isMine()) return;
    const client_id = `c${Date.now().toString(36)}-${++seq}`;
    if (!send({ type: 'message', conversation: current.id, text, client_id })) {
      status('Not connected: the message was not sent.', true);
      return;
    }
    const row = messageRow({ role: 'agent', text, agent: me.name, created: new Date().toISOString() });
    row.classList.add('pending');
    row.dataset.text = text;
    pending.set(client_id, row);
    transcript.appendChild(row);
    transcript.scrollTop = transcript.scrollHeight;
    reply.value = '';
    renderControls();
  };

  $('reply-form').addEventListener('submit', (e) => {
    e.preventDefault();
    sendReply();
  });
  reply.addEventListener('keydown', (e) => {
    // Enter sends, Shift+Enter is a new line; never while an IME is composing.
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
      e.preventDefault();
      sendReply();
    }
  });
  reply.addEventListener('input', () => {
    renderControls();
    if (isMine() && reply.value.trim() && Date.now() - typedAt > TYPING_EVERY_MS) {
      typedAt = Date.now();
      send({ type: 'typing', conversation: current.id });
    }
  });

  connect();
})();

// The chat: one WebSocket per open session (`/v1/chat/ws`), streamed text
// deltas appended as they come, tool calls as cards, history from
// `GET /v1/sessions/{id}`.

import { api, wsUrl, enc } from './api.js';
import { h, renderText, pretty, fmtInt, fmtCost } from './dom.js';

const MAX_OUTPUT_CHARS = 20000;

/** A short, one-line summary of a tool's input for the card header. */
function briefInput(input) {
  if (input === null || input === undefined) return '';
  if (typeof input === 'string') return input;
  for (const k of ['command', 'path', 'pattern', 'file', 'query']) {
    if (typeof input[k] === 'string') return input[k];
  }
  const s = JSON.stringify(input);
  return s === '{}' ? '' : s;
}

function clip(s) {
  s = typeof s === 'string' ? s : pretty(s);
  return s.length > MAX_OUTPUT_CHARS
    ? `${s.slice(0, MAX_OUTPUT_CHARS)}\n… (${fmtInt(s.length - MAX_OUTPUT_CHARS)} more characters)`
    : s;
}

/** A tool call card: name and input while it runs, output when done. */
function toolCard(id, name, input, { open = true } = {}) {
  const status = h('span', { class: 'tool-status' }, 'running…');
  const out = h('pre', { class: 'tool-output', hidden: true });
  const el = h('details', { class: 'tool running', open, dataset: { toolId: id || '' } },
    h('summary', {},
      h('span', { class: 'tool-dot', 'aria-hidden': 'true' }),
      h('span', { class: 'tool-name' }, name || 'tool'),
      h('span', { class: 'tool-brief' }, briefInput(input)),
      status),
    h('div', { class: 'tool-body' },
      h('div', { class: 'tool-label' }, 'Input'),
      h('pre', { class: 'tool-input' }, clip(pretty(input ?? {}))),
      h('div', { class: 'tool-label', hidden: true }, 'Output'),
      out));
  return {
    el,
    finish(output, isError) {
      el.classList.remove('running');
      el.classList.add(isError ? 'failed' : 'ok');
      status.textContent = isError ? 'error' : 'done';
      out.previousElementSibling.hidden = false;
      out.hidden = false;
      out.textContent = clip(output ?? '');
      if (isError) out.classList.add('is-error');
    },
    interrupt(why) {
      if (!el.classList.contains('running')) return;
      el.classList.remove('running');
      el.classList.add('failed');
      status.textContent = why;
    },
  };
}

export class Chat {
  /**
   * els: {messages, empty, title, status, prompt, send, stop, form}
   * hooks: {onSession(session), onTurnEnd(), onToolStart()}
   */
  constructor(els, hooks) {
    this.els = els;
    this.hooks = hooks;
    this.ws = null;
    this.sessionId = null;
    this.renderedFor = null; // session whose history is on screen
    this.turn = null;
    this.outbox = [];
    this.retry = 0;
    this.retryTimer = null;
    this.loadSeq = 0;

    els.form.addEventListener('submit', (e) => { e.preventDefault(); this.submit(); });
    els.prompt.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); this.submit(); }
      else if (e.key === 'Escape' && this.turn) { e.preventDefault(); this.stop(); }
    });
    els.prompt.addEventListener('input', () => this.autosize());
    els.stop.addEventListener('click', () => this.stop());
  }

  autosize() {
    const p = this.els.prompt;
    p.style.height = 'auto';
    p.style.height = `${Math.min(p.scrollHeight, 240)}px`;
  }

  get running() { return this.turn !== null; }

  setStatus(text, kind = '') {
    this.els.status.textContent = text;
    this.els.status.dataset.kind = kind;
  }

  updateButtons() {
    this.els.stop.hidden = !this.running;
    this.els.send.disabled = this.running;
  }

  /** Open a session (or, with null, the server's latest or a new one). */
  async open(sessionId) {
    this.close();
    this.sessionId = sessionId;
    if (sessionId) await this.loadHistory(sessionId);
    else this.clear();
    this.connect();
  }

  close() {
    clearTimeout(this.retryTimer);
    if (this.ws) {
      this.ws.onclose = this.ws.onmessage = this.ws.onerror = this.ws.onopen = null;
      this.ws.close(1000);
      this.ws = null;
    }
    this.endTurn();
    this.outbox = [];
  }

  connect() {
    const ws = new WebSocket(wsUrl('/v1/chat/ws', { session: this.sessionId }));
    this.ws = ws;
    this.setStatus('connecting…', 'busy');
    ws.onopen = () => {
      this.retry = 0;
      this.setStatus('', 'ok');
      for (const m of this.outbox.splice(0)) ws.send(JSON.stringify(m));
    };
    ws.onmessage = (ev) => {
      let m;
      try { m = JSON.parse(ev.data); } catch { return; }
      this.handle(m);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.hooks.onDisconnect?.();
      if (this.turn) {
        this.turnError('The connection was lost while the agent was working. Its work is saved: reload the session to see it.');
      }
      const delay = Math.min(30000, 500 * 2 ** this.retry++);
      this.setStatus(`disconnected${ev.code === 1008 ? ' (not allowed)' : ''}; retrying in ${Math.round(delay / 1000) || 1}s`, 'error');
      this.retryTimer = setTimeout(() => this.connect(), delay);
    };
  }

  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
    else this.outbox.push(msg);
  }

  submit() {
    const text = this.els.prompt.value.trim();
    if (!text) return;
    if (text === '/stop') { this.els.prompt.value = ''; this.stop(); return; }
    if (text === '/new') { this.els.prompt.value = ''; this.hooks.onNewChat?.(); return; }
    if (this.running) return;
    this.els.prompt.value = '';
    this.autosize();
    this.els.empty.hidden = true;
    this.append(h('article', { class: 'msg user' }, h('div', { class: 'bubble' }, text)));
    this.startTurn();
    this.send({ type: 'message', text });
  }

  stop() {
    if (!this.running) return;
    this.send({ type: 'stop' });
    this.els.stop.disabled = true;
    this.els.stop.textContent = 'Stopping…';
  }

  // ---- rendering -------------------------------------------------------

  clear() {
    this.els.messages.replaceChildren(this.els.empty);
    this.els.empty.hidden = false;
    this.turn = null;
    this.updateButtons();
  }

  nearBottom() {
    const m = this.els.messages;
    return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
  }

  append(el) {
    const stick = this.nearBottom();
    this.els.messages.append(el);
    if (stick) this.scrollDown();
  }

  scrollDown() {
    const m = this.els.messages;
    m.scrollTop = m.scrollHeight;
  }

  assistantArticle() {
    const body = h('div', { class: 'msg-body' });
    const meta = h('div', { class: 'msg-meta' });
    const el = h('article', { class: 'msg assistant' }, h('div', { class: 'avatar', 'aria-hidden': 'true' }), h('div', { class: 'msg-main' }, body, meta));
    return { el, body, meta };
  }

  startTurn() {
    const a = this.assistantArticle();
    a.el.classList.add('streaming');
    a.el.setAttribute('aria-busy', 'true');
    this.turn = { ...a, text: null, textBuf: '', tools: new Map(), usage: null };
    this.append(a.el);
    this.els.stop.disabled = false;
    this.els.stop.textContent = 'Stop';
    this.updateButtons();
  }

  /** Close the current streamed text segment, rendering code blocks. */
  flushText() {
    const t = this.turn;
    if (t && t.text) { renderText(t.text, t.textBuf); t.text = null; t.textBuf = ''; }
  }

  endTurn() {
    const t = this.turn;
    if (!t) return;
    this.flushText();
    for (const card of t.tools.values()) card.interrupt('interrupted');
    t.el.classList.remove('streaming');
    t.el.removeAttribute('aria-busy');
    if (!t.body.childElementCount) t.body.append(h('p', { class: 'muted small' }, '(no answer)'));
    this.turn = null;
    this.updateButtons();
  }

  turnError(message) {
    const box = h('div', { class: 'chat-error', role: 'alert' }, message);
    if (this.turn) { this.flushText(); this.turn.body.append(box); this.endTurn(); }
    else this.append(h('article', { class: 'msg assistant' }, h('div', { class: 'avatar', 'aria-hidden': 'true' }), h('div', { class: 'msg-main' }, box)));
    this.scrollDown();
  }

  ensureTurn() {
    if (!this.turn) { this.els.empty.hidden = true; this.startTurn(); }
    return this.turn;
  }

  handle(m) {
    const stick = this.nearBottom();
    switch (m.type) {
      case 'session': {
        const changed = m.id !== this.sessionId;
        this.sessionId = m.id;
        this.els.title.textContent = m.title || 'New chat';
        if (changed || this.renderedFor !== m.id) {
          // A session other than the one on screen (first connect, or `new`).
          this.loadHistory(m.id);
        }
        this.hooks.onSession?.({ id: m.id, title: m.title });
        break;
      }
      case 'text_delta': {
        const t = this.ensureTurn();
        if (!t.text) { t.text = h('div', { class: 'text' }); t.body.append(t.text); }
        t.textBuf += m.text;
        t.text.append(m.text);
        break;
      }
      case 'tool_start': {
        const t = this.ensureTurn();
        this.flushText();
        const card = toolCard(m.id, m.name, m.input);
        t.tools.set(m.id, card);
        t.body.append(card.el);
        this.hooks.onToolStart?.(m);
        break;
      }
      case 'tool_end': {
        const card = this.turn?.tools.get(m.id);
        if (card) { card.finish(m.output, m.is_error); this.turn.tools.delete(m.id); }
        break;
      }
      case 'usage':
        if (this.turn) this.turn.usage = m;
        break;
      case 'compacted':
        this.append(h('div', { class: 'notice-line' }, 'Earlier messages were summarized to keep the conversation within the model\'s context.'));
        break;
      case 'done': {
        const t = this.turn;
        if (t) {
          const u = m.usage || t.usage || {};
          const bits = [];
          if (m.stopped === 'cancelled') bits.push('Stopped.');
          else if (m.stopped === 'step_limit') bits.push('Stopped: the step limit was reached.');
          if (u.input_tokens !== undefined) bits.push(`${fmtInt(u.input_tokens)} in · ${fmtInt(u.output_tokens)} out tokens`);
          if (u.cache_read_tokens) bits.push(`${fmtInt(u.cache_read_tokens)} cached`);
          if (m.cost_usd !== undefined && m.cost_usd !== null) bits.push(fmtCost(m.cost_usd));
          t.meta.textContent = bits.join(' · ');
          if (m.stopped) t.meta.classList.add('stopped');
          this.endTurn();
        }
        this.hooks.onTurnEnd?.();
        break;
      }
      case 'error':
        this.turnError(m.message || 'The agent failed.');
        this.hooks.onTurnEnd?.();
        break;
      default:
        break;
    }
    if (stick) this.scrollDown();
  }

  /** Render a stored session: text blocks, and tool_use/tool_result pairs. */
  async loadHistory(id) {
    const seq = ++this.loadSeq;
    let data;
    try {
      data = await api(`/v1/sessions/${enc(id)}`);
    } catch (e) {
      if (seq !== this.loadSeq) return;
      this.clear();
      this.turnError(`Could not load this session: ${e.message}`);
      return;
    }
    if (seq !== this.loadSeq) return;
    // A turn streaming right now belongs to the live socket; keep it.
    const live = this.turn;
    this.els.messages.replaceChildren(this.els.empty);
    this.renderedFor = id;
    this.els.title.textContent = data.session?.title || 'New chat';
    const cards = new Map();
    let current = null; // assistant article being filled
    for (const msg of data.messages || []) {
      const blocks = Array.isArray(msg.content) ? msg.content : [{ type: 'text', text: String(msg.content ?? '') }];
      const old = msg.summarized_by ? ' summarized' : '';
      if (msg.role === 'user') {
        const texts = blocks.filter((b) => b.type === 'text').map((b) => b.text).join('\n');
        for (const b of blocks) {
          if (b.type === 'tool_result') cards.get(b.tool_use_id)?.finish(typeof b.content === 'string' ? b.content : pretty(b.content), b.is_error);
        }
        if (texts.trim()) {
          current = null;
          this.els.messages.append(h('article', { class: `msg user${old}`, title: old ? 'summarized' : undefined }, h('div', { class: 'bubble' }, texts)));
        }
      } else {
        if (!current) {
          current = this.assistantArticle();
          if (old) current.el.classList.add('summarized');
          this.els.messages.append(current.el);
        }
        for (const b of blocks) {
          if (b.type === 'text' && b.text) {
            const d = h('div', { class: 'text' });
            renderText(d, b.text);
            current.body.append(d);
          } else if (b.type === 'tool_use') {
            const card = toolCard(b.id, b.name, b.input, { open: false });
            cards.set(b.id, card);
            current.body.append(card.el);
          }
        }
      }
    }
    for (const c of cards.values()) c.interrupt('no result');
    const any = (data.messages || []).length > 0;
    this.els.empty.hidden = any;
    if (live) { this.els.empty.hidden = true; this.els.messages.append(live.el); }
    this.scrollDown();
  }
}

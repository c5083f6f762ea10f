// A live terminal on the sandbox's persistent PTY session "web"
// (`/v1/sandboxes/NAME/console/ws`): binary frames carry the terminal's
// bytes both ways, a text frame {"type":"resize"} follows every resize.
// xterm.js is loaded on first use.

import { wsUrl, enc, api } from './api.js';

const SESSION = 'web';
let xtermLoaded = null;

/**
 * xterm.js creates <style> elements for its layout and colours. The page's
 * Content-Security-Policy only admits inline styles carrying the nonce of
 * this response (meta csp-nonce), so every <style> created from here on
 * gets it; nothing else on the page creates <style> elements.
 */
function installStyleNonce() {
  const nonce = document.querySelector('meta[name="csp-nonce"]')?.content;
  if (!nonce || Document.prototype.createElement.__ironclawNonce) return;
  const orig = Document.prototype.createElement;
  const patched = function createElement(tag, opts) {
    const el = orig.call(this, tag, opts);
    if (String(tag).toLowerCase() === 'style') el.nonce = nonce;
    return el;
  };
  patched.__ironclawNonce = true;
  Document.prototype.createElement = patched;
}

function loadXterm() {
  if (!xtermLoaded) {
    installStyleNonce(); // xterm.css itself is linked from index.html
    xtermLoaded = Promise.all([import('/assets/vendor/xterm.mjs'), import('/assets/vendor/addon-fit.mjs')]);
  }
  return xtermLoaded;
}

const THEME = {
  background: '#0f1115', foreground: '#d8dee9', cursor: '#f0b429', selectionBackground: '#3b4252',
  black: '#1d2027', red: '#e06c75', green: '#98c379', yellow: '#e5c07b', blue: '#61afef',
  magenta: '#c678dd', cyan: '#56b6c2', white: '#d8dee9', brightBlack: '#5c6370',
};

export class Terminal {
  /** els: {container, status, reconnect}; hooks: {onError(e)} */
  constructor(els, hooks = {}) {
    this.els = els;
    this.hooks = hooks;
    this.sandbox = null;
    this.term = null;
    this.fit = null;
    this.ws = null;
    this.visible = false;
    this.exited = false;
    this.encoder = new TextEncoder();
    els.reconnect.addEventListener('click', () => this.connect());
    this.resizeObs = new ResizeObserver(() => this.refit());
    this.resizeObs.observe(els.container);
  }

  setStatus(text, kind = '') {
    this.els.status.textContent = text;
    this.els.status.dataset.kind = kind;
  }

  setSandbox(name) {
    if (name === this.sandbox) return;
    this.sandbox = name;
    this.disconnect();
    this.term?.reset();
    if (this.visible && name) this.connect();
  }

  /** The Terminal tab was shown or hidden. */
  async show(visible) {
    this.visible = visible;
    if (!visible || !this.sandbox) return;
    await this.ensureTerm();
    this.refit();
    if (!this.ws) this.connect();
    this.term.focus();
  }

  async ensureTerm() {
    if (this.term) return;
    this.setStatus('loading terminal…');
    const [{ Terminal: XTerm }, { FitAddon }] = await loadXterm();
    if (this.term) return;
    this.term = new XTerm({
      cursorBlink: true,
      fontFamily: 'ui-monospace, "DejaVu Sans Mono", "Liberation Mono", Menlo, monospace',
      fontSize: 13,
      scrollback: 5000,
      theme: THEME,
    });
    this.fit = new FitAddon();
    this.term.loadAddon(this.fit);
    this.term.open(this.els.container);
    this.term.onData((d) => {
      if (this.exited && d === '\r') { this.connect(); return; }
      this.sendBytes(this.encoder.encode(d));
    });
    this.term.onBinary((d) => this.sendBytes(Uint8Array.from(d, (c) => c.charCodeAt(0) & 0xff)));
    this.term.onResize(({ rows, cols }) => {
      if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ type: 'resize', rows, cols }));
    });
  }

  refit() {
    if (!this.fit || !this.visible || !this.els.container.clientWidth) return;
    cancelAnimationFrame(this.fitFrame);
    this.fitFrame = requestAnimationFrame(() => { try { this.fit.fit(); } catch { /* not laid out */ } });
  }

  sendBytes(bytes) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(bytes);
  }

  disconnect() {
    if (this.ws) {
      this.ws.onclose = this.ws.onmessage = this.ws.onopen = null;
      this.ws.close(1000);
      this.ws = null;
    }
  }

  async connect() {
    if (!this.sandbox) return;
    await this.ensureTerm();
    this.disconnect();
    this.exited = false;
    try { this.fit.fit(); } catch { /* hidden */ }
    // The server replays the session's recent output on attach.
    this.term.reset();
    const { rows, cols } = this.term;
    const ws = new WebSocket(wsUrl(`/v1/sandboxes/${enc(this.sandbox)}/console/ws`, { session: SESSION, rows, cols }));
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    this.setStatus(`connecting to ${this.sandbox}…`, 'busy');
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.setStatus(`${this.sandbox} · session “${SESSION}” · ${this.term.cols}×${this.term.rows}`, 'ok');
      this.term.focus();
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data !== 'string') { this.term.write(new Uint8Array(ev.data)); return; }
      let m;
      try { m = JSON.parse(ev.data); } catch { return; }
      if (m.type === 'exit') {
        this.exited = true;
        this.setStatus(`the shell exited (code ${m.exit_code ?? '?'}); press Enter for a new one`);
      } else if (m.type === 'error') {
        this.setStatus(m.message || 'terminal error', 'error');
      }
    };
    ws.onclose = async () => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.exited) return;
      if (opened) { this.setStatus('disconnected; the session keeps running. Reconnect to attach again.', 'error'); return; }
      // The upgrade was refused: ask the API why (stopped sandbox, no access...).
      try {
        const sb = await api(`/v1/sandboxes/${enc(this.sandbox)}`);
        this.setStatus(sb.state === 'running' ? 'could not attach to the terminal' : `the sandbox is ${sb.state}`, 'error');
        this.hooks.onState?.(sb);
      } catch (e) {
        this.setStatus(`could not attach: ${e.message}`, 'error');
      }
    };
  }
}

// IronClaw web UI: login, sessions, chat and the sandbox panel.

import { api, enc, getToken, setToken, clearToken, setUnauthorizedHandler } from './api.js';
import { h, $, relTime, fmtCost } from './dom.js';
import { Chat } from './chat.js';
import { Files } from './files.js';
import { Terminal } from './terminal.js';
import { Tasks } from './tasks.js';

const state = { me: null, sessions: [], sandbox: null, started: false };

// ---- login -----------------------------------------------------------------

function showLogin(message = '', { keep = false } = {}) {
  $('#app').hidden = true;
  $('#login').hidden = false;
  $('#login-error').textContent = message;
  const input = $('#token-input');
  if (!keep) input.value = '';
  input.setAttribute('aria-invalid', String(!!message));
  input.focus();
  if (keep) input.select();
}

async function login(token, { silent = false } = {}) {
  const err = $('#login-error');
  const btn = $('#login-button');
  err.textContent = '';
  if (!token) { err.textContent = 'Paste your token first.'; return; }
  btn.disabled = true;
  btn.textContent = 'Signing in…';
  try {
    const me = await api('/v1/me', { token });
    setToken(token);
    await startApp(me);
  } catch (e) {
    if (e.status === 401) {
      if (silent) clearToken();
      showLogin(silent
        ? 'Your saved token is no longer valid. Sign in again.'
        : 'That token was not accepted (missing or invalid token). Check that you pasted all of it.', { keep: !silent });
    } else {
      showLogin(e.message || String(e), { keep: !silent });
    }
  } finally {
    btn.disabled = false;
    btn.textContent = 'Sign in';
  }
}

function logout(message = '') {
  clearToken();
  chat?.close();
  terminal?.setSandbox(null);
  files?.setSandbox(null);
  state.me = null;
  state.sandbox = null;
  showLogin(message);
}

// ---- app -------------------------------------------------------------------

let chat; let files; let terminal; let tasks;

function renderMe(me) {
  $('#me-name').textContent = me.user + (me.admin ? ' (admin)' : '');
  const u = me.usage || {};
  $('#me-usage').textContent = u.turns !== undefined ? `${u.turns} turn${u.turns === 1 ? '' : 's'} · ${fmtCost(u.cost_usd)}` : '';
}

async function refreshMe() {
  try {
    const me = await api('/v1/me');
    state.me = me;
    renderMe(me);
    setSandbox(me.sandbox ?? null);
  } catch { /* keep what we show */ }
}

function renderSessions() {
  const list = $('#session-list');
  const current = chat?.sessionId;
  list.replaceChildren(...state.sessions.map((s) => {
    const title = s.title || 'New chat';
    return h('li', { class: 'session' + (s.id === current ? ' current' : '') },
      h('button', {
        type: 'button', class: 'session-open', 'aria-current': s.id === current ? 'page' : undefined,
        onclick: () => openSession(s.id),
      },
      h('span', { class: 'session-title' }, title),
      h('span', { class: 'session-meta' }, `${relTime(s.updated_at || s.created_at)}${s.messages !== undefined ? ` · ${s.messages} msg` : ''}`)),
      h('button', {
        type: 'button', class: 'ghost small session-del', 'aria-label': `Delete “${title}”`, title: 'Delete',
        onclick: () => deleteSession(s),
      }, '✕'));
  }));
  $('#sessions-empty').hidden = state.sessions.length > 0;
  const cur = state.sessions.find((s) => s.id === current);
  if (cur) {
    $('#chat-title').textContent = cur.title || 'New chat';
    document.title = cur.title ? `${cur.title} · IronClaw` : 'IronClaw';
  }
}

async function refreshSessions() {
  try {
    const data = await api('/v1/sessions');
    state.sessions = data.sessions || [];
  } catch (e) {
    if (e.status !== 401) $('#sessions-empty').textContent = `Could not load sessions: ${e.message}`;
    state.sessions = [];
  }
  renderSessions();
}

async function openSession(id) {
  if (chat.sessionId === id && chat.ws) return;
  await chat.open(id);
  renderSessions();
  $('#prompt').focus();
}

async function newChat() {
  try {
    const s = await api('/v1/sessions', { method: 'POST', body: {} });
    await chat.open(s.id);
    await refreshSessions();
  } catch (e) {
    chat.turnError(`Could not start a new chat: ${e.message}`);
  }
  $('#prompt').focus();
}

async function deleteSession(s) {
  if (!confirm(`Delete the chat “${s.title || 'New chat'}”? This cannot be undone.`)) return;
  try {
    await api(`/v1/sessions/${enc(s.id)}`, { method: 'DELETE' });
  } catch (e) {
    if (e.status !== 404) { alert(`Could not delete: ${e.message}`); return; }
  }
  const wasCurrent = chat.sessionId === s.id;
  await refreshSessions();
  if (wasCurrent) await chat.open(state.sessions[0]?.id ?? null);
  renderSessions();
}

// ---- sandbox panel -----------------------------------------------------------

function showSandboxState(sb) {
  const badge = $('#sandbox-state');
  badge.hidden = !sb;
  if (!sb) return;
  badge.textContent = sb.state;
  badge.dataset.state = sb.state;
  $('#sandbox-stopped').hidden = sb.state === 'running' || sb.state === 'creating';
  $('#sandbox-stopped span').textContent = `The sandbox is ${sb.state}${sb.state_reason ? ` (${sb.state_reason})` : ''}.`;
}

async function refreshSandboxState() {
  if (!state.sandbox) return null;
  try {
    const sb = await api(`/v1/sandboxes/${enc(state.sandbox)}`);
    showSandboxState(sb);
    return sb;
  } catch (e) {
    if (e.status === 404) showSandboxState({ state: 'missing', state_reason: 'it is created again with your next message' });
    return null;
  }
}

async function setSandbox(name) {
  if (name === state.sandbox) return;
  state.sandbox = name;
  $('#sandbox-name').textContent = name || '';
  $('#sandbox-none').hidden = !!name;
  $('#sandbox').classList.toggle('no-sandbox', !name);
  showSandboxState(null);
  $('#sandbox-stopped').hidden = true;
  files.setSandbox(name);
  terminal.setSandbox(name);
  if (!name) return;
  const sb = await refreshSandboxState();
  if (sb && sb.state === 'running' && selectedTab() === 'files') files.open('/root');
}

const TABS = ['files', 'terminal', 'tasks'];

function selectedTab() {
  return TABS.find((t) => $(`#tab-${t}`).getAttribute('aria-selected') === 'true') ?? 'files';
}

function selectTab(which, focus = false) {
  for (const t of TABS) {
    const tab = $(`#tab-${t}`);
    const on = t === which;
    tab.setAttribute('aria-selected', String(on));
    tab.tabIndex = on ? 0 : -1;
    $(`#panel-${t}`).hidden = !on;
    if (on && focus) tab.focus();
  }
  terminal.show(which === 'terminal');
  if (which === 'files' && state.sandbox && !files.els.list.childElementCount) files.open(files.path);
  if (which === 'tasks') tasks.refresh();
}

// ---- start -------------------------------------------------------------------

async function startApp(me) {
  state.me = me;
  $('#login').hidden = true;
  $('#app').hidden = false;
  renderMe(me);
  if (!state.started) {
    state.started = true;
    wire();
  }
  state.sandbox = undefined;
  await setSandbox(me.sandbox ?? null);
  await refreshSessions();
  await chat.open(state.sessions[0]?.id ?? null);
  renderSessions();
  $('#prompt').focus();
}

function wire() {
  chat = new Chat({
    messages: $('#messages'), empty: $('#chat-empty'), title: $('#chat-title'), status: $('#conn-status'),
    prompt: $('#prompt'), send: $('#send'), stop: $('#stop'), form: $('#composer'),
  }, {
    onSession: (s) => {
      if (!state.sessions.some((x) => x.id === s.id)) refreshSessions();
      else renderSessions();
    },
    onToolStart: () => { if (!state.sandbox) refreshMe(); },
    onTurnEnd: () => { refreshSessions(); refreshMe(); refreshSandboxState(); if (selectedTab() === 'files') files.open(files.path); if (selectedTab() === 'tasks') tasks.refresh(); },
    onNewChat: () => newChat(),
    // A refused or dropped socket: a revoked token signs out (via the 401).
    onDisconnect: () => refreshMe(),
  });
  files = new Files({
    list: $('#files-list'), crumbs: $('#files-crumbs'), error: $('#files-error'), up: $('#files-up'),
    refresh: $('#files-refresh'), view: $('#file-view'), viewName: $('#file-view-name'),
    viewBody: $('#file-view-body'), download: $('#file-download'), close: $('#file-close'),
  }, { onError: (e) => { if (e.status === 409) refreshSandboxState(); } });
  tasks = new Tasks({ list: $('#tasks-list'), error: $('#tasks-error'), refresh: $('#tasks-refresh'), runs: $('#task-runs') });
  terminal = new Terminal({ container: $('#terminal'), status: $('#term-status'), reconnect: $('#term-reconnect') },
    { onState: showSandboxState });

  $('#new-chat').addEventListener('click', newChat);
  $('#logout').addEventListener('click', () => logout());
  $('#sandbox-start').addEventListener('click', async () => {
    const btn = $('#sandbox-start');
    btn.disabled = true;
    try {
      const sb = await api(`/v1/sandboxes/${enc(state.sandbox)}/start`, { method: 'POST' });
      showSandboxState(sb);
      if (selectedTab() === 'terminal') terminal.connect(); else files.open(files.path);
    } catch (e) {
      $('#sandbox-stopped span').textContent = `Could not start it: ${e.message}`;
    } finally { btn.disabled = false; }
  });

  const tabs = TABS;
  for (const t of tabs) {
    const tab = $(`#tab-${t}`);
    tab.addEventListener('click', () => selectTab(t));
    tab.addEventListener('keydown', (e) => {
      const i = tabs.indexOf(t);
      if (e.key === 'ArrowRight' || e.key === 'ArrowLeft') {
        e.preventDefault();
        selectTab(tabs[(i + (e.key === 'ArrowRight' ? 1 : tabs.length - 1)) % tabs.length], true);
      } else if (e.key === 'Home' || e.key === 'End') {
        e.preventDefault();
        selectTab(e.key === 'Home' ? tabs[0] : tabs[tabs.length - 1], true);
      }
    });
  }
}

setUnauthorizedHandler(() => logout('Your token is no longer accepted. Sign in again.'));

$('#login-form').addEventListener('submit', (e) => {
  e.preventDefault();
  login($('#token-input').value.trim());
});

// `/#token=...` (as printed by scripts/up.sh) signs in and leaves the URL clean.
const hashToken = new URLSearchParams(location.hash.slice(1)).get('token');
if (hashToken) {
  setToken(hashToken);
  history.replaceState(null, '', location.pathname + location.search);
}
if (getToken()) login(getToken(), { silent: true });
else showLogin();
